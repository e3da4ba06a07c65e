using SparseTune.Nn;
using static TorchSharp.torch;

namespace SparseTune.Tuners.Dsee;

/// <summary>
/// The low-rank + sparse split of a pretrained weight that DSEE reads its sparse support Ω from: W ≈ U·V + S,
/// in the style of GreBsmo (Zhou &amp; Tao, "Greedy Bilateral Sketch, Completion &amp; Smoothing", AISTATS 2013),
/// as the original code runs it (METHODS.md, "DSEE"):
/// <code>
///   U = randn(out, 1); V = randn(1, in)
///   repeat `rounds` times:                          the rank of V grows by `rankStep` rows per round
///       S = 0
///       twice: U = Q of QR((W − S)·Vᵀ); V = Uᵀ(W − S); S = W − U·V; S[|S| &lt; threshold] = 0
///       E = W − U·V − S; V = [V; first rankStep rows of R of QR(E)]
/// </code>
/// This is the loop of VITA-Group/DSEE's latest run_glue.py (b455a42: 2 inner steps, 5 rows per round, 100
/// rounds; an earlier commit used 10 inner steps and 1 row per round). Reduced QR caps the rank at min(out, in)
/// by itself: once V has more rows than W, Q has out columns. The threshold is absolute (it depends on the
/// weight's scale: 0.01 in the original, for BERT's weights of typical size 0.04). The random start comes from
/// the caller's generator, so a seed fixes the result.
/// <para>
/// What the loop does, measured (DseeTests): on a low-rank matrix plus spikes it finds the spikes while its rank is
/// small, but the rank keeps growing and each isolated spike is a rank-1 matrix that the fit then absorbs; once the
/// rank reaches min(out, in), U·V = W and S = 0 exactly. On a 768×768 weight, 100 rounds end at rank 496 with S
/// non-zero in about a fifth of the entries (a N(0, 0.04²) matrix: 120,874 of 589,824). That is ≈ 280 GFLOP
/// (seven (768×k)·(k×768) products per round, k growing to 496, plus the QRs): 130 s measured on a 2-core machine
/// shared with other jobs (load ≈ 20), so BERT-base's 24 query/value matrices can take minutes to most of an hour
/// before the first step; <c>--decomposition-rounds</c> trades this for fidelity. On the test models (48×48) and the demo (128×128) the fit reaches full rank, S = 0,
/// and DSEE then takes Ω by |W| (<see cref="Support"/>'s fallback); the original has the same limit and there
/// selects every entry.
/// </para>
/// </summary>
public static class GreBsmo
{
    /// <summary>
    /// The factors of the last fit (U (out, k), V (k, in), before V grows for the next round) and the sparse part
    /// of <paramref name="weight"/> (out, in); new tensors, no autograd history.
    /// </summary>
    public static (Tensor U, Tensor V, Tensor Sparse) Decompose(Tensor weight, int rounds, double threshold, Generator generator, int rankStep = 5)
    {
        if (weight.dim() != 2) throw new ArgumentException($"expected a matrix, got [{string.Join(", ", weight.shape)}]", nameof(weight));
        if (rounds < 1) throw new ArgumentOutOfRangeException(nameof(rounds), rounds, "at least one round");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        Tensor w = weight.detach();
        long rows = w.shape[0], columns = w.shape[1];
        // Drawn on the CPU (where the seeded generator lives), so the support is the same on every device.
        Tensor u = randn(rows, 1, dtype: w.dtype, generator: generator).to(w.device);
        Tensor v = randn(1, columns, dtype: w.dtype, generator: generator).to(w.device);
        Tensor s = zeros_like(w), fitted = v;                              // fitted: V of the last fit, before it grows
        for (int round = 0; round < rounds; round++)
        {
            s = zeros_like(w);
            for (int inner = 0; inner < 2; inner++)
            {
                Tensor residual = w - s;                                   // W − S
                u = linalg.qr(residual.matmul(v.t())).Q;                   // (out, k)
                v = u.t().matmul(residual);                                // (k, in)
                s = w - u.matmul(v);
                s.masked_fill_(s.abs().lt(threshold), 0);
            }
            fitted = v;
            Tensor error = w - u.matmul(v) - s;
            Tensor r = linalg.qr(error).R;                                 // (min(out, in), in)
            v = cat([v, r.narrow(0, 0, Math.Min(rankStep, r.shape[0]))], 0);
            // Free the round's temporaries; the dispose scope would otherwise hold every round's tensors.
            scope.DisposeEverythingBut(w, u, v, fitted, s);
            if (round % 10 == 9) NativeHeap.Trim();   // growing tensors leave freed blocks malloc cannot reuse
        }
        return (u.MoveToOuterDisposeScope(), fitted.MoveToOuterDisposeScope(), s.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Ω: the flat row-major indices (int64, ascending) of exactly <paramref name="count"/> largest |S|. When S has
    /// fewer non-zeros than that (a fit that reached full rank leaves S = 0), the rest are the largest
    /// |<paramref name="fallback"/>| among S's zeros (DSEE passes W: the magnitude support), or without a fallback
    /// torch's top-k order among zeros. The original keeps every entry with |S| ≥ the (numel − N + 1)-th smallest
    /// |S|, which is more than N on ties (every entry when S = 0).
    /// </summary>
    public static Tensor Support(Tensor sparse, int count, Tensor? fallback = null)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        int k = (int)Math.Min(count, sparse.numel());
        Tensor magnitude = sparse.abs().reshape(-1);
        long nonZero = magnitude.ne(0).sum().item<long>();
        if (fallback is not null && nonZero < k)
        {
            // Non-zeros of S first (scores above every fallback score), then the largest |fallback| among the zeros.
            Tensor second = fallback.detach().abs().reshape(-1);
            Tensor score = magnitude.ne(0).to_type(second.dtype) * (second.max() + 1) + second.masked_fill(magnitude.ne(0), 0);
            return score.topk(k).indexes.sort().Values.MoveToOuterDisposeScope();
        }
        Tensor top = magnitude.topk(k).indexes;
        return top.sort().Values.MoveToOuterDisposeScope();
    }
}
