using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Nn;

/// <summary>
/// A strategy that changes how one <see cref="TunableLinear"/> computes its output: LoRA adds a low-rank
/// path, SIFT routes the weight gradient through a sparse gather, PST multiplies the weight by a learned
/// mask. Adapters own their trainable tensors; they are not registered in the base model's module tree,
/// so the model's state dict stays exactly the Hugging Face checkpoint.
/// </summary>
public interface ILinearAdapter : IDisposable
{
    /// <summary>y = f(x) for the wrapped layer; <paramref name="layer"/> holds the frozen base weight.</summary>
    Tensor Forward(TunableLinear layer, Tensor x);

    /// <summary>The weight change this adapter represents, shaped like the base weight (out, in).</summary>
    Tensor DeltaWeight(TunableLinear layer);

    /// <summary>The adapter's trainable tensors, named relative to the layer (e.g. "lora_A.weight").</summary>
    IEnumerable<(string Name, Parameter Parameter)> TrainableParameters();
}

/// <summary>
/// y = x Wᵀ + b with W stored (out_features, in_features) as nn.Linear does. Every linear layer in
/// SparseTune's models is one of these, so tuners can attach an <see cref="ILinearAdapter"/> and structured
/// pruning can shrink the weight in place (<see cref="KeepRows"/>, <see cref="KeepColumns"/>).
/// </summary>
public sealed class TunableLinear : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    public Parameter? bias;

    /// <summary>The attached adapter, or null for a plain linear layer.</summary>
    public ILinearAdapter? Adapter { get; set; }

    public TunableLinear(long inFeatures, long outFeatures, bool hasBias = true) : base(nameof(TunableLinear))
    {
        weight = new Parameter(empty(outFeatures, inFeatures));
        bias = hasBias ? new Parameter(zeros(outFeatures)) : null;
        // Kaiming-uniform like nn.Linear; pretrained checkpoints overwrite this.
        nn.init.kaiming_uniform_(weight, Math.Sqrt(5));
        if (bias is not null)
        {
            double bound = 1.0 / Math.Sqrt(inFeatures);
            nn.init.uniform_(bias, -bound, bound);
        }
        RegisterComponents();
    }

    public long InFeatures => weight.shape[1];
    public long OutFeatures => weight.shape[0];

    public override Tensor forward(Tensor x) =>
        Adapter is null ? nn.functional.linear(x, weight, bias) : Adapter.Forward(this, x);

    /// <summary>Physically removes output features: keeps rows <paramref name="rows"/> of W and b.</summary>
    public void KeepRows(Tensor rows)
    {
        using var _ = no_grad();
        ReplaceWeight(weight.index_select(0, rows), bias?.index_select(0, rows));
    }

    /// <summary>Physically removes input features: keeps columns <paramref name="columns"/> of W.</summary>
    public void KeepColumns(Tensor columns)
    {
        using var _ = no_grad();
        ReplaceWeight(weight.index_select(1, columns), bias?.detach().clone());
    }

    /// <summary>Swaps in new weight (and bias) tensors, keeping requires_grad.</summary>
    public void ReplaceWeight(Tensor newWeight, Tensor? newBias)
    {
        bool trainWeight = weight.requires_grad;
        bool trainBias = bias?.requires_grad ?? false;
        var oldWeight = weight;
        var oldBias = bias;
        weight = new Parameter(newWeight.detach().contiguous(), trainWeight);
        ConditionallyRegisterParameter("weight", weight);
        bias = newBias is null ? null : new Parameter(newBias.detach().contiguous(), trainBias);
        ConditionallyRegisterParameter("bias", bias);
        oldWeight.Dispose();
        oldBias?.Dispose();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) Adapter?.Dispose();
        base.Dispose(disposing);
    }
}
