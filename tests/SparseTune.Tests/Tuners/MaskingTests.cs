using SparseTune.Tuners.Masking;
using Xunit;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Tests.Tuners;

public class MaskingTests
{
    static float[] Flat(Tensor t) => t.to_type(ScalarType.Float32).reshape(-1).data<float>().ToArray();

    [Fact]
    public void PruneCountIsTheOriginalsFloorOfSparsityTimesCount()
    {
        // Python int(numel * sparsity): 2304·0.9 = 2073.6 → 2073 pruned, 231 kept (48×48 bert-tiny query).
        Assert.Equal(2073, TopKMask.PruneCount(2304, 0.9));
        Assert.Equal(231, TopKMask.KeepCount(2304, 0.9));
        Assert.Equal(3, TopKMask.PruneCount(6, 0.5));
        Assert.Equal(29, TopKMask.PruneCount(100, 0.29)); // 0.29·100 = 28.999… in doubles: the guard keeps 29
        Assert.Equal(0, TopKMask.PruneCount(10, 0.09));
        Assert.Equal(10, TopKMask.PruneCount(10, 1.0));
    }

    [Fact]
    public void KeepMaskOfAHandMadeScoreWithTies()
    {
        // Ascending with ties broken by index (stable): 0 (idx 4), 1 (idx 0), then 2 at idx 1, 2, 3.
        // Pruning 3 removes idx 4, 0 and the first tie, idx 1: kept are idx 2, 3, 5.
        using var score = tensor(new float[] { 1, 2, 2, 2, 0, 3 }, [2, 3]);
        using var keep = TopKMask.Keep(score, 0.5);
        Assert.Equal(ScalarType.Bool, keep.dtype);
        Assert.Equal([2L, 3L], keep.shape);
        Assert.Equal(new float[] { 0, 0, 1, 1, 0, 1 }, Flat(keep));

        using var allZero = zeros(4, 5);
        using var keepZeros = TopKMask.Keep(allZero, 0.75); // all tied: prune idx 0..14, keep 15..19
        Assert.Equal(Enumerable.Range(0, 20).Select(i => i >= 15 ? 1f : 0f).ToArray(), Flat(keepZeros));
    }

    [Fact]
    public void KeepMaskHasTheExactCountAndTheHighestScores()
    {
        torch.random.manual_seed(11);
        using var score = randn(37, 23);
        foreach (double s in new[] { 0.0, 0.1, 0.5, 0.9, 0.97 })
        {
            using var keep = TopKMask.Keep(score, s);
            long expected = TopKMask.KeepCount(37 * 23, s);
            Assert.Equal(expected, keep.sum().item<long>());
            if (expected == 0 || expected == 37 * 23) continue;
            // Every kept score beats every pruned one.
            float minKept = score.masked_select(keep).min().item<float>();
            float maxPruned = score.masked_select(keep.logical_not()).max().item<float>();
            Assert.True(minKept > maxPruned, $"s={s}: kept {minKept} ≤ pruned {maxPruned}");
        }
    }

    [Fact]
    public void GroupedMaskPrunesEachRowBlockToTheSameSparsity()
    {
        // Block 0 (rows 0–1) has tiny scores, block 1 (rows 2–3) large ones: a matrix-wide top-k would keep only
        // block 1; per block, each keeps exactly its own share.
        using var score = cat([rand(2, 5), rand(2, 5) + 10], 0);
        using var keep = TopKMask.Keep(score, 0.7, groups: 2);
        using var perBlock = keep.view(2, 10).sum(1);
        Assert.Equal(new long[] { 3, 3 }, perBlock.data<long>().ToArray()); // 10 − ⌊7⌋ each
        Assert.Throws<ArgumentException>(() => TopKMask.Keep(score, 0.5, groups: 3));
    }

    [Fact]
    public void StraightThroughMaskPassesTheGradientToTheScoreUnchanged()
    {
        // L = Σ M ⊙ D, so ∂L/∂M = D, and the estimator hands exactly D to the score.
        float[] d = [1, 2, 3, 4, 5, 6];
        using var score = tensor(new float[] { 0.9f, 1.1f, 0.5f, 0.4f, 0.45f, 0.7f }, [2, 3]).requires_grad_(true);
        using var weights = tensor(d, [2, 3]);
        using var mask = StraightThroughMask.apply(score, 0.5);
        Assert.Equal(new float[] { 1, 1, 0, 0, 0, 1 }, Flat(mask));   // kept: 0.9, 1.1, 0.7
        using (var loss = (mask * weights).sum()) loss.backward();
        Assert.Equal(d, Flat(score.grad!));

        // With a cached mask: same forward value, same gradient; the cached tensor is not returned itself.
        using var score2 = score.detach().clone().requires_grad_(true);
        using var cached = TopKMask.Keep(score2, 0.5);
        using var mask2 = StraightThroughMask.apply(score2, cached);
        Assert.Equal(ScalarType.Float32, mask2.dtype);
        Assert.Equal(Flat(mask), Flat(mask2));
        using (var loss = (mask2 * weights * 2).sum()) loss.backward();
        Assert.Equal(d.Select(v => 2 * v).ToArray(), Flat(score2.grad!));
    }

    [Fact]
    public void CubicScheduleMatchesTheFormulaByHand()
    {
        // initial 0, final 0.9, warm-up 10, cool-down 30, total 100: the cubic runs over steps 10…70 (60 steps).
        var schedule = new CubicSparsitySchedule(0.0, 0.9, 10, 30, 100);
        Assert.Equal(0.0, schedule.At(0));
        Assert.Equal(0.0, schedule.At(10));                                   // t ≤ warm-up
        Assert.Equal(0.9 * 10621 / 216000, schedule.At(11), 12);             // 0.9·(1 − (59/60)³) = 0.044254166…
        Assert.Equal(0.7875, schedule.At(40), 12);                            // 0.9 − 0.9·0.5³
        Assert.Equal(0.8859375, schedule.At(55), 12);                         // 0.9 − 0.9·0.25³
        Assert.Equal(0.9, schedule.At(70), 12);                               // end of the cubic
        Assert.Equal(0.9, schedule.At(71));                                   // t > total − cool-down
        Assert.Equal(0.9, schedule.At(100));
        Assert.Equal(schedule, CubicSparsitySchedule.FromRatios(0.0, 0.9, 0.1, 0.3, 100));

        // Non-zero start and fractional warm-up (ratios of a total that is not a multiple of 10), as the scripts allow:
        // warm-up 0.1·25 = 2.5, cool-down 0.3·25 = 7.5 → cubic over 2.5…17.5 (15 steps).
        var fractional = CubicSparsitySchedule.FromRatios(0.2, 0.8, 0.1, 0.3, 25);
        Assert.Equal(0.2, fractional.At(2));
        Assert.Equal(0.8 - 0.6 * Math.Pow(1 - 0.5 / 15, 3), fractional.At(3), 12);
        Assert.Equal(0.8 - 0.6 * Math.Pow(0.5, 3), fractional.At(10), 12);
        Assert.Equal(0.8, fractional.At(18));
        Assert.Empty(fractional.Problems());
        Assert.NotEmpty(new CubicSparsitySchedule(0.5, 0.3, 0, 0, 10).Problems());
    }

    [Fact]
    public void ZeroPrunedWritesExactPositiveZerosAndCompactRoundTrips()
    {
        using var weight = tensor(new float[] { -1.5f, 2, -3, 4, -5, 6 }, [2, 3]);
        using var keep = tensor(new[] { true, false, false, true, false, true }, [2, 3]);
        MaskedWeights.ZeroPruned(weight, keep);
        float[] values = Flat(weight);
        Assert.Equal(new float[] { -1.5f, 0, 0, 4, 0, 6 }, values);
        Assert.All(new[] { 1, 2, 4 }, i => Assert.False(float.IsNegative(values[i]), $"entry {i} is −0"));
        Assert.Equal(3, MaskedWeights.CountZeros(weight));

        var (indices, kept) = MaskedWeights.Compact(weight, keep);
        Assert.Equal(new long[] { 0, 3, 5 }, indices.data<long>().ToArray());
        Assert.Equal(new float[] { -1.5f, 4, 6 }, Flat(kept));
        using var rebuilt = MaskedWeights.Expand(indices, kept, [2, 3]);
        Assert.Equal(values, Flat(rebuilt));
        indices.Dispose();
        kept.Dispose();
    }
}
