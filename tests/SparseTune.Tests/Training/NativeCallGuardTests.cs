using System.Runtime;
using SparseTune.Nn;
using Xunit;

namespace SparseTune.Tests.TrainingLoop;

/// <summary>
/// The guard that keeps collections (and so TorchSharp's Scalar finalizers) out of libtorch calls: inside it another
/// thread's allocations trigger no collection; a safe point renews the region once half its allowance is used; nesting
/// keeps it until the outermost dispose.
/// </summary>
public class NativeCallGuardTests
{
    static void AllocateOnAnotherThread(long bytes)
    {
        var thread = new Thread(() =>
        {
            for (long done = 0; done < bytes; done += 64 << 10) GC.KeepAlive(new byte[64 << 10]);
        });
        thread.Start();
        thread.Join();
    }

    [Fact]
    public void NoCollectionWhileGuardedAndRenewedAtSafePoints()
    {
        Assert.NotEqual(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode);
        using (NativeCallGuard.Enter())
        {
            Assert.Equal(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode);
            int before = GC.CollectionCount(0);
            AllocateOnAnotherThread(16L << 20);   // a quarter of the allowance: far beyond gen0's own budget
            Assert.Equal(before, GC.CollectionCount(0));

            AllocateOnAnotherThread(20L << 20);   // now over half used: the next safe point collects and starts afresh
            NativeCallGuard.SafePoint();
            Assert.True(GC.CollectionCount(0) > before, "the safe point should have renewed the region with a collection");
            Assert.Equal(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode);
            int renewed = GC.CollectionCount(0);

            using (NativeCallGuard.Enter()) NativeCallGuard.SafePoint();   // nested: still guarded after the inner dispose
            Assert.Equal(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode);
            AllocateOnAnotherThread(8L << 20);
            Assert.Equal(renewed, GC.CollectionCount(0));
        }
        Assert.NotEqual(GCLatencyMode.NoGCRegion, GCSettings.LatencyMode);
    }
}
