using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Tuners.Sift;

/// <summary>
/// SIFT on one linear layer: a fixed set of k flat indices into W (out, in) and a dense value vector of length k.
/// W stays the forward weight; after every optimizer step the values are added into W at the indices and reset
/// to zero (<see cref="MergeValues"/>), so AdamW's moments persist per index while W carries the update.
/// </summary>
public sealed class SiftAdapter : ILinearAdapter
{
    enum Phase { Selecting, Training }

    readonly long k;
    Phase phase;
    Tensor? score;             // Σ|∂L/∂W| while selecting over several batches
    readonly bool keepScore;

    public SiftAdapter(TunableLinear layer, long k, bool accumulateSelection)
    {
        this.k = k;
        keepScore = accumulateSelection;
        Values = new Parameter(zeros(k, dtype: layer.weight.dtype, device: layer.weight.device), requires_grad: true);
        Indices = empty(0, dtype: ScalarType.Int64).DetachFromDisposeScope();
        BaseValues = empty(0).DetachFromDisposeScope();
    }

    /// <summary>The k trainable components, zero between steps.</summary>
    public Parameter Values { get; }

    /// <summary>Flat row-major indices into W (out, in), sorted ascending.</summary>
    public Tensor Indices { get; private set; }

    /// <summary>W's entries at <see cref="Indices"/> when they were chosen, to export the delta alone.</summary>
    public Tensor BaseValues { get; private set; }

    public long Components => k;

    public Tensor Forward(TunableLinear layer, Tensor x) =>
        SparseGradientLinear.apply(x, layer.weight, layer.bias!, Values, Indices, this);

    /// <summary>Starts gradient selection: backward passes now score components instead of training values.</summary>
    public void BeginSelection() => phase = Phase.Selecting;

    /// <summary>Called from the layer's backward with its transient dense weight gradient.</summary>
    internal Tensor? ConsumeDenseGradient(Tensor denseWeightGrad)
    {
        if (phase == Phase.Training)
            return denseWeightGrad.view(-1).index_select(0, Indices);
        using var magnitude = denseWeightGrad.abs();
        if (score is null) score = magnitude.clone().DetachFromDisposeScope();
        else score.add_(magnitude);
        if (!keepScore) FinishSelectionFromScore(); // one batch: choose now, keep no score
        return null;
    }

    /// <summary>Ends gradient selection: top-k of the accumulated |gradient|.</summary>
    public void EndSelection(TunableLinear layer)
    {
        if (phase != Phase.Selecting) return;
        if (score is not null) FinishSelectionFromScore();
        if (Indices.numel() != k) throw new InvalidOperationException("SIFT selection saw no gradient for a targeted layer (is it used in the forward pass?)");
        RecordBase(layer);
        phase = Phase.Training;
    }

    void FinishSelectionFromScore()
    {
        using var scope = NewDisposeScope();
        var (_, top) = score!.view(-1).topk((int)k);
        SetIndices(top);
        score.Dispose();
        score = null;
    }

    /// <summary>Chooses indices directly (random or magnitude selection, or a restored checkpoint).</summary>
    public void SetIndices(Tensor flatIndices, TunableLinear? layer = null)
    {
        if (flatIndices.numel() != k) throw new ArgumentException($"expected {k} indices, got {flatIndices.numel()}");
        var (sorted, _) = flatIndices.to_type(ScalarType.Int64).sort();
        Indices.Dispose();
        Indices = sorted.DetachFromDisposeScope();
        if (layer is not null) { RecordBase(layer); phase = Phase.Training; }
    }

    void RecordBase(TunableLinear layer)
    {
        using var _ = no_grad();
        BaseValues.Dispose();
        BaseValues = layer.weight.detach().view(-1).index_select(0, Indices).DetachFromDisposeScope();
    }

    /// <summary>W[idx] += values; values ← 0. Called right after each optimizer step (the original merges one
    /// backward later, inside its hook; merging here makes step t+1's forward see step t's update).</summary>
    public void MergeValues(TunableLinear layer)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();   // the flat view, every step
        layer.weight.view(-1).index_add_(0, Indices, Values, 1.0);
        Values.zero_();
    }

    /// <summary>The update so far, at the indices: W[idx] − W₀[idx].</summary>
    public Tensor DeltaValues(TunableLinear layer)
    {
        using var _ = no_grad();
        return layer.weight.detach().view(-1).index_select(0, Indices).sub_(BaseValues);
    }

    public Tensor DeltaWeight(TunableLinear layer)
    {
        using var _ = no_grad();
        var delta = zeros_like(layer.weight);
        using var values = DeltaValues(layer);
        delta.view(-1).index_copy_(0, Indices, values);
        return delta;
    }

    public IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() => [("sift_values", Values)];

    public void Dispose()
    {
        Values.Dispose();
        Indices.Dispose();
        BaseValues.Dispose();
        score?.Dispose();
    }
}
