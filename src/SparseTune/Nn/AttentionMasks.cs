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
    public static Tensor? CausalWithPadding(Tensor? attentionMask)
    {
        if (attentionMask is null) return null;
        long B = attentionMask.shape[0], T = attentionMask.shape[1];
        Tensor real = attentionMask.to_type(ScalarType.Bool);                          // (B, T)
        if (real.all().item<bool>()) return null;
        Tensor causal = ones(T, T, dtype: ScalarType.Bool, device: real.device).tril();               // (T, T)
        Tensor mask = causal & real.view(B, 1, 1, T);                                   // (B, 1, T, T)
        // A left-padded query sees no key at all; softmax over an empty row is NaN, and that NaN would leak
        // into real positions through V (0 · NaN). Letting each query see itself only changes padded rows.
        return mask | eye(T, dtype: ScalarType.Bool, device: real.device);
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
