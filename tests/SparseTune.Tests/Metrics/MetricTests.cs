using SparseTune.Metrics;
using SparseTune.Training;
using Xunit;
using static TorchSharp.torch;

namespace SparseTune.Tests.Metrics;

/// <summary>Expected values worked out by hand (fractions in the comments), as sklearn / SciPy define the metrics.</summary>
public class MetricTests
{
    // Classes 0..3 (3 only predicted). Per-class F1: 0 → 2/5, 1 → 6/7, 2 → 2/3, 3 → 0.
    static readonly int[] Labels = [0, 0, 1, 1, 2, 2, 0, 1];
    static readonly int[] Predictions = [0, 1, 1, 1, 2, 0, 3, 1];

    [Fact]
    public void Accuracy_IsTheFractionCorrect() => Assert.Equal(0.625, Metric.Accuracy(Labels, Predictions));

    [Fact]
    public void MacroF1_AveragesOverLabelsUnionPredictions()
    {
        Assert.Equal(101.0 / 210, Metric.MacroF1(Labels, Predictions), 15); // (2/5 + 6/7 + 2/3 + 0) / 4
        Assert.Equal(0.48095238095238096, Metric.MacroF1(Labels, Predictions), 15);
        // Binary: F1(1) = 2·2/(4+1+1) = 2/3, F1(0) = 2/3.
        Assert.Equal(2.0 / 3, Metric.MacroF1([1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 0, 1]), 15);
    }

    [Fact]
    public void MatthewsCorrelation_MulticlassAsSklearn()
    {
        // c = 5, s = 8, t = (3,3,2,0), p = (2,4,1,1): (5·8 − 20) / √((64 − 22)(64 − 22)) = 20/42.
        Assert.Equal(0.47619047619047616, Metric.MatthewsCorrelation(Labels, Predictions), 15);
        // Binary: (4·6 − 18) / √((36 − 18)(36 − 18)) = 1/3.
        Assert.Equal(1.0 / 3, Metric.MatthewsCorrelation([1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 0, 1]), 15);
        Assert.Equal(1.0, Metric.MatthewsCorrelation([2, 0, 1], [2, 0, 1]), 15);
        // A constant prediction makes a denominator term 0: sklearn returns 0.
        Assert.Equal(0.0, Metric.MatthewsCorrelation([0, 1, 1], [1, 1, 1]));
    }

    [Fact]
    public void Pearson_MatchesTheFormula()
    {
        // x̄ = 3, ȳ = 3.4: Sxy = 12, Sxx = 10, Syy = 21.2 → 12 / √212.
        Assert.Equal(0.8241633836921342, Metric.Pearson([1, 2, 3, 4, 5], [2, 1, 4, 3, 7]), 14);
        Assert.Equal(-1.0, Metric.Pearson([1, 2, 3], [6, 4, 2]), 15);
        Assert.True(double.IsNaN(Metric.Pearson([1, 1, 1], [1, 2, 3])));
    }

    [Fact]
    public void Spearman_AveragesTiedRanks()
    {
        double[] a = [1, 2, 2, 3, 5, 4], b = [3, 1, 1, 2, 2, 6];
        Assert.Equal([1, 2.5, 2.5, 4, 6, 5], Metric.Ranks(a));
        Assert.Equal([5, 1.5, 1.5, 3.5, 3.5, 6], Metric.Ranks(b));
        // Pearson of those ranks: Sxy = 4, Sxx = 17, Syy = 16.5 → 4 / √280.5.
        Assert.Equal(0.23883257361061286, Metric.Spearman(a, b), 14);
        Assert.Equal(1.0, Metric.Spearman([1, 2, 3, 4], [1, 10, 100, 1000]), 15);
    }

    [Fact]
    public void Perplexity_IsExpOfTheMeanNll()
    {
        Assert.Equal(7.38905609893065, Metric.Perplexity(2.0), 13);
        Assert.Equal(7.0, Metric.Perplexity(Math.Log(7)), 12);
        Assert.Equal(1.0, Metric.Perplexity(0));
    }

    [Fact]
    public void MetricSet_NamesPerTask()
    {
        Assert.Equal(["accuracy", "macro_f1", "mcc"], MetricSet.For(TaskKind.Classification).Names);
        Assert.Equal(["pearson", "spearman"], MetricSet.For(TaskKind.Regression).Names);
        Assert.Equal(["perplexity", "loss"], MetricSet.For(TaskKind.CausalLM).Names);
    }

    [Fact]
    public void MetricSet_Classification_FromLogits()
    {
        var set = MetricSet.For(TaskKind.Classification);
        // Argmax of each row: 0, 1, 1, 1 | 2, 0, 3, 1 (two batches).
        using var logits1 = tensor(new float[] { 5, 0, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0, 5, 0, 0 }, [4, 4]);
        using var logits2 = tensor(new float[] { 0, 0, 5, 0, 5, 0, 0, 0, 0, 0, 0, 5, 0, 5, 0, 0 }, [4, 4]);
        using var labels1 = tensor(new long[] { 0, 0, 1, 1 });
        using var labels2 = tensor(new long[] { 2, 2, 0, 1 });
        set.AddBatch(logits1, labels1);
        set.AddBatch(logits2, labels2);
        var metrics = set.Compute();
        Assert.Equal(["accuracy", "macro_f1", "mcc"], metrics.Keys);
        Assert.Equal(0.625, metrics["accuracy"]);
        Assert.Equal(101.0 / 210, metrics["macro_f1"], 15);
        Assert.Equal(20.0 / 42, metrics["mcc"], 15);

        set.Reset();
        Assert.True(double.IsNaN(set.Compute()["accuracy"]));
    }

    [Fact]
    public void MetricSet_Regression_FromLogits()
    {
        var set = MetricSet.For(TaskKind.Regression);
        using var logits = tensor(new float[] { 2, 1, 4, 3, 7 }, [5, 1]);
        using var targets = tensor(new float[] { 1, 2, 3, 4, 5 });
        set.AddBatch(logits, targets);
        var metrics = set.Compute();
        Assert.Equal(0.8241633836921342, metrics["pearson"], 14);
        Assert.Equal(0.8, metrics["spearman"], 14); // ranks (2,1,4,3,5) vs (1..5): Σd² = 4 → 1 − 6·4/120
    }

    [Fact]
    public void MetricSet_CausalLM_ShiftsAndSkipsIgnoredLabels()
    {
        var set = MetricSet.For(TaskKind.CausalLM);
        // Uniform logits over 4 tokens: every counted token costs ln 4, so perplexity is 4.
        using var logits = zeros(2, 3, 4);
        // Position 0 is never a target (shift); -100 is skipped: 1 + 2 = 3 counted tokens.
        using var labels = tensor(new long[] { 1, -100, 2, 3, 0, 1 }, [2, 3]);
        set.AddBatch(logits, labels);
        var metrics = set.Compute();
        Assert.Equal(Math.Log(4), metrics["loss"], 6);
        Assert.Equal(4.0, metrics["perplexity"], 5);

        set.AddTokens(3 * Math.Log(16), 3); // pooled: mean NLL = (ln 4 + ln 16) / 2 = ln 8
        Assert.Equal(8.0, set.Compute()["perplexity"], 5);
        Assert.Throws<InvalidOperationException>(() => set.AddClasses([0], [0]));
    }
}
