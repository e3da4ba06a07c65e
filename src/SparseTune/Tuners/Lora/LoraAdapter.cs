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

    /// <summary>lora_A.weight, (r, in_features). A new Parameter after a resize or <see cref="KeepRanks"/>.</summary>
    public Parameter LoraA { get; private set; }

    /// <summary>lora_B.weight, (out_features, r). A new Parameter after a resize or <see cref="KeepRanks"/>.</summary>
    public Parameter LoraB { get; private set; }

    /// <summary>Ranks present now; lower than the rank the adapter was built with after <see cref="KeepRanks"/>.</summary>
    public int Rank { get; private set; }
    public double Alpha { get; }

    /// <summary>alpha / r with r the rank the adapter was built with (see <see cref="KeepRanks"/>).</summary>
    public double Scaling { get; }

    public double DropoutProbability { get; }

    /// <summary>True while B·A·scaling is folded into the layer's weight.</summary>
    public bool Merged { get; private set; }

    public Tensor Forward(TunableLinear layer, Tensor x)
    {
        using var scope = NewDisposeScope();
        var compute = layer.ComputeType;
        Tensor result = MixedPrecision.Linear(x, layer.weight, layer.bias, compute);
        if (Merged) return result.MoveToOuterDisposeScope();
        Tensor input = layer.training && DropoutProbability > 0 ? F.dropout(x, DropoutProbability, training: true) : x;
        Tensor lowRank = MixedPrecision.Linear(MixedPrecision.Linear(input, LoraA, null, compute), LoraB, null, compute);   // (…, in) → (…, r) → (…, out)
        if (layer.training && OutputObserver is { } observe)
            using (no_grad())
                observe(result.detach(), lowRank.detach().mul(Scaling));
        return result.add(lowRank, Scaling).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Optional: called in training-mode forward passes (unmerged) with the base output W·x + b and the adapter's
    /// update ΔW·x = B·A·x·alpha/r (after LoRA dropout), both (…, out), detached, without autograd. The tensors belong
    /// to the forward pass and are disposed after the call; read what is needed (Light-PEFT's ‖ΔW·x‖ / ‖W·x + b‖).
    /// Null (the default) costs nothing and leaves the forward pass as it is.
    /// </summary>
    public Action<Tensor, Tensor>? OutputObserver { get; set; }

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

    /// <summary>LoRA shrinks with its layer: B holds one row per output feature, A one column per input feature.</summary>
    public bool CanFollowResize => true;

    /// <summary>Output features removed from the layer: keep rows <paramref name="rows"/> of B (out, r).</summary>
    public void KeepRows(TunableLinear layer, Tensor rows) => LoraB = Cut(LoraB, 0, rows);

    /// <summary>Input features removed from the layer: keep columns <paramref name="columns"/> of A (r, in).</summary>
    public void KeepColumns(TunableLinear layer, Tensor columns) => LoraA = Cut(LoraA, 1, columns);

    /// <summary>
    /// Drops LoRA ranks: keeps rows <paramref name="ranks"/> of A and the same columns of B, so
    /// B·A = Σ over kept r of B[:, r] A[r, :]. <see cref="Scaling"/> stays alpha / (original rank) on purpose:
    /// the surviving ranks then contribute exactly what they did before, and the result equals the old adapter
    /// with the dropped ranks zeroed (recomputing alpha / new rank would rescale the whole update). Whoever
    /// writes a PEFT adapter_config.json afterwards must store lora_alpha = Scaling · Rank to keep that function.
    /// </summary>
    /// <param name="ranks">int64 indices in [0, Rank), distinct, at least one.</param>
    public void KeepRanks(Tensor ranks)
    {
        if (Merged) throw new InvalidOperationException("cannot drop LoRA ranks while the adapter is merged into the weight; unmerge first");
        long[] kept;
        using (Tensor asLong = ranks.to_type(ScalarType.Int64)) kept = asLong.data<long>().ToArray();
        if (kept.Length == 0) throw new ArgumentException("KeepRanks needs at least one rank to keep", nameof(ranks));
        if (kept.Any(r => r < 0 || r >= Rank))
            throw new ArgumentException($"rank {kept.First(r => r < 0 || r >= Rank)} is outside [0, {Rank})", nameof(ranks));
        if (kept.Distinct().Count() != kept.Length)
            throw new ArgumentException($"ranks [{string.Join(", ", kept)}] contain duplicates", nameof(ranks));
        LoraA = Cut(LoraA, 0, ranks);
        LoraB = Cut(LoraB, 1, ranks);
        Rank = kept.Length;
    }

    /// <summary>A sliced copy of a factor (recorded in <see cref="ParameterLineage"/>); the old factor is disposed.</summary>
    static Parameter Cut(Parameter factor, long dim, Tensor kept)
    {
        Parameter sliced = ParameterLineage.Slice(factor, dim, kept);
        factor.Dispose();
        return sliced;
    }

    public IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() =>
        [("lora_A.weight", LoraA), ("lora_B.weight", LoraB)];

    public void Dispose()
    {
        LoraA.Dispose();
        LoraB.Dispose();
    }
}
