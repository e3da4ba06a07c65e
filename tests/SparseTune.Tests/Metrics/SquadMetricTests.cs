using SparseTune.Data;
using SparseTune.Metrics;
using Xunit;

namespace SparseTune.Tests.Metrics;

/// <summary>Expected values worked out by hand with the official evaluate-v1.1.py / evaluate-v2.0.py rules.</summary>
public class SquadMetricTests
{
    [Theory]
    [InlineData("The  Quick, Brown-Fox!", "quick brownfox")] // punctuation goes before articles, so "-" joins words
    [InlineData("an apple a day", "apple day")]
    [InlineData("Theatre of Anne", "theatre of anne")]      // articles only as whole words
    [InlineData("A.B.C.", "abc")]                            // "a.b.c." loses its dots first: no article left
    [InlineData("  tabs\tand\nnewlines  ", "tabs and newlines")]
    [InlineData("The", "")]
    [InlineData("café «quoted»", "café «quoted»")]           // only ASCII punctuation is removed
    public void NormalizeAnswer_MatchesTheOfficialScript(string text, string expected) =>
        Assert.Equal(expected, SquadMetric.NormalizeAnswer(text));

    [Fact]
    public void ExactMatch_IgnoresCaseArticlesPunctuationAndSpacing()
    {
        Assert.Equal(1, SquadMetric.ExactMatch("Eiffel Tower", "the eiffel  tower."));
        Assert.Equal(0, SquadMetric.ExactMatch("Eiffel Towers", "the eiffel tower"));
    }

    [Fact]
    public void F1_CountsTokenOverlapAsAMultiset()
    {
        // [big, red, dog] vs [red, dog, barked]: 2 shared, P = R = 2/3.
        Assert.Equal(2.0 / 3, SquadMetric.F1("the big red dog", "a red dog barked", version2: false), 12);
        // [dog, dog, dog] vs [dog, cat]: Counter & keeps one dog; P = 1/3, R = 1/2, F1 = 0.4.
        Assert.Equal(0.4, SquadMetric.F1("dog dog dog", "dog cat", version2: false), 12);
        Assert.Equal(0, SquadMetric.F1("cat", "dog", version2: false));
    }

    [Fact]
    public void Score_TakesTheBestGold()
    {
        var (exact, f1) = SquadMetric.Score(["Paris", "the city of Paris"], "City of Paris!", version2: false);
        Assert.Equal((1.0, 1.0), (exact, f1));
        (exact, f1) = SquadMetric.Score(["in 1872", "1872"], "the year 1872", version2: false);
        Assert.Equal(0, exact);
        Assert.Equal(2 * (1.0 / 2) * 1.0 / (1.0 / 2 + 1.0), f1, 12); // vs "1872": P = 1/2, R = 1 → 2/3
    }

    [Fact]
    public void Version2_EmptyAnswersScoreOneOnlyWhenBothAreEmpty()
    {
        Assert.Equal((1.0, 1.0), SquadMetric.Score([], "", version2: true));
        Assert.Equal((1.0, 1.0), SquadMetric.Score([], "The.", version2: true)); // normalises to nothing
        Assert.Equal((0.0, 0.0), SquadMetric.Score([], "a dog", version2: true));
        Assert.Equal((0.0, 0.0), SquadMetric.Score(["dog"], "", version2: true));
        // v1.1 has no such rule: two empty token lists share nothing, so F1 is 0 though EM is 1.
        Assert.Equal((1.0, 0.0), SquadMetric.Score(["the"], "", version2: false));
    }

    static QaExample Question(string id, params string[] golds) =>
        new(id, "q?", "context", [.. golds.Select(g => new QaAnswer(g, 0))], golds.Length == 0);

    [Fact]
    public void Evaluate_V1_ReportsPercentAndScoresMissingPredictionsAsZero()
    {
        QaExample[] examples = [Question("a", "red dog"), Question("b", "Paris"), Question("c", "blue")];
        var predictions = new Dictionary<string, string> { ["a"] = "the red dog", ["b"] = "paris france" };
        var scores = SquadMetric.Evaluate(examples, predictions, version2: false);
        Assert.Equal(3, scores.Total);
        Assert.Equal(1, scores.MissingPredictions);
        Assert.Equal(100.0 / 3, scores.ExactMatch, 9);
        Assert.Equal(100.0 * (1 + 2.0 / 3) / 3, scores.F1, 9); // b: P = 1/2, R = 1 → 2/3
        Assert.Null(scores.HasAnsTotal);
    }

    [Fact]
    public void Evaluate_V2_SplitsHasAnsAndNoAns()
    {
        QaExample[] examples = [Question("a", "red dog"), Question("b"), Question("c"), Question("d", "blue")];
        var predictions = new Dictionary<string, string> { ["a"] = "red dog", ["b"] = "", ["c"] = "something", ["d"] = "" };
        var scores = SquadMetric.Evaluate(examples, predictions, version2: true);
        Assert.Equal(4, scores.Total);
        Assert.Equal(50, scores.ExactMatch, 9);
        Assert.Equal(50, scores.F1, 9);
        Assert.Equal<(int?, double?, double?)>((2, 50.0, 50.0), (scores.HasAnsTotal, scores.HasAnsExact, scores.HasAnsF1));
        Assert.Equal<(int?, double?, double?)>((2, 50.0, 50.0), (scores.NoAnsTotal, scores.NoAnsExact, scores.NoAnsF1));
    }
}
