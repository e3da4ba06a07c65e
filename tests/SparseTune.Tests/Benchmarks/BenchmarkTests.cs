using SparseTune.Benchmarks;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Tuners;
using SparseTune.Tuners.Lora;
using SparseTune.Tuners.Pst;
using SparseTune.Tuners.Sift;
using Xunit;

namespace SparseTune.Tests.Benchmarks;

public class BenchmarkTests
{
    [Fact]
    public void TrainingFlopsFollowTheDocumentedFormula()
    {
        // gpt2-tiny: 2 layers, hidden 48, FFN 192, vocab 211, tied head.
        using var model = PretrainedModel.Load(Fixtures.Model("gpt2-tiny"));
        long perLayer = 48 * 144 + 48 * 48 + 48 * 192 + 192 * 48;   // c_attn, attn.c_proj, c_fc, mlp.c_proj
        long matmul = 2 * perLayer + 211 * 48;                      // + tied LM head
        int batch = 3, length = 10;
        double expected = (6.0 * matmul + 12.0 * 2 * 48 * length) * batch * length;
        Assert.Equal(expected, TrainingFlops.PerStep(model, batch, length));
    }

    /// <summary>
    /// bench profile on gpt2-tiny's shape: how often a step runs each operation, the GEMM FLOPs it is charged, and the
    /// sum over the counted rows only (the "before" alternatives are shown, not summed).
    /// </summary>
    [Fact]
    public void StepProfileCountsEachOperationOfAGpt2Step()
    {
        var config = (Gpt2Config)ModelConfig.Load(Fixtures.Model("gpt2-tiny"));   // 2 layers, hidden 48, FFN 192, vocab 211
        var ops = StepProfile.Run(config, batch: 2, sequenceLength: 8, repeats: 1);
        ProfiledOp Row(string start) => ops.Single(o => o.Name.TrimStart().StartsWith(start, StringComparison.Ordinal));
        long tokens = 2 * 8;
        Assert.Equal(2 * 2 + 1, Row("LayerNorm").PerStep);
        Assert.Equal(2 * 2, Row("residual dropout").PerStep);
        Assert.Equal(6.0 * tokens * 48 * 144, Row("c_attn linear").Flops);
        Assert.Equal(6.0 * tokens * 192 * 48, Row("mlp c_proj linear").Flops);
        Assert.Equal(6.0 * tokens * 48 * 211, Row("LM head + cross-entropy, blocked").Flops);
        Assert.False(Row("before: logits").Counted);
        Assert.All(ops, o => Assert.True(o.ForwardSeconds > 0, o.Name));
        Assert.Equal(2, Row("attention, blocked").PerStep);
        double counted = ops.Where(o => o.Counted).Sum(o => o.StepSeconds);
        Assert.True(counted < ops.Sum(o => o.StepSeconds));
        Assert.Equal(2 * (Row("attention, blocked").ForwardSeconds + Row("attention, blocked").BackwardSeconds), Row("attention, blocked").StepSeconds, 12);
    }

    [Fact]
    public void ClassificationHeadIsCountedButNoVocabularyProjection()
    {
        using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        long perLayer = 3 * 48 * 48 + 48 * 48 + 48 * 96 + 96 * 48;
        long matmul = 2 * perLayer + 48 * 48 + 48 * 3;              // + pooler and classifier
        Assert.Equal((6.0 * matmul + 12.0 * 2 * 48 * 8) * 8, TrainingFlops.PerStep(model, 1, 8));
    }

    [Fact]
    public void MatchedArmsGiveLoraTheTrainableCountOfSiftAtOnePercent()
    {
        // Demo shape: 4 layers, hidden 128, FFN 512 → 786,432 block weights; 1% = 7,865; LoRA q,v: 2·4·r·256 = 2,048·r → r = 4.
        var arms = AccuracyBenchmark.Arms(new AccuracyBudget(786_432, 128, 4), ["full", "lora", "sift", "pst"]);
        Assert.Equal(["full", "lora r=4", "sift 1%", "pst 50%", "pst 70%", "pst 90%"], arms.Select(a => a.Label).ToArray());
        Assert.Equal(4, Assert.IsType<LoraOptions>(arms[1].Options).Rank);
        Assert.Equal(0.01, Assert.IsType<SiftOptions>(arms[2].Options).SparseRate);
        Assert.Equal([0.5, 0.7, 0.9], arms.Skip(3).Select(a => Assert.IsType<PstOptions>(a.Options).FinalSparsity).ToArray());
    }

    [Fact]
    public void SampleStandardDeviationUsesNMinusOne()
    {
        Assert.Equal(1.0, AccuracyBenchmark.SampleStd([1.0, 2.0, 3.0]), 12);
        Assert.Equal(0.0, AccuracyBenchmark.SampleStd([5.0]));
    }

    [Fact]
    public void GemmPeakIsAPositiveMeasuredThroughput()
    {
        double gflops = GemmPeak.MeasureGflops(n: 256, repeats: 3);
        Assert.InRange(gflops, 0.1, 1e6);
    }
}
