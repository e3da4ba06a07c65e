using static TorchSharp.torch;

namespace SparseTune.Tuners.Masking;

/// <summary>
/// Unstructured top-k masks: keep the highest-scoring entries of a matrix, prune the rest. Shared by the
/// sparse-training methods (PST now; DSEE and Light-PEFT reuse it).
/// <para>
/// Count rule (alibaba/AliceMind S4/PST/pst/sparse.py, SparseBinarizer): a matrix of n entries at sparsity s
/// prunes ⌊s·n⌋ entries (Python's <c>int(numel * sparsity)</c>) and keeps n − ⌊s·n⌋. A 1e-6 guard keeps
/// float error in s·n (0.29·100 = 28.999…) from dropping one entry.
/// </para>
/// <para>
/// Ties: the original prunes the first ⌊s·n⌋ entries of an ascending argsort, whose order among equal scores
/// is unspecified. Here it is pinned to a stable ascending sort: among equal scores at the threshold the
/// lower flat (row-major) index is pruned first, so the same scores always give the same mask.
/// </para>
/// <para>
/// The original picks the top-k per layer (each SparseLinear its own), not globally across layers, so there is
/// no global variant here. <c>groups</c> splits a matrix into equal consecutive row blocks that are masked
/// independently, for fused projections (GPT-2's c_attn holds q, k, v, which the original prunes as three
/// separate nn.Linear layers).
/// </para>
/// </summary>
public static class TopKMask
{
    /// <summary>Entries pruned from <paramref name="count"/> at <paramref name="sparsity"/>: ⌊s·n⌋.</summary>
    public static long PruneCount(long count, double sparsity)
    {
        if (!(sparsity >= 0 && sparsity <= 1)) throw new ArgumentOutOfRangeException(nameof(sparsity), sparsity, "sparsity must be in [0, 1]");
        return Math.Min(count, (long)Math.Floor(sparsity * count + 1e-6));
    }

    /// <summary>Entries kept: n − ⌊s·n⌋.</summary>
    public static long KeepCount(long count, double sparsity) => count - PruneCount(count, sparsity);

    /// <summary>
    /// A boolean mask shaped like <paramref name="score"/>, true for the <see cref="KeepCount"/> highest scores
    /// of each of <paramref name="groups"/> equal consecutive blocks (row blocks of a matrix). Scores must be
    /// finite. No autograd history. Temporaries: the selection's own working copy and boolean masks, never a
    /// second float copy of the scores held by the caller.
    /// </summary>
    public static Tensor Keep(Tensor score, double sparsity, int groups = 1)
    {
        long numel = score.numel();
        if (groups < 1 || numel % groups != 0 || (score.dim() > 0 && score.shape[0] % groups != 0))
            throw new ArgumentException($"cannot split a [{string.Join(", ", score.shape)}] score into {groups} equal row blocks", nameof(groups));
        long n = numel / groups;
        long prune = PruneCount(n, sparsity);
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        if (prune == 0) return ones(score.shape, dtype: ScalarType.Bool, device: score.device).MoveToOuterDisposeScope();
        if (prune == n) return zeros(score.shape, dtype: ScalarType.Bool, device: score.device).MoveToOuterDisposeScope();

        Tensor flat = score.detach().reshape(groups, n);                          // (G, n)
        Tensor threshold = flat.kthvalue(prune, 1, keepdim: true).values;         // (G, 1): the prune-th smallest
        Tensor keep = flat.gt(threshold);                                         // (G, n)
        long want = n - prune;
        long[] kept = keep.sum(1).cpu().data<long>().ToArray();
        for (int g = 0; g < groups; g++)
        {
            // Entries equal to the threshold: the lower indices are pruned, the last `missing` kept.
            long missing = want - kept[g];
            if (missing <= 0) continue;
            Tensor ties = flat[g].eq(threshold[g]).nonzero().view(-1);           // ascending flat indices
            keep[g].index_fill_(0, ties.narrow(0, ties.shape[0] - missing, missing), true);
        }
        return keep.view(score.shape).MoveToOuterDisposeScope();
    }
}
