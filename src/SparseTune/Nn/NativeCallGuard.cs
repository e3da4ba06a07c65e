using System.Runtime;

namespace SparseTune.Nn;

/// <summary>
/// Keeps the .NET garbage collector from running while libtorch works on TorchSharp temporaries.
/// <para>
/// TorchSharp turns every number passed to an operation into a <c>Scalar</c> object that only its finalizer frees —
/// the <c>eps</c> of <c>x + eps</c>, and the hidden <c>alpha = 1</c> of every <c>a + b</c>. Once the operation has read the
/// object's native handle the object is dead to the JIT, so a collection triggered by another thread (a progress
/// renderer, a test runner) while the calling thread is inside libtorch can finalize it before libtorch reads it:
/// an intermittent "Expected false to be true" from <c>c10::Scalar</c>, or silently a wrong value. This guard holds a
/// no-GC region (<see cref="GC.TryStartNoGCRegion(long)"/>) over the loops that call libtorch, renewed at
/// <see cref="SafePoint"/>s — between batches, where no libtorch call is in flight — before its allowance runs out, so
/// that collections happen there, on the calling thread, and never in the middle of an operation.
/// </para>
/// Nesting is allowed (an evaluation inside training); the outermost <see cref="Dispose"/> ends the region.
/// Where the runtime refuses a region (another owner, a GC configuration without one) the guard does nothing.
/// </summary>
public sealed class NativeCallGuard : IDisposable
{
    /// <summary>Allocation the region allows; renewed at a safe point once half of it is used.</summary>
    const long Allowance = 64L << 20;

    static readonly Lock Gate = new();
    static int depth;
    static bool owned;
    static long allocatedAtStart;

    bool disposed;

    NativeCallGuard() { }

    /// <summary>Enters the guard (a safe point: call it where no libtorch call is in flight).</summary>
    public static NativeCallGuard Enter()
    {
        lock (Gate)
        {
            depth++;
            Renew();
        }
        return new NativeCallGuard();
    }

    /// <summary>
    /// Between batches: starts a fresh region if the current one is half used or was ended by a collection, so the
    /// collection this costs runs here rather than inside a libtorch call.
    /// </summary>
    public static void SafePoint()
    {
        lock (Gate)
        {
            if (depth > 0) Renew();
        }
    }

    static void Renew()
    {
        bool active = owned && GCSettings.LatencyMode == GCLatencyMode.NoGCRegion;
        if (active && GC.GetTotalAllocatedBytes() - allocatedAtStart < Allowance / 2) return;
        if (active) End();
        owned = false;
        if (GCSettings.LatencyMode == GCLatencyMode.NoGCRegion) return;   // somebody else's region
        try
        {
            owned = GC.TryStartNoGCRegion(Allowance);
        }
        catch (ArgumentOutOfRangeException)
        {
            owned = false;   // the allowance exceeds what this GC configuration can promise: run unguarded
        }
        catch (InvalidOperationException)
        {
            owned = false;
        }
        allocatedAtStart = GC.GetTotalAllocatedBytes();
    }

    static void End()
    {
        try
        {
            GC.EndNoGCRegion();
        }
        catch (InvalidOperationException)
        {
            // a collection ended the region already (its allowance was exceeded)
        }
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        lock (Gate)
        {
            if (--depth > 0) return;
            if (owned && GCSettings.LatencyMode == GCLatencyMode.NoGCRegion) End();
            owned = false;
        }
    }
}
