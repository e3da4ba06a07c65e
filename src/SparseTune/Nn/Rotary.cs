using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Nn;

/// <summary>
/// Rotary position embedding (Su et al. 2021, RoFormer) in Hugging Face's "rotate half" layout: the head
/// dimension is split into halves (x₁, x₂) rather than interleaved pairs, and
/// x' = x · cos + rotate_half(x) · sin with rotate_half(x) = (-x₂, x₁), cos/sin = cat(θ, θ) for angles
/// θ = position · base^(-2i/d). Checkpoints trained with it (LLaMA, Mistral, Qwen2) have q_proj/k_proj rows
/// permuted for this layout, so the interleaved variant would not match them.
/// </summary>
/// <remarks>
/// cos/sin depend only on (length, device, dtype), so they are computed once per device and dtype and kept
/// here, outside the module tree: they never appear in state_dict (Hugging Face's inv_freq is a
/// non-persistent buffer for the same reason).
/// </remarks>
public sealed class RotaryEmbedding : IDisposable
{
    readonly int headDim;
    readonly double theta;
    readonly long minLength;
    readonly Dictionary<(DeviceType, int, ScalarType), (Tensor Cos, Tensor Sin)> cache = [];
    readonly Lock gate = new();

    /// <param name="headDim">Per-head size hs (even).</param>
    /// <param name="theta">rope_theta.</param>
    /// <param name="maxPositions">Length to precompute; longer inputs grow the cache.</param>
    public RotaryEmbedding(int headDim, double theta, long maxPositions)
    {
        if (headDim % 2 != 0) throw new ArgumentException($"rotary head size must be even, got {headDim}", nameof(headDim));
        this.headDim = headDim;
        this.theta = theta;
        minLength = maxPositions;
    }

    /// <summary>
    /// cos and sin (T, hs) for positions 0..T-1. Views into the cache: they belong to the current dispose
    /// scope as views, while the cached storage stays alive until <see cref="Dispose"/>.
    /// </summary>
    public (Tensor Cos, Tensor Sin) CosSin(long T, Device device, ScalarType dtype)
    {
        var key = (device.type, device.index, dtype);
        lock (gate)
        {
            if (!cache.TryGetValue(key, out var cached) || cached.Cos.shape[0] < T)
            {
                if (cached.Cos is not null) { cached.Cos.Dispose(); cached.Sin.Dispose(); }
                cached = Compute(Math.Max(T, minLength), device, dtype);
                cache[key] = cached;
            }
            return (cached.Cos.narrow(0, 0, T), cached.Sin.narrow(0, 0, T));
        }
    }

    /// <summary>
    /// cos and sin (B, 1, T, hs) for per-row positions (B, T) — left-padded batches and cached decoding, where
    /// a token's position is not its slot — shaped to broadcast over the heads of (B, nh, T, hs).
    /// </summary>
    public (Tensor Cos, Tensor Sin) CosSinAt(Tensor positions, ScalarType dtype)
    {
        long B = positions.shape[0], T = positions.shape[1];
        long needed = positions.numel() == 0 ? 1 : positions.max().item<long>() + 1;
        var (cos, sin) = CosSin(needed, positions.device, dtype);                            // 2 × (needed, hs)
        Tensor flat = positions.reshape(-1);
        return (cos.index_select(0, flat).view(B, 1, T, headDim), sin.index_select(0, flat).view(B, 1, T, headDim));
    }

    (Tensor Cos, Tensor Sin) Compute(long length, Device device, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // As Hugging Face: inverse frequencies and angles in float32, cast to the activations' dtype at the end.
        Tensor exponents = arange(0, headDim, 2, dtype: ScalarType.Int64, device: device).to_type(ScalarType.Float32) / headDim;
        Tensor invFreq = tensor((float)theta, device: device).pow(exponents).reciprocal();                                  // (hs/2)
        Tensor positions = arange(length, dtype: ScalarType.Float32, device: device);        // (T)
        Tensor angles = outer(positions, invFreq);                                            // (T, hs/2)
        Tensor emb = cat([angles, angles], -1);                                               // (T, hs)
        Tensor cos = emb.cos().to_type(dtype), sin = emb.sin().to_type(dtype);
        return (cos.DetachFromDisposeScope(), sin.DetachFromDisposeScope());
    }

    /// <summary>Rotates x (B, nh, T, hs) by cos/sin (T, hs) or (B, 1, T, hs).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin) => x * cos + RotateHalf(x) * sin;

    static Tensor RotateHalf(Tensor x)
    {
        Tensor[] halves = x.chunk(2, -1);                                                     // 2 × (B, nh, T, hs/2)
        return cat([halves[1].neg(), halves[0]], -1);                                         // (B, nh, T, hs)
    }

    public void Dispose()
    {
        lock (gate)
        {
            foreach (var (cos, sin) in cache.Values) { cos.Dispose(); sin.Dispose(); }
            cache.Clear();
        }
    }
}
