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

    /// <summary>
    /// True when the base weight already holds the update (SIFT merges after every step): the layer's effective
    /// weight is then W itself, and <see cref="DeltaWeight"/> only reports what part of W changed.
    /// </summary>
    bool DeltaInBaseWeight => false;

    /// <summary>The adapter's trainable tensors, named relative to the layer (e.g. "lora_A.weight").</summary>
    IEnumerable<(string Name, Parameter Parameter)> TrainableParameters();

    /// <summary>
    /// Whether the adapter can shrink with its layer (<see cref="KeepRows"/>, <see cref="KeepColumns"/>).
    /// Structured pruning asks every touched layer's adapter first and refuses the whole request otherwise.
    /// </summary>
    bool CanFollowResize => false;

    /// <summary>
    /// Called by <see cref="TunableLinear.KeepRows"/> before the base weight shrinks: keep only the adapter's
    /// state for output features <paramref name="rows"/>. Record every replaced Parameter in
    /// <see cref="ParameterLineage"/> so optimizer moments follow.
    /// </summary>
    void KeepRows(TunableLinear layer, Tensor rows) =>
        throw new NotSupportedException($"{GetType().Name} cannot follow a resize of its layer (removing output rows)");

    /// <summary>As <see cref="KeepRows"/>, for input features (columns of the base weight).</summary>
    void KeepColumns(TunableLinear layer, Tensor columns) =>
        throw new NotSupportedException($"{GetType().Name} cannot follow a resize of its layer (removing input columns)");
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

    /// <summary>
    /// The type this layer's matrix products run in (bf16 under mixed precision, set by
    /// <see cref="Models.TransformerModel.Precision"/>); null: the weight's own type. Adapters compute with it too.
    /// </summary>
    public ScalarType? ComputeType { get; set; }

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
        Adapter is null ? MixedPrecision.Linear(x, weight, bias, ComputeType) : Adapter.Forward(this, x);

    /// <summary>
    /// Physically removes output features: keeps rows <paramref name="rows"/> (int64 indices) of W and b. The
    /// attached adapter follows first (and throws <see cref="NotSupportedException"/>, leaving the layer as it
    /// was, if it cannot). W and b become new Parameters, recorded in <see cref="ParameterLineage"/>.
    /// </summary>
    public void KeepRows(Tensor rows)
    {
        Adapter?.KeepRows(this, rows);
        var (oldWeight, oldBias) = (weight, bias);
        using (var scope = NewDisposeScope())
        using (no_grad())
            ReplaceWeight(weight.index_select(0, rows), bias?.index_select(0, rows));
        ParameterLineage.Record(weight, oldWeight, 0, rows);
        if (bias is not null) ParameterLineage.Record(bias, oldBias!, 0, rows);
    }

    /// <summary>
    /// Physically removes input features: keeps columns <paramref name="columns"/> of W (b is unchanged, but
    /// becomes a new Parameter too). The attached adapter follows first, as in <see cref="KeepRows"/>.
    /// </summary>
    public void KeepColumns(Tensor columns)
    {
        Adapter?.KeepColumns(this, columns);
        var (oldWeight, oldBias) = (weight, bias);
        using (var scope = NewDisposeScope())
        using (no_grad())
            ReplaceWeight(weight.index_select(1, columns), bias?.detach().clone());
        ParameterLineage.Record(weight, oldWeight, 1, columns);
        if (bias is not null) ParameterLineage.Record(bias, oldBias!, 0, null);
    }

    /// <summary>
    /// Swaps in new weight (and bias) tensors, keeping requires_grad. The new Parameters live outside any dispose
    /// scope (the layer owns them); the old ones are disposed.
    /// </summary>
    public void ReplaceWeight(Tensor newWeight, Tensor? newBias)
    {
        bool trainWeight = weight.requires_grad;
        bool trainBias = bias?.requires_grad ?? false;
        var oldWeight = weight;
        var oldBias = bias;
        weight = new Parameter(newWeight.detach().contiguous(), trainWeight);
        weight.DetachFromDisposeScope();
        ConditionallyRegisterParameter("weight", weight);
        bias = newBias is null ? null : new Parameter(newBias.detach().contiguous(), trainBias);
        bias?.DetachFromDisposeScope();
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
