using static TorchSharp.torch;

namespace SparseTune.Training;

/// <summary>One padded batch. Labels: (B) int64 classes, (B) float32 targets, or (B, T) int64 LM labels with -100 ignored.</summary>
public sealed record TrainingBatch(Tensor InputIds, Tensor AttentionMask, Tensor? TokenTypeIds, Tensor Labels) : IDisposable
{
    /// <summary>Real (non-padding) tokens in the batch.</summary>
    public long TokenCount => AttentionMask.sum().item<long>();

    public void Dispose()
    {
        InputIds.Dispose();
        AttentionMask.Dispose();
        TokenTypeIds?.Dispose();
        Labels.Dispose();
    }
}

/// <summary>
/// Where the trainer gets batches. The order of an epoch must be a pure function of (seed, epoch): the trainer
/// finds the batch of any step from it, which is what makes --resume reproduce an uninterrupted run.
/// </summary>
public interface IBatchSource
{
    /// <summary>Index arrays of the batches of one epoch, in order.</summary>
    IReadOnlyList<int[]> EpochBatches(int epoch);

    /// <summary>Tensors for one batch.</summary>
    TrainingBatch Build(int[] indices);
}
