using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Distributed;

/// <summary>
/// MPI_COMM_WORLD as a <see cref="IProcessGroup"/>. MPI is initialised once per process (<see cref="World"/>) and
/// finalised by <see cref="Shutdown"/> or at process exit. Tensors travel through contiguous float32 CPU buffers
/// (libtorch CPU memory does not move, so its address is handed to MPI as it is).
/// </summary>
public sealed class MpiProcessGroup : IProcessGroup
{
    /// <summary>Elements of one all-reduce bucket by default: 64 MiB of float32.</summary>
    public const int DefaultBucketElements = 16 << 20;

    static MpiProcessGroup? world;
    static readonly Lock Gate = new();

    MpiProcessGroup(int rank, int size)
    {
        Rank = rank;
        Size = size;
    }

    public int Rank { get; }
    public int Size { get; }

    /// <summary>
    /// Elements of one all-reduce bucket: a bucket holds consecutive whole tensors up to this size, a larger tensor is
    /// its own bucket, reduced in chunks of this many elements. Every rank must use the same value.
    /// </summary>
    public int BucketElements { get; set; } = DefaultBucketElements;

    /// <summary>Bytes handed to all-reduce so far (gradients and scalars), and the seconds spent in it.</summary>
    public long AllReducedBytes { get; private set; }
    public double AllReduceSeconds { get; private set; }

    /// <summary>The world communicator; the first call loads libmpi and calls MPI_Init (<see cref="MpiException"/> when it cannot).</summary>
    public static MpiProcessGroup World
    {
        get
        {
            lock (Gate)
            {
                if (world is not null) return world;
                MpiNative.Load();
                if (!MpiNative.IsInitialized)
                {
                    MpiNative.Init();
                    AppDomain.CurrentDomain.ProcessExit += (_, _) => Shutdown();
                }
                world = new MpiProcessGroup(MpiNative.Rank(), MpiNative.Size());
                return world;
            }
        }
    }

    /// <summary>MPI_Finalize, once, if MPI was initialised here; later collectives are impossible.</summary>
    public static void Shutdown()
    {
        lock (Gate)
        {
            if (world is null || MpiNative.IsFinalized) return;
            MpiNative.FinalizeMpi();
        }
    }

    /// <summary>Ends the whole job from any rank: the others leave their collectives instead of waiting for this one.</summary>
    public static void AbortAll(int errorCode)
    {
        if (world is not null && !MpiNative.IsFinalized) MpiNative.Abort(errorCode);
    }

    public void AllReduceMean(IReadOnlyList<Tensor> tensors)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        foreach (var bucket in Buckets(tensors))
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            // One flat float32 buffer per bucket: (Σ numel).
            Tensor flat = cat(bucket.Select(t => t.detach().reshape(-1).to(ScalarType.Float32, CPU)).ToList()).contiguous();
            long count = flat.numel();
            ForEachChunk(flat, BucketElements, (address, elements) => MpiNative.AllReduceSumInPlace(address, elements, MpiNative.Float));
            AllReducedBytes += count * sizeof(float);
            flat.div_(Size);
            long at = 0;
            foreach (var t in bucket)
            {
                t.copy_(flat.narrow(0, at, t.numel()).view_as(t));
                at += t.numel();
            }
        }
        AllReduceSeconds += clock.Elapsed.TotalSeconds;
    }

    /// <summary>Consecutive runs of tensors whose elements add up to at most <see cref="BucketElements"/> (a larger tensor alone).</summary>
    IEnumerable<List<Tensor>> Buckets(IReadOnlyList<Tensor> tensors)
    {
        var bucket = new List<Tensor>();
        long elements = 0;
        foreach (var t in tensors)
        {
            if (bucket.Count > 0 && elements + t.numel() > BucketElements)
            {
                yield return bucket;
                bucket = [];
                elements = 0;
            }
            bucket.Add(t);
            elements += t.numel();
        }
        if (bucket.Count > 0) yield return bucket;
    }

    public unsafe void AllReduceSum(double[] values)
    {
        if (values.Length == 0) return;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        fixed (double* p = values) MpiNative.AllReduceSumInPlace((IntPtr)p, values.Length, MpiNative.Double);
        AllReducedBytes += values.Length * sizeof(double);
        AllReduceSeconds += clock.Elapsed.TotalSeconds;
    }

    public void Broadcast(IReadOnlyList<Tensor> tensors, int root = 0)
    {
        const int chunkBytes = 1 << 30;
        using var _ = no_grad();
        foreach (var t in tensors)
        {
            using var scope = NewDisposeScope();
            // The bytes of a contiguous CPU copy: any dtype, bit for bit.
            Tensor copy = t.detach().to(CPU).contiguous().clone();
            int elementSize = (int)copy.ElementSize;
            ForEachChunk(copy.reshape(-1), chunkBytes / elementSize, (address, elements) => MpiNative.Broadcast(address, elements * elementSize, MpiNative.Byte, root));
            if (Rank != root) t.copy_(copy);
        }
    }

    public void Barrier() => MpiNative.Barrier();

    public void SleepingBarrier(TimeSpan poll) => MpiNative.SleepingBarrier(poll);

    /// <summary>
    /// Hands <paramref name="action"/> the address and element count of consecutive pieces of at most
    /// <paramref name="chunkElements"/> of a flat contiguous CPU tensor (MPI counts are 32-bit).
    /// </summary>
    static unsafe void ForEachChunk(Tensor flat, long chunkElements, Action<IntPtr, int> action)
    {
        long count = flat.numel();
        for (long start = 0; start < count; start += chunkElements)
        {
            using Tensor part = flat.narrow(0, start, Math.Min(chunkElements, count - start));
            int elements = (int)part.numel();
            fixed (byte* address = part.bytes) action((IntPtr)address, elements);
        }
    }
}
