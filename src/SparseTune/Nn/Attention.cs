using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Nn;

/// <summary>
/// softmax(q kᵀ / √hs + mask) v with dropout on the attention probabilities, as every model's attention computes it.
/// Without dropout this is libtorch's <c>scaled_dot_product_attention</c> (its fused CPU kernel). libtorch's fused
/// kernel does not take dropout, so with dropout (training GPT-2 and BERT: attn_pdrop 0.1) SDPA falls back to its
/// unfused path, which keeps four (B, nh, T, S) tensors per layer for backward (scores, probabilities, the dropout
/// mask and the dropped probabilities: 150 MB a layer for GPT-2 at 4 × 512). Here that case runs
/// <see cref="DropoutAttentionFunction"/> instead: a few heads at a time, keeping only the dropout mask (as bools) and
/// the output, and recomputing the probabilities in backward (FlashAttention's recomputation, with the mask stored
/// instead of regenerated).
/// </summary>
public static class Attention
{
    /// <param name="q">(B, nh, T, hs)</param>
    /// <param name="k">(B, nh, S, hs)</param>
    /// <param name="v">(B, nh, S, hs)</param>
    /// <param name="mask">boolean (true = may attend) or additive, broadcastable to (B, nh, T, S); null: none (or causal).</param>
    /// <param name="causal">query i sees keys j ≤ i (only when <paramref name="mask"/> is null).</param>
    /// <param name="dropout">probability of dropping an attention probability (0 outside training).</param>
    /// <param name="chunkElements">score values per block of heads with dropout (tests make blocks small).</param>
    /// <returns>(B, nh, T, hs)</returns>
    public static Tensor Compute(Tensor q, Tensor k, Tensor v, Tensor? mask, bool causal, double dropout,
        long chunkElements = DropoutAttentionFunction.ChunkElements)
    {
        if (dropout <= 0) return F.scaled_dot_product_attention(q, k, v, mask, is_casual: causal && mask is null);
        // The same code (and the same random draws) with or without autograd, so that activation checkpointing's
        // replay of a block sees the dropout masks of its first forward.
        using var scope = NewDisposeScope();
        Tensor keep = DropoutAttentionFunction.DrawKeepMask(q.shape[0], q.shape[1], q.shape[2], k.shape[2], dropout, q.device);
        return Compute(q, k, v, mask, causal, dropout, keep, chunkElements).MoveToOuterDisposeScope();
    }

    /// <summary>Attention with dropout where the kept probabilities are given: <paramref name="keep"/> (B, nh, T, S) boolean.</summary>
    public static Tensor Compute(Tensor q, Tensor k, Tensor v, Tensor? mask, bool causal, double dropout, Tensor keep,
        long chunkElements = DropoutAttentionFunction.ChunkElements)
    {
        if (is_grad_enabled() && (q.requires_grad || k.requires_grad || v.requires_grad))
            return DropoutAttentionFunction.apply([q, k, v, mask!, causal, dropout, keep, chunkElements]);
        using var scope = NewDisposeScope();
        return DropoutAttentionFunction.Forward(q, k, v, mask, causal, dropout, keep, chunkElements).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Attention with dropout, memory-efficient: forward and backward run a block of heads of one batch row at a time
/// (scores of about <see cref="ChunkElements"/> values), so no (B, nh, T, S) float tensor is ever whole. Saved for
/// backward: q, k, v, the mask, the boolean keep mask (B, nh, T, S) and the output; backward recomputes the
/// probabilities (one extra q kᵀ product and softmax) and uses dS = P ⊙ (dP − D) with D = rowsum(dY ⊙ Y), which
/// equals rowsum(dP ⊙ P) with dropout too (FlashAttention's identity). The scale 1/√hs and 1/(1 − p) are applied to
/// the small (T, hs) operands, not to the (T, S) ones. Scores and softmax are float32 whatever q's type (bf16 under
/// mixed precision: the three products run in bf16). Every query row must see at least one key (the models' masks
/// always let a token see itself), as for libtorch's SDPA.
/// Inputs: q, k, v, mask (null), causal, dropout p, keep mask (from <see cref="DrawKeepMask"/>), score values per block.
/// </summary>
public sealed class DropoutAttentionFunction : SingleTensorFunction<DropoutAttentionFunction>
{
    /// <summary>Score values per block of heads (16 MB of float32).</summary>
    public const long ChunkElements = 4L << 20;

    public override string Name => "DropoutAttention";

    /// <summary>
    /// (B, nh, T, S) boolean, true where the probability is kept (with probability 1 − p), drawn from the global
    /// generator by libtorch's bernoulli_. libtorch's CPU generator draws one number per element on one thread (about
    /// 10 ns each here, the same whether drawn as bool, float or 64-bit integers split into lanes): at GPT-2's
    /// 4 × 12 × 512 × 512 this is half of attention's forward, as it is inside SDPA's own dropout.
    /// </summary>
    public static Tensor DrawKeepMask(long B, long heads, long T, long S, double dropout, Device device) =>
        empty([B, heads, T, S], dtype: ScalarType.Bool, device: device).bernoulli_(1 - dropout);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (q, k, v, mask) = ((Tensor)vars[0], (Tensor)vars[1], (Tensor)vars[2], vars[3] as Tensor);
        var (causal, dropout, keep, chunkElements) = ((bool)vars[4], (double)vars[5], (Tensor)vars[6], (long)vars[7]);
        using var scope = NewDisposeScope();
        Tensor output = Forward(q, k, v, mask, causal, dropout, keep, chunkElements);
        // TorchSharp makes the saved variables after forward returns: what this scope made must outlive it.
        Tensor savedOutput = output.detach().MoveToOuterDisposeScope();
        ctx.save_for_backward(mask is null ? [q, k, v, keep, savedOutput] : [q, k, v, keep, savedOutput, mask]);
        ctx.save_data("causal", causal);
        ctx.save_data("dropout", dropout);
        ctx.save_data("chunk", chunkElements);
        ctx.save_data("needs", new[] { q.requires_grad, k.requires_grad, v.requires_grad });
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var (q, k, v, keep, output) = (saved[0], saved[1], saved[2], saved[3], saved[4]);
        Tensor? mask = saved.Count > 5 ? saved[5] : null;
        bool causal = (bool)ctx.get_data("causal");
        double dropout = (double)ctx.get_data("dropout");
        long chunkElements = (long)ctx.get_data("chunk");
        var needs = (bool[])ctx.get_data("needs");
        using var scope = NewDisposeScope();
        Tensor gradQ = empty_like(q), gradK = empty_like(k), gradV = empty_like(v);
        double scale = 1.0 / Math.Sqrt(q.shape[^1]);
        Tensor? hidden = HiddenKeys(mask, causal, q.shape[2], k.shape[2], q.device);
        Tensor rowDot = (gradOutput.to_type(ScalarType.Float32) * output.to_type(ScalarType.Float32)).sum(-1, keepdim: true);   // (B, nh, T, 1): D
        Tensor gradKept = gradOutput.mul(1.0 / (1.0 - dropout)).to_type(q.dtype);                                             // (B, nh, T, hs)
        foreach (var (b, h0, h1) in Blocks(q, k, chunkElements))
        {
            using var step = NewDisposeScope();
            Tensor qs = Slice(q, b, h0, h1).mul(scale);                                              // (h, T, hs)
            var (kc, vc, keepc) = (Slice(k, b, h0, h1), Slice(v, b, h0, h1), Slice(keep, b, h0, h1));
            Tensor gradY = Slice(gradKept, b, h0, h1);                                               // (h, T, hs): dY / (1 − p)
            Tensor p = Probabilities(qs, kc, hidden, b, h0, h1);                                     // (h, T, S)
            Slice(gradV, b, h0, h1).copy_((p * keepc).to_type(v.dtype).transpose(-2, -1).matmul(gradY));   // (h, S, hs)
            Tensor gradScores = gradY.matmul(vc.transpose(-2, -1)).to_type(ScalarType.Float32)       // (h, T, S): dP
                .mul_(keepc).sub_(Slice(rowDot, b, h0, h1)).mul_(p).to_type(q.dtype);                // P ⊙ (dP − D)
            Slice(gradQ, b, h0, h1).copy_(gradScores.matmul(kc).mul_(scale));                        // (h, T, hs)
            Slice(gradK, b, h0, h1).copy_(gradScores.transpose(-2, -1).matmul(qs));                  // (h, S, hs)
        }
        var grads = new List<Tensor> { needs[0] ? gradQ : null!, needs[1] ? gradK : null!, needs[2] ? gradV : null!, null!, null!, null!, null!, null! };
        foreach (Tensor? g in grads) g?.MoveToOuterDisposeScope();
        return grads;
    }

    /// <summary>The output (B, nh, T, hs) in q's type; a new tensor.</summary>
    public static Tensor Forward(Tensor q, Tensor k, Tensor v, Tensor? mask, bool causal, double dropout, Tensor keep,
        long chunkElements = ChunkElements)
    {
        using var scope = NewDisposeScope();
        long B = q.shape[0], heads = q.shape[1], T = q.shape[2];
        Tensor output = empty([B, heads, T, v.shape[^1]], dtype: q.dtype, device: q.device);
        double scale = 1.0 / Math.Sqrt(q.shape[^1]);
        Tensor? hidden = HiddenKeys(mask, causal, T, k.shape[2], q.device);
        foreach (var (b, h0, h1) in Blocks(q, k, chunkElements))
        {
            using var step = NewDisposeScope();
            Tensor kept = Probabilities(Slice(q, b, h0, h1).mul(scale), Slice(k, b, h0, h1), hidden, b, h0, h1)
                .mul_(Slice(keep, b, h0, h1));                                                                    // (h, T, S)
            Slice(output, b, h0, h1).copy_(kept.to_type(v.dtype).matmul(Slice(v, b, h0, h1)).mul_(1.0 / (1.0 - dropout)));   // (h, T, hs)
        }
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>(batch row, first head, end head) blocks of about <paramref name="chunkElements"/> score values.</summary>
    static IEnumerable<(long Row, long From, long To)> Blocks(Tensor q, Tensor k, long chunkElements)
    {
        long B = q.shape[0], heads = q.shape[1];
        long perBlock = Math.Clamp(chunkElements / (q.shape[2] * k.shape[2]), 1, heads);
        for (long b = 0; b < B; b++)
            for (long h = 0; h < heads; h += perBlock)
                yield return (b, h, Math.Min(heads, h + perBlock));
    }

    /// <summary>t[b, h0:h1] for a (B, nh, …) tensor; a broadcast dimension of size 1 (a mask's) is kept as it is.</summary>
    static Tensor Slice(Tensor t, long b, long h0, long h1)
    {
        Tensor row = t.select(0, t.shape[0] == 1 ? 0 : b);
        return row.shape[0] == 1 ? row : row.narrow(0, h0, h1 - h0);
    }

    /// <summary>
    /// What the scores get, built once per call: a boolean "hidden" mask (true where a query may not see the key; the
    /// negated boolean mask, or (T, S) upper triangle for causal), the additive mask itself, or null.
    /// </summary>
    static Tensor? HiddenKeys(Tensor? mask, bool causal, long T, long S, Device device) => mask switch
    {
        { dtype: ScalarType.Bool } => mask.logical_not(),
        not null => mask,
        null when causal => ones([T, S], dtype: ScalarType.Bool, device: device).triu_(S - T + 1),
        _ => null,
    };

    /// <summary>softmax(qs kᵀ + mask) in float32 for one block, qs already scaled: (h, T, S).</summary>
    static Tensor Probabilities(Tensor qs, Tensor k, Tensor? hidden, long b, long h0, long h1)
    {
        Tensor scores = qs.matmul(k.transpose(-2, -1)).to_type(ScalarType.Float32);                // (h, T, S)
        if (hidden is not null)
        {
            Tensor m = hidden.dim() == 4 ? Slice(hidden, b, h0, h1) : hidden;                        // (h or 1, T or 1, S)
            if (m.dtype == ScalarType.Bool) scores.masked_fill_(m, double.NegativeInfinity);
            else scores.add_(m);
        }
        return scores.softmax(-1);
    }
}
