using SparseTune.Cli.Commands;
using SparseTune.Data;
using SparseTune.Tokenization;
using Xunit;

namespace SparseTune.Tests.Data;

/// <summary>
/// <see cref="QaFeatures.Build"/> with <see cref="CharSpanEncoder"/> (one token per character, so positions can be
/// worked out by hand) and with the demo BERT tokenizer on the bundled long paragraph.
/// </summary>
public class SquadWindowTests
{
    static readonly CharSpanEncoder Chars = new();

    /// <summary>A one-token question: room = 10 − 1 − 3 = 6 context tokens, stride 2 → windows start 4 apart.</summary>
    static readonly QaFeatureOptions Small = new() { MaxLength = 10, MaxQueryLength = 2, DocStride = 2 };

    const string Context = "0123456789";

    static QaExample Question(string answer, string context = Context) =>
        new("id", "q", context, [new QaAnswer(answer, context.IndexOf(answer, StringComparison.Ordinal))], false);

    static string TextAt(QaFeature feature, string context, (int Start, int End) span) =>
        context[feature.Offsets[span.Start]!.Value.Start..feature.Offsets[span.End]!.Value.End];

    [Fact]
    public void Windows_OverlapByDocStride_AndStopAtTheContextEnd()
    {
        var features = QaFeatures.Build([Question("3")], Chars, Small);
        Assert.Equal(2, features.Count); // context chars [0, 6) and [4, 10)
        int[] q = [CharEncoder.Cls, 'q', CharEncoder.Sep];
        Assert.Equal([.. q, .. CharEncoder.Chars("012345"), CharEncoder.Sep], features[0].Example.InputIds);
        Assert.Equal([.. q, .. CharEncoder.Chars("456789"), CharEncoder.Sep], features[1].Example.InputIds);
        Assert.Equal([0, 0, 0, 1, 1, 1, 1, 1, 1, 1], features[1].Example.TokenTypeIds!);
        Assert.All(features, f => Assert.Equal((3, 9), (f.ContextStart, f.ContextEnd)));
        Assert.All(features, f => Assert.Equal(0, f.ExampleIndex));
        Assert.Equal([null, null, null, new CharSpan(4, 5), new CharSpan(5, 6), new CharSpan(6, 7), new CharSpan(7, 8),
            new CharSpan(8, 9), new CharSpan(9, 10), null], features[1].Offsets);
        Assert.All(features, f => Assert.Equal("id", f.Example.RowId));

        // Three windows when the context needs them: [0, 6), [4, 10), [8, 12).
        Assert.Equal(3, QaFeatures.Build([Question("3", "0123456789ab")], Chars, Small).Count);
        // A context that fits needs one window.
        Assert.Single(QaFeatures.Build([Question("3", "012345")], Chars, Small));
    }

    [Fact]
    public void AnswerStraddlingAWindowBoundary_IsLabelledOnlyInTheWindowHoldingItWhole()
    {
        var features = QaFeatures.Build([Question("567")], Chars, Small);
        Assert.Equal((0, 0), features[0].Example.AnswerSpan); // window 1 ends after "5"
        var span = features[1].Example.AnswerSpan;
        Assert.Equal((4, 6), span);                             // "5" is the window's second context token
        Assert.Equal("567", TextAt(features[1], Context, span));
    }

    [Fact]
    public void AnswerInTheOverlap_IsLabelledInBothWindows()
    {
        var features = QaFeatures.Build([Question("45")], Chars, Small);
        Assert.Equal((7, 8), features[0].Example.AnswerSpan);
        Assert.Equal((3, 4), features[1].Example.AnswerSpan);
        Assert.All(features, f => Assert.Equal("45", TextAt(f, Context, f.Example.AnswerSpan)));
    }

    [Fact]
    public void ImpossibleQuestions_PointAtCls_AndLongQuestionsAreCut()
    {
        var impossible = new QaExample("x", "q", Context, [], IsImpossible: true);
        Assert.All(QaFeatures.Build([impossible], Chars, Small), f => Assert.Equal((0, 0), f.Example.AnswerSpan));

        // "   abc": left-stripped, then cut to MaxQueryLength 2 tokens.
        var features = QaFeatures.Build([Question("3") with { Question = "   abc" }], Chars, Small);
        Assert.Equal([CharEncoder.Cls, 'a', 'b', CharEncoder.Sep], features[0].Example.InputIds.Take(4));
        Assert.Equal(10, features[0].Example.InputIds.Length);
    }

    [Theory]
    [InlineData(10, 2, 5, "DocStride 5 must be smaller than the 5 context tokens")]
    [InlineData(5, 2, 0, "leaves no room for context")]
    [InlineData(10, 2, -1, "DocStride must not be negative")]
    [InlineData(10, 0, 1, "MaxQueryLength must be at least 1")]
    public void BadOptions_AreRejectedWithTheReason(int maxLength, int maxQuery, int stride, string expected)
    {
        var options = new QaFeatureOptions { MaxLength = maxLength, MaxQueryLength = maxQuery, DocStride = stride };
        var error = Assert.Throws<ArgumentException>(() => QaFeatures.Build([Question("3")], Chars, options));
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void DemoBert_LongParagraph_NeedsSeveralWindows_AndEveryLabelSpansTheExactAnswer()
    {
        var data = SquadData.Load(SquadDataTests.DemoFile("train.json"));
        var examples = data.Examples.Where(e => e.Title == "Glass Harbour").ToList();
        var encoder = new TokenizerEncoder(TextTokenizer.FromFolder(Demo.ModelDirectory()));
        var features = QaFeatures.Build(examples, encoder, new QaFeatureOptions { MaxLength = 128, DocStride = 32 });

        Assert.All(features, f => Assert.InRange(f.Example.InputIds.Length, 1, 128));
        for (int i = 0; i < examples.Count; i++)
        {
            var windows = features.Where(f => f.ExampleIndex == i).ToList();
            Assert.True(windows.Count >= 2, $"question {i}: {windows.Count} window(s)");
            var labelled = windows.Where(f => f.Example.AnswerSpan != (0, 0)).ToList();
            Assert.NotEmpty(labelled);
            Assert.All(labelled, f => Assert.Equal(examples[i].Answers[0].Text, TextAt(f, examples[i].Context, f.Example.AnswerSpan)));
        }
        // "the island of Tarn" closes the paragraph: only the last window holds it.
        int tarn = examples.FindIndex(e => e.Answers[0].Text == "the island of Tarn");
        var tarnWindows = features.Where(f => f.ExampleIndex == tarn).ToList();
        Assert.Equal((0, 0), tarnWindows[0].Example.AnswerSpan);
        Assert.NotEqual((0, 0), tarnWindows[^1].Example.AnswerSpan);
    }
}
