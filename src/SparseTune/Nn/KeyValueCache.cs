using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Nn;

/// <summary>
/// Keys and values of the positions a decoder has already processed, one (B, n_kv, capacity, hs) buffer per layer,
/// so that each decoding step runs only the new tokens through the model (O(T) work per token instead of O(T²)).
/// <para>
/// Slots 0 … <see cref="Length"/>-1 are filled. Rows may start with left padding: the cache remembers which slots
/// hold real tokens (masked out as keys) and how many real tokens each row has, so that a row's positions — and
/// therefore its output — do not depend on how much padding its batch needed (position = number of real tokens
/// before it, as Hugging Face's <c>generate</c> derives <c>position_ids</c> from the attention mask).
/// </para>
/// <para>
/// The buffers are allocated once for <c>capacity</c> slots (prompt + tokens to generate) and written in place:
/// appending by concatenation would copy the whole cache at every step. The cache owns its tensors; dispose it.
/// </para>
/// </summary>
public sealed class KeyValueCache : IDisposable
{
    readonly Tensor?[] keys, values;   // per layer (B, n_kv, capacity, hs), allocated at the first write
    Tensor realSlots;                  // (B, capacity) bool: slot holds a real token (not padding)
    Tensor realCount;                  // (B) int64: real tokens in slots [0, Length)

    /// <param name="layers">Decoder layers of the model.</param>
    /// <param name="batch">Rows (prompts, or beams).</param>
    /// <param name="capacity">Slots to reserve: the longest sequence this cache will hold (prompt + new tokens).</param>
    /// <param name="device">Where the buffers live: the model's device.</param>
    public KeyValueCache(int layers, long batch, long capacity, Device? device = null)
    {
        if (layers < 1) throw new ArgumentOutOfRangeException(nameof(layers), "a cache needs at least one layer");
        if (batch < 1 || capacity < 1) throw new ArgumentOutOfRangeException(nameof(capacity), "batch and capacity must be positive");
        keys = new Tensor?[layers];
        values = new Tensor?[layers];
        Capacity = capacity;
        realSlots = zeros(batch, capacity, dtype: ScalarType.Bool, device: device).DetachFromDisposeScope();
        realCount = zeros(batch, dtype: ScalarType.Int64, device: device).DetachFromDisposeScope();
    }

    /// <summary>Slots filled so far (the same for every row: padding occupies slots too).</summary>
    public long Length { get; private set; }

    /// <summary>Slots reserved.</summary>
    public long Capacity { get; }

    /// <summary>Decoder layers the cache serves.</summary>
    public int Layers => keys.Length;

    /// <summary>Rows.</summary>
    public long Batch => realSlots.shape[0];

    /// <summary>
    /// Starts a forward over T new slots: records which of them are real (<paramref name="attentionMask"/> (B, T),
    /// null: all real) and returns each new token's position (B, T) and the key mask over all slots so far
    /// (B, Length + T), true for real tokens. <see cref="Commit"/> makes the slots part of the cache afterwards.
    /// </summary>
    public (Tensor Positions, Tensor RealKeys) Begin(Tensor? attentionMask, long T)
    {
        long B = Batch;
        if (Length + T > Capacity)
            throw new InvalidOperationException($"the key/value cache holds {Capacity} positions; {Length} are used and {T} more were given");
        Device device = realSlots.device;
        Tensor real = attentionMask is null
            ? ones(B, T, dtype: ScalarType.Bool, device: device)
            : attentionMask.to(device).to_type(ScalarType.Bool);                            // (B, T)
        if (real.shape[0] != B || real.shape[1] != T)
            throw new ArgumentException($"attention mask is ({string.Join(", ", real.shape)}), the new tokens are ({B}, {T})");
        using (no_grad()) realSlots.narrow(1, Length, T).copy_(real);
        Tensor realInt = real.to_type(ScalarType.Int64);
        // Position of a real token = real tokens before it in its row; padding gets 0 (it is never attended to).
        Tensor positions = (realCount.unsqueeze(1) + realInt.cumsum(1) - 1).clamp_min(0) * realInt;  // (B, T)
        return (positions, realSlots.narrow(1, 0, Length + T));
    }

    /// <summary>
    /// Writes layer <paramref name="layer"/>'s keys and values for the new slots, k and v (B, n_kv, T, hs), and
    /// returns the keys and values of every slot so far, (B, n_kv, Length + T, hs) views into the buffers.
    /// </summary>
    public (Tensor Keys, Tensor Values) Update(int layer, Tensor k, Tensor v)
    {
        long T = k.shape[2];
        keys[layer] ??= NewBuffer(k);
        values[layer] ??= NewBuffer(v);
        using (no_grad())
        {
            keys[layer]!.narrow(2, Length, T).copy_(k);
            values[layer]!.narrow(2, Length, T).copy_(v);
        }
        return (keys[layer]!.narrow(2, 0, Length + T), values[layer]!.narrow(2, 0, Length + T));
    }

    Tensor NewBuffer(Tensor like) =>
        zeros([like.shape[0], like.shape[1], Capacity, like.shape[3]], dtype: like.dtype, device: like.device).DetachFromDisposeScope();

    /// <summary>Ends the forward that <see cref="Begin"/> started: the T new slots are now cached.</summary>
    public void Commit(long T)
    {
        using (no_grad())
        {
            Tensor added = realSlots.narrow(1, Length, T).to_type(ScalarType.Int64).sum(1);
            realCount.add_(added);
            added.Dispose();
        }
        Length += T;
    }

    /// <summary>
    /// Keeps rows <paramref name="rows"/> in this order (repeats allowed): beam search calls it after choosing
    /// which beam each new beam extends, and to expand one prompt row into its beams.
    /// </summary>
    public void Reorder(IReadOnlyList<long> rows)
    {
        using var scope = NewDisposeScope();
        Tensor index = tensor(rows.ToArray(), device: realSlots.device);
        Tensor Select(Tensor t)
        {
            Tensor selected = t.index_select(0, index).DetachFromDisposeScope();
            t.Dispose();
            return selected;
        }
        for (int layer = 0; layer < keys.Length; layer++)
        {
            if (keys[layer] is { } k) keys[layer] = Select(k);
            if (values[layer] is { } v) values[layer] = Select(v);
        }
        realSlots = Select(realSlots);
        realCount = Select(realCount);
    }

    public void Dispose()
    {
        foreach (Tensor? t in keys.Concat(values)) t?.Dispose();
        realSlots.Dispose();
        realCount.Dispose();
    }
}

/// <summary>One layer's view of a <see cref="KeyValueCache"/>: what a decoder attention module receives.</summary>
public readonly record struct CacheSlot(KeyValueCache Cache, int Layer)
{
    /// <summary>See <see cref="KeyValueCache.Update"/>.</summary>
    public (Tensor Keys, Tensor Values) Update(Tensor k, Tensor v) => Cache.Update(Layer, k, v);
}
