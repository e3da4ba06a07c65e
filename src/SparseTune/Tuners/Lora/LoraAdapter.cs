using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Tuners.Lora;

/// <summary>
/// LoRA on one linear layer. The frozen base weight W (out, in) stays in the layer; the adapter adds a
/// low-rank path:
/// <code>
///   x ──────────── W, b ──────────────┐
///   │                                 + ──► y
///   └─ dropout ─► A (r, in) ─► B (out, r) ─► · alpha/r ┘
/// </code>
/// A starts kaiming-uniform (a = √5, as nn.Linear and PEFT's init_lora_weights=True) and B at zero, so an
/// untrained adapter leaves the layer's output unchanged. Once merged (W += B·A·alpha/r) the forward pass is the
/// plain linear layer until <see cref="Unmerge"/>.
/// </summary>
public sealed class LoraAdapter : ILinearAdapter
{
    public LoraAdapter(TunableLinear layer, int rank, double alpha, double dropout)
    {
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, "LoRA rank must be at least 1");
        if (!(dropout >= 0 && dropout < 1)) throw new ArgumentOutOfRangeException(nameof(dropout), dropout, "LoRA dropout must be in [0, 1)");
        Rank = rank;
        Alpha = alpha;
        Scaling = alpha / rank;
        DropoutProbability = dropout;
        var dtype = layer.weight.dtype;
        var device = layer.weight.device;
        // Created outside any caller's dispose scope: the adapter owns these until Dispose.
        LoraA = new Parameter(empty(rank, layer.InFeatures, dtype: dtype, device: device), requires_grad: true);
        LoraA.DetachFromDisposeScope();
        LoraB = new Parameter(zeros(layer.OutFeatures, rank, dtype: dtype, device: device), requires_grad: true);
        LoraB.DetachFromDisposeScope();
        using (no_grad()) nn.init.kaiming_uniform_(LoraA, Math.Sqrt(5));
    }

    /// <summary>lora_A.weight, (r, in_features).</summary>
    public Parameter LoraA { get; }

    /// <summary>lora_B.weight, (out_features, r).</summary>
    public Parameter LoraB { get; }

    public int Rank { get; }
    public double Alpha { get; }

    /// <summary>alpha / r.</summary>
    public double Scaling { get; }

    public double DropoutProbability { get; }

    /// <summary>True while B·A·scaling is folded into the layer's weight.</summary>
    public bool Merged { get; private set; }

    public Tensor Forward(TunableLinear layer, Tensor x)
    {
        using var scope = NewDisposeScope();
        Tensor result = F.linear(x, layer.weight, layer.bias);
        if (Merged) return result.MoveToOuterDisposeScope();
        Tensor input = layer.training && DropoutProbability > 0 ? F.dropout(x, DropoutProbability, training: true) : x;
        Tensor lowRank = F.linear(F.linear(input, LoraA), LoraB);   // (…, in) → (…, r) → (…, out)
        return result.add(lowRank, Scaling).MoveToOuterDisposeScope();
    }

    /// <summary>B·A·alpha/r, shaped (out, in) like the base weight; a new tensor without autograd history.</summary>
    public Tensor DeltaWeight(TunableLinear layer)
    {
        using var _ = no_grad();
        using var product = LoraB.matmul(LoraA);
        return product.mul(Scaling);
    }

    /// <summary>W += B·A·alpha/r; the forward pass then skips the low-rank path. No-op when already merged.</summary>
    public void Merge(TunableLinear layer)
    {
        if (Merged) return;
        using var _ = no_grad();
        using var delta = DeltaWeight(layer);
        layer.weight.add_(delta);
        Merged = true;
    }

    /// <summary>W −= B·A·alpha/r, undoing <see cref="Merge"/> (up to float rounding). No-op when not merged.</summary>
    public void Unmerge(TunableLinear layer)
    {
        if (!Merged) return;
        using var _ = no_grad();
        using var delta = DeltaWeight(layer);
        layer.weight.sub_(delta);
        Merged = false;
    }

    public IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() =>
        [("lora_A.weight", LoraA), ("lora_B.weight", LoraB)];

    public void Dispose()
    {
        LoraA.Dispose();
        LoraB.Dispose();
    }
}
