using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Nn;

/// <summary>
/// The causal + key-padding mask and last-token pooling that the decoder families (GPT-2, LLaMA) share.
/// </summary>
public static class AttentionMasks
{
    /// <summary>
    /// A boolean <c>scaled_dot_product_attention</c> mask (B, 1, T, T), true where query i may attend key j:
    /// j ≤ i and key j is a real token. Null when there is no padding: the caller then passes
    /// <c>is_causal</c>, which lets SDPA pick its fused kernels.
    /// </summary>
    /// <param name="attentionMask">(B, T), 1 for real tokens and 0 for padding; null means all real.</param>
    public static Tensor? CausalWithPadding(Tensor? attentionMask) =>
        attentionMask is null ? null : Decoder(attentionMask, 0, attentionMask.shape[1], null, attentionMask.device);

    /// <summary>
    /// The mask for T queries at slots past … past+T-1 over keys at slots 0 … past+T-1, for decoding with a
    /// <see cref="KeyValueCache"/> and for sliding-window attention: a boolean (B or 1, 1, T, past+T), true where
    /// query i may attend key j — j ≤ i, key j real (<paramref name="realKeys"/> (B, past+T); null: all real) and,
    /// with a <paramref name="slidingWindow"/> W, i - j &lt; W (Mistral's window: each query sees itself and the W-1
    /// keys before it, Hugging Face's <c>kv_idx &gt; q_idx - sliding_window</c>). Slot distances equal position
    /// distances between real tokens because a row's real tokens are contiguous (padding only precedes or follows them). Null when plain causal
    /// attention over the T tokens is exactly that (no past, no padding, no window that bites): the caller then
    /// passes <c>is_causal</c>.
    /// </summary>
    public static Tensor? Decoder(Tensor? realKeys, long past, long T, int? slidingWindow, Device device)
    {
        long S = past + T;
        bool windowBites = slidingWindow is int w && S > w;
        if (past == 0 && !windowBites && (realKeys is null || realKeys.all().item<bool>())) return null;
        Tensor query = arange(past, S, dtype: ScalarType.Int64, device: device).view(T, 1);     // (T, 1)
        Tensor key = arange(S, dtype: ScalarType.Int64, device: device).view(1, S);             // (1, S)
        Tensor allowed = key <= query;                                                            // (T, S)
        if (windowBites) allowed = allowed & (key > query - slidingWindow!.Value);
        Tensor mask = allowed.view(1, 1, T, S);
        if (realKeys is not null) mask = mask & realKeys.to(device).to_type(ScalarType.Bool).view(realKeys.shape[0], 1, 1, S);
        // As in CausalWithPadding: a padded query that sees no key would give NaN; it may always see itself.
        return mask | (key == query).view(1, 1, T, S);
    }

    /// <summary>
    /// The index of each row's last real token (B): Hugging Face's decoder classifiers pool there. Equals
    /// sum(mask) - 1 for right padding and T - 1 for left padding; T - 1 everywhere without a mask.
    /// </summary>
    public static Tensor LastTokenIndex(Tensor? attentionMask, long B, long T, Device device)
    {
        if (attentionMask is null) return full([B], T - 1, dtype: ScalarType.Int64, device: device);
        Tensor positions = arange(T, dtype: ScalarType.Int64, device: device);                        // (T)
        return (positions * attentionMask.to_type(ScalarType.Int64)).argmax(-1);         // (B)
    }

    /// <summary>hidden (B, T, C) at each row's last real token: (B, C).</summary>
    public static Tensor PoolLastToken(Tensor hidden, Tensor? attentionMask)
    {
        long B = hidden.shape[0], T = hidden.shape[1];
        Tensor rows = arange(B, dtype: ScalarType.Int64, device: hidden.device);
        Tensor last = LastTokenIndex(attentionMask, B, T, hidden.device);
        return hidden.index(TensorIndex.Tensor(rows), TensorIndex.Tensor(last));       // (B, C)
    }
}
