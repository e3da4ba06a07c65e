using SparseTune.Distributed;
using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Tuners.Sift;

/// <summary>
/// SIFT on one linear layer: a fixed set of k flat indices into W (out, in) and a dense value vector of length k, and
/// (when the layer has a bias that tunes, as the original's substring match tunes it) k_b indices into b with their
/// own values. W and b stay the forward tensors; after every optimizer step the values are added into them at the
/// indices and reset to zero (<see cref="MergeValues"/>), so AdamW's moments persist per index while W and b carry
/// the update.
/// <para>
/// Gradient selection runs inside training, as in the original: while <see cref="Selecting"/>, a backward pass scores
/// components instead of training them, and the values get no gradient from it. After the selection batches the
/// indices are the top-k of Σ_b |∂L/∂W_b| (and of Σ_b |∂L/∂b_b|). One batch (the default) takes the top-k of that
/// batch's transient gradient directly, in place: no extra tensor. Several batches keep one score the size of W per
/// layer until the last selection batch, i.e. one extra copy of every targeted weight while selecting.
/// </para>
/// </summary>
public sealed class SiftAdapter : ILinearAdapter
{
    enum Phase { Idle, Selecting, Training }

    readonly long k, biasK;
    Phase phase;
    int selectionBatchesLeft;
    Tensor? score, biasScore;   // Σ|∂L/∂W| and Σ|∂L/∂b| while selecting over several batches
    readonly IProcessGroup group;

    /// <param name="biasComponents">k_b, trained components of the bias; 0 keeps the bias frozen.</param>
    /// <param name="group">Data-parallel ranks: a selection batch's dense gradients are averaged over them before
    /// scoring, so every rank chooses the indices one process would choose from the whole global batch.</param>
    public SiftAdapter(TunableLinear layer, long k, long biasComponents = 0, IProcessGroup? group = null)
    {
        this.group = group ?? SingleProcess.Instance;
        if (biasComponents > 0 && layer.bias is null) throw new ArgumentException("the layer has no bias to tune", nameof(biasComponents));
        this.k = k;
        biasK = biasComponents;
        Values = NewValues(k, layer.weight);
        BiasValues = biasK > 0 ? NewValues(biasK, layer.bias!) : null;
        Device device = layer.weight.device;
        Indices = empty(0, dtype: ScalarType.Int64, device: device).DetachFromDisposeScope();
        BiasIndices = empty(0, dtype: ScalarType.Int64, device: device).DetachFromDisposeScope();
        BaseValues = empty(0, device: device).DetachFromDisposeScope();
        BiasBaseValues = empty(0, device: device).DetachFromDisposeScope();

        static Parameter NewValues(long count, Tensor like)
        {
            var p = new Parameter(zeros(count, dtype: like.dtype, device: like.device), requires_grad: true);
            p.DetachFromDisposeScope();
            return p;
        }
    }

    /// <summary>The k trainable components of W, zero between steps.</summary>
    public Parameter Values { get; }

    /// <summary>The k_b trainable components of the bias, zero between steps; null when the bias is frozen.</summary>
    public Parameter? BiasValues { get; }

    /// <summary>Flat row-major indices into W (out, in), sorted ascending.</summary>
    public Tensor Indices { get; private set; }

    /// <summary>Indices into the bias, sorted ascending (empty when the bias is frozen).</summary>
    public Tensor BiasIndices { get; private set; }

    /// <summary>W's entries at <see cref="Indices"/> when they were chosen, to export the delta alone.</summary>
    public Tensor BaseValues { get; private set; }

    /// <summary>The bias's entries at <see cref="BiasIndices"/> when they were chosen.</summary>
    public Tensor BiasBaseValues { get; private set; }

    public long Components => k;
    public long BiasComponents => biasK;

    /// <summary>True while backward passes score components (before the indices are chosen).</summary>
    public bool Selecting => phase == Phase.Selecting;

    /// <summary>SIFT writes its update into W after every step: W already is the tuned weight.</summary>
    public bool DeltaInBaseWeight => true;

    /// <remarks>Under mixed precision the function receives x in the compute type and runs its products in it.</remarks>
    public Tensor Forward(TunableLinear layer, Tensor x) =>
        SparseGradientLinear.apply(layer.ComputeType is { } compute ? MixedPrecision.To(x, compute) : x, layer.weight, layer.bias!, Values, BiasValues!, this);

    /// <summary>The next <paramref name="batches"/> backward passes choose the indices instead of training.</summary>
    public void BeginSelection(int batches)
    {
        if (batches < 1) throw new ArgumentOutOfRangeException(nameof(batches), batches, "at least one selection batch");
        phase = Phase.Selecting;
        selectionBatchesLeft = batches;
    }

    /// <summary>
    /// Called from the layer's backward with its transient dense gradients, which this method may overwrite (they
    /// are freed right after). Returns the gradients of <see cref="Values"/> and <see cref="BiasValues"/>: null while
    /// selecting, since a selection batch is spent on choosing (the original discards its gradient).
    /// </summary>
    internal (Tensor? Values, Tensor? Bias) ConsumeDenseGradient(Tensor denseWeightGrad, Tensor? denseBiasGrad, Tensor weight, Tensor? bias)
    {
        if (phase == Phase.Training)
            return (denseWeightGrad.view(-1).index_select(0, Indices), biasK > 0 ? denseBiasGrad!.index_select(0, BiasIndices) : null);
        if (phase == Phase.Idle) throw new InvalidOperationException("SIFT: a backward pass ran before the components were chosen");
        selectionBatchesLeft--;
        // Ranks call this in the same order (the same layers' backward), so the collective lines up.
        if (group.Size > 1) group.AllReduceMean(biasK > 0 ? [denseWeightGrad, denseBiasGrad!] : [denseWeightGrad]);
        bool last = selectionBatchesLeft == 0;
        if (last && score is null)
        {
            // One batch: rank this gradient itself (abs in place on the transient tensor, no copy).
            ChooseFrom(denseWeightGrad.abs_(), biasK > 0 ? denseBiasGrad!.abs_() : null, weight, bias);
            return (null, null);
        }
        Accumulate(ref score, denseWeightGrad);
        if (biasK > 0) Accumulate(ref biasScore, denseBiasGrad!);
        if (last) FinishSelection(weight, bias);
        return (null, null);

        static void Accumulate(ref Tensor? sum, Tensor gradient)
        {
            gradient.abs_();
            if (sum is null) sum = gradient.DetachFromDisposeScope();   // keep the transient gradient itself as the score
            else sum.add_(gradient);
        }
    }

    /// <summary>Selection batches still to score, and the scores so far (null after one batch or none): for checkpoints.</summary>
    public (int BatchesLeft, Tensor? Score, Tensor? BiasScore) SelectionState => (selectionBatchesLeft, score, biasScore);

    /// <summary>Continues a selection that a checkpoint interrupted.</summary>
    public void ResumeSelection(int batchesLeft, Tensor? savedScore, Tensor? savedBiasScore)
    {
        BeginSelection(batchesLeft);
        score?.Dispose();
        biasScore?.Dispose();
        score = savedScore?.clone().DetachFromDisposeScope();
        biasScore = savedBiasScore?.clone().DetachFromDisposeScope();
    }

    /// <summary>Ends selection now from the batches scored so far (training ended before the selection batches did).</summary>
    public void EndSelection(TunableLinear layer)
    {
        if (phase != Phase.Selecting) return;
        if (score is null) throw new InvalidOperationException("SIFT selection saw no gradient for a targeted layer (is it used in the forward pass?)");
        FinishSelection(layer.weight, layer.bias);
    }

    void FinishSelection(Tensor weight, Tensor? bias)
    {
        ChooseFrom(score!, biasScore, weight, bias);
        score!.Dispose();
        score = null;
        biasScore?.Dispose();
        biasScore = null;
    }

    void ChooseFrom(Tensor weightScore, Tensor? biasScoreNow, Tensor weight, Tensor? bias)
    {
        using var scope = NewDisposeScope();
        Indices = Replace(Indices, Sorted(weightScore.view(-1).topk((int)k).indexes));
        if (biasScoreNow is not null) BiasIndices = Replace(BiasIndices, Sorted(biasScoreNow.topk((int)biasK).indexes));
        RecordBase(weight, bias);
        phase = Phase.Training;
        selectionBatchesLeft = 0;
    }

    static Tensor Sorted(Tensor indices)
    {
        var (sorted, _) = indices.to_type(ScalarType.Int64).sort();
        return sorted;
    }

    static Tensor Replace(Tensor old, Tensor updated)
    {
        old.Dispose();
        return updated.DetachFromDisposeScope();
    }

    /// <summary>Chooses indices directly (random or magnitude selection, or a restored checkpoint).</summary>
    public void SetIndices(Tensor flatIndices, TunableLinear layer, Tensor? biasIndices = null)
    {
        if (flatIndices.numel() != k) throw new ArgumentException($"expected {k} indices, got {flatIndices.numel()}");
        if ((biasIndices?.numel() ?? 0) != biasK) throw new ArgumentException($"expected {biasK} bias indices, got {biasIndices?.numel() ?? 0}");
        using var scope = NewDisposeScope();
        Indices = Replace(Indices, Sorted(flatIndices));
        if (biasIndices is not null) BiasIndices = Replace(BiasIndices, Sorted(biasIndices));
        RecordBase(layer.weight, layer.bias);
        phase = Phase.Training;
        score?.Dispose();
        score = null;
        biasScore?.Dispose();
        biasScore = null;
    }

    void RecordBase(Tensor weight, Tensor? bias)
    {
        using var _ = no_grad();
        BaseValues.Dispose();
        BaseValues = weight.detach().view(-1).index_select(0, Indices).DetachFromDisposeScope();
        BiasBaseValues.Dispose();
        BiasBaseValues = biasK > 0 ? bias!.detach().index_select(0, BiasIndices).DetachFromDisposeScope() : empty(0, device: weight.device).DetachFromDisposeScope();
    }

    /// <summary>W[idx] += values, b[idx_b] += bias values; values ← 0. Called right after each optimizer step (the
    /// original merges one backward later, inside its hook; merging here makes step t+1's forward see step t's update).</summary>
    public void MergeValues(TunableLinear layer)
    {
        if (phase != Phase.Training) return;
        using var _ = no_grad();
        using var scope = NewDisposeScope();   // the flat view, every step
        layer.weight.view(-1).index_add_(0, Indices, Values, 1.0);
        Values.zero_();
        if (BiasValues is not null)
        {
            layer.bias!.index_add_(0, BiasIndices, BiasValues, 1.0);
            BiasValues.zero_();
        }
    }

    /// <summary>The update so far, at the indices: W[idx] − W₀[idx].</summary>
    public Tensor DeltaValues(TunableLinear layer)
    {
        using var _ = no_grad();
        return layer.weight.detach().view(-1).index_select(0, Indices).sub_(BaseValues);
    }

    /// <summary>The bias update so far, at the bias indices: b[idx_b] − b₀[idx_b].</summary>
    public Tensor BiasDeltaValues(TunableLinear layer)
    {
        using var _ = no_grad();
        return biasK > 0 ? layer.bias!.detach().index_select(0, BiasIndices).sub_(BiasBaseValues) : empty(0, device: layer.weight.device);
    }

    public Tensor DeltaWeight(TunableLinear layer)
    {
        using var _ = no_grad();
        var delta = zeros_like(layer.weight);
        using var values = DeltaValues(layer);
        delta.view(-1).index_copy_(0, Indices, values);
        return delta;
    }

    public IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() =>
        BiasValues is null ? [("sift_values", Values)] : [("sift_values", Values), ("bias.sift_values", BiasValues)];

    public void Dispose()
    {
        Values.Dispose();
        BiasValues?.Dispose();
        Indices.Dispose();
        BiasIndices.Dispose();
        BaseValues.Dispose();
        BiasBaseValues.Dispose();
        score?.Dispose();
        biasScore?.Dispose();
    }
}
