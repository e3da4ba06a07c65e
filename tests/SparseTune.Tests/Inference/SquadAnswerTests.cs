using SparseTune.Data;
using SparseTune.Inference;
using SparseTune.Tests.Data;
using Xunit;

namespace SparseTune.Tests.Inference;

/// <summary>
/// <see cref="QaAnswerExtractor"/> on hand-made logits over <see cref="CharSpanEncoder"/> features (one token per
/// character: context character c sits at token 3 + c − window start, after [CLS] q [SEP]).
/// </summary>
public class SquadAnswerTests
{
    static readonly CharSpanEncoder Chars = new();
    static readonly QaFeatureOptions Options = new() { MaxLength = 20, MaxQueryLength = 2, DocStride = 4 };

    const string Context = "the cat sat";

    static QaExample Question(string context = Context) => new("q1", "q", context, [], false);

    /// <summary>Logits of one feature: <paramref name="fill"/> everywhere, then the given positions.</summary>
    static float[] Logits(int length, params (int Position, float Value)[] set)
    {
        var logits = Enumerable.Repeat(-5f, length).ToArray();
        foreach (var (position, value) in set) logits[position] = value;
        return logits;
    }

    [Fact]
    public void PicksTheBestSpan_AndReturnsItsCharacters()
    {
        var examples = new[] { Question() };
        var features = QaFeatures.Build(examples, Chars, Options);
        int n = features[0].Example.InputIds.Length;
        // "cat" = characters 4..6 → tokens 7..9; a decoy end at "sat" scores lower.
        var start = Logits(n, (7, 3f));
        var end = Logits(n, (9, 2f), (13, 1f));
        var answer = QaAnswerExtractor.Extract(examples, features, [start], [end]).Single();
        Assert.Equal(("cat", 4, 7), (answer.Text, answer.Start, answer.End));
        Assert.Equal(5, answer.Score, 6);
        Assert.Equal("q1", answer.Id);
    }

    [Fact]
    public void SkipsQuestionAndSpecialTokens_AndEndsBeforeStarts()
    {
        var examples = new[] { Question() };
        var features = QaFeatures.Build(examples, Chars, Options);
        int n = features[0].Example.InputIds.Length;
        // The highest start is the question token (1), the highest end comes before the best context start.
        var start = Logits(n, (1, 9f), (11, 4f));
        var end = Logits(n, (0, 9f), (8, 8f), (13, 1f));
        var answer = QaAnswerExtractor.Extract(examples, features, [start], [end]).Single();
        Assert.Equal("sat", answer.Text); // tokens 11..13
    }

    [Fact]
    public void RespectsMaxAnswerLength()
    {
        var examples = new[] { Question() };
        var features = QaFeatures.Build(examples, Chars, Options);
        int n = features[0].Example.InputIds.Length;
        var start = Logits(n, (3, 4f), (7, 1f));
        var end = Logits(n, (13, 4f), (9, 0f));
        var all = QaAnswerExtractor.Extract(examples, features, [start], [end]).Single();
        Assert.Equal(Context, all.Text); // 11 tokens
        var limited = QaAnswerExtractor.Extract(examples, features, [start], [end], new QaExtractionOptions { MaxAnswerLength = 5 }).Single();
        Assert.Equal("cat", limited.Text); // 3..13 is too long; 7..9 is the best short span (3..9 has 7 tokens)
    }

    [Fact]
    public void Version2_PredictsNoAnswerWhenTheNullScoreWinsByMoreThanTheThreshold()
    {
        var examples = new[] { Question() };
        var features = QaFeatures.Build(examples, Chars, Options);
        int n = features[0].Example.InputIds.Length;
        var start = Logits(n, (0, 3f), (7, 2f));
        var end = Logits(n, (0, 2f), (9, 2f)); // null 5, best span 4

        var v1 = QaAnswerExtractor.Extract(examples, features, [start], [end]).Single();
        Assert.Equal("cat", v1.Text);

        var v2 = QaAnswerExtractor.Extract(examples, features, [start], [end], new QaExtractionOptions { Version2 = true }).Single();
        Assert.True(v2.IsNoAnswer);
        Assert.Equal((0, 0), (v2.Start, v2.End));
        Assert.Equal(5, v2.Score, 6);
        Assert.Equal(1, v2.NullScoreDiff, 6);

        var lenient = QaAnswerExtractor.Extract(examples, features, [start], [end],
            new QaExtractionOptions { Version2 = true, NullScoreThreshold = 1.5 }).Single();
        Assert.Equal("cat", lenient.Text);
    }

    [Fact]
    public void AcrossWindows_TheBestSpanWins_AndTheNullScoreIsTheLowest()
    {
        // Room 20 − 1 − 3 = 16 would hold the context; a longer context makes two windows: [0, 16), [12, 24).
        string context = "aaaa bbbb cccc dddd eeee";
        var examples = new[] { Question(context) };
        var features = QaFeatures.Build(examples, Chars, Options);
        Assert.Equal(2, features.Count);
        int n0 = features[0].Example.InputIds.Length, n1 = features[1].Example.InputIds.Length;
        // Window 1: "bbbb" (chars 5..8 → tokens 8..11) scores 4; window 2: "dddd" (chars 15..18 → tokens 6..9) scores 6.
        float[][] starts = [Logits(n0, (0, 4f), (8, 2f)), Logits(n1, (0, 1f), (6, 3f))];
        float[][] ends = [Logits(n0, (0, 4f), (11, 2f)), Logits(n1, (0, 1f), (9, 3f))];
        var answer = QaAnswerExtractor.Extract(examples, features, starts, ends, new QaExtractionOptions { Version2 = true }).Single();
        Assert.Equal(("dddd", 15, 19), (answer.Text, answer.Start, answer.End));
        Assert.Equal(2 - 6, answer.NullScoreDiff, 6); // null score = min(8, 2)
    }

    [Fact]
    public void LogitsPastTheFeatureAreIgnored_AndMismatchedCountsThrow()
    {
        var examples = new[] { Question() };
        var features = QaFeatures.Build(examples, Chars, Options);
        int n = features[0].Example.InputIds.Length;
        var start = Logits(n + 5, (n + 2, 50f), (7, 1f));
        var end = Logits(n + 5, (n + 3, 50f), (9, 1f));
        Assert.Equal("cat", QaAnswerExtractor.Extract(examples, features, [start], [end]).Single().Text);
        Assert.Throws<ArgumentException>(() => QaAnswerExtractor.Extract(examples, features, [start, start], [end]));
    }
}
