using static TorchSharp.torch;

namespace SparseTune.Distributed;

/// <summary>
/// The processes of one data-parallel run and the collectives the trainer needs. Every rank must call the same
/// collectives in the same order with the same shapes; a rank that skips one makes the others wait.
/// </summary>
public interface IProcessGroup
{
    /// <summary>This process's index, 0 … <see cref="Size"/> − 1.</summary>
    int Rank { get; }

    /// <summary>Processes in the run.</summary>
    int Size { get; }

    /// <summary>Rank 0: the process that writes outputs, checkpoints, logs and progress.</summary>
    bool IsMain => Rank == 0;

    /// <summary>
    /// Replaces every tensor with its mean over the ranks (float32 arithmetic whatever the tensor's type), through one
    /// flat buffer per bucket of tensors: for gradients, one collective per optimizer step below the bucket size.
    /// </summary>
    void AllReduceMean(IReadOnlyList<Tensor> tensors);

    /// <summary>Replaces every value with its sum over the ranks (float64): losses, token counts, metric sums.</summary>
    void AllReduceSum(double[] values);

    /// <summary>Overwrites every tensor with <paramref name="root"/>'s copy, bit for bit (any dtype).</summary>
    void Broadcast(IReadOnlyList<Tensor> tensors, int root = 0);

    /// <summary>Waits until every rank has reached this call.</summary>
    void Barrier();

    /// <summary>
    /// <see cref="Barrier"/> for a long wait: checks every <paramref name="poll"/> and sleeps in between instead of
    /// spinning on a core the ranks still working could use. Every rank must call this one, not <see cref="Barrier"/>.
    /// </summary>
    void SleepingBarrier(TimeSpan poll) => Barrier();
}

/// <summary>One process, no communication: every collective is a no-op (the sum and mean of one value is itself).</summary>
public sealed class SingleProcess : IProcessGroup
{
    public static readonly SingleProcess Instance = new();

    SingleProcess() { }

    public int Rank => 0;
    public int Size => 1;
    public void AllReduceMean(IReadOnlyList<Tensor> tensors) { }
    public void AllReduceSum(double[] values) { }
    public void Broadcast(IReadOnlyList<Tensor> tensors, int root = 0) { }
    public void Barrier() { }
}
