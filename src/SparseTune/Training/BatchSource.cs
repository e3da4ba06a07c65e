using static TorchSharp.torch;

namespace SparseTune.Training;

/// <summary>One padded batch. Labels: (B) int64 classes, (B) float32 targets, or (B, T) int64 LM labels with -100 ignored.</summary>
public sealed record TrainingBatch(Tensor InputIds, Tensor AttentionMask, Tensor? TokenTypeIds, Tensor Labels) : IDisposable
{
    /// <summary>Real (non-padding) tokens in the batch.</summary>
    public long TokenCount => AttentionMask.sum().item<long>();

    /// <summary>The batch on <paramref name="device"/> (the model's); this one is disposed when it had to be copied.</summary>
    public TrainingBatch To(Device device)
    {
        if (InputIds.device_type == device.type && (device.index < 0 || InputIds.device_index == device.index)) return this;
        var moved = new TrainingBatch(InputIds.to(device), AttentionMask.to(device), TokenTypeIds?.to(device), Labels.to(device));
        Dispose();
        return moved;
    }

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
