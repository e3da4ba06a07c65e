using SparseTune.Data;
using SparseTune.Tests.Support;
using SparseTune.Training;
using Xunit;

namespace SparseTune.Tests.Data;

/// <summary>Multiple-choice JSONL: reading and bad rows, encoder pairs, decoder prompts and the (B, choices, T) batches.</summary>
public sealed class MultipleChoiceDataTests : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("mc");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    string File(params string[] lines)
    {
        string path = Path.Combine(temp, $"mc{Guid.NewGuid():N}.jsonl");
        System.IO.File.WriteAllLines(path, lines);
        return path;
    }

    [Fact]
    public void Read_TakesIndexOrLetterLabels_OptionalContextAndIds()
    {
        string path = File(
            """{"question": "q1", "choices": ["a", "b", "c"], "label": 2}""",
            "",
            """{"id": "x", "context": "ctx", "question": "q2", "choices": ["a", "b"], "label": "B"}""",
            """{"question": "q3", "choices": ["a", "b"], "label": "0"}""");
        var items = MultipleChoiceData.Read(path).Items;
        Assert.Equal(3, items.Count);
        Assert.Equal(("1", (string?)null, 2), (items[0].Id, items[0].Context, items[0].Label));
        Assert.Equal(("x", "ctx", 1, 3), (items[1].Id, items[1].Context, items[1].Label, items[1].SourceLine));
        Assert.Equal(0, items[2].Label);
    }

    [Theory]
    [InlineData("""{"question": "q", "choices": ["a"], "label": 0}""", "1 choice(s): a question needs at least two")]
    [InlineData("""{"question": "q", "choices": ["a", "b"], "label": 2}""", "label 2 names no choice (there are 2)")]
    [InlineData("""{"question": "q", "choices": ["a", "b"], "label": "E"}""", "label E names no choice (there are 2)")]
    [InlineData("""{"question": "q", "choices": ["a", " "], "label": 0}""", "choice 1 is empty")]
    [InlineData("""{"question": "", "choices": ["a", "b"], "label": 0}""", "missing or empty 'question'")]
    [InlineData("""{"question": "q", "choices": "a, b", "label": 0}""", "'choices' must be a list of strings")]
    [InlineData("""{"question": "q", "choices": ["a", "b"]}""", "missing 'label'")]
    [InlineData("""{"question": "q", "choices": ["a", "b"], "label": "maybe"}""", "label 'maybe' is neither a choice index (0…1) nor a letter")]
    [InlineData("""{"question": "q",""", "invalid JSON")]
    public void Read_ABadRowNamesFileLineAndProblem_OrIsSkipped(string bad, string problem)
    {
        string path = File("""{"question": "ok", "choices": ["a", "b"], "label": 1}""", bad);
        var error = Assert.Throws<DataFormatException>(() => MultipleChoiceData.Read(path));
        Assert.StartsWith($"{path}:2: {problem}", error.Message);
        var skipped = MultipleChoiceData.Read(path, skipBadRows: true);
        Assert.Single(skipped.Items);
        Assert.Equal(1, skipped.SkippedRows);
    }

    [Fact]
    public void EncoderExamples_PairContextWithQuestionAndChoice_AndBatchAsBatchChoicesLength()
    {
        string path = File(
            """{"context": "cx", "question": "q", "choices": ["ab", "c"], "label": 1}""",
            """{"question": "qq", "choices": ["d", "efg"], "label": 0}""");
        var items = MultipleChoiceData.Read(path).Items;
        var examples = MultipleChoiceData.EncoderExamples(path, items, new CharEncoder(), 64);
        var first = examples[0].Choices!;
        Assert.Equal([CharEncoder.Cls, .. CharEncoder.Chars("cx"), CharEncoder.Sep, .. CharEncoder.Chars("q ab"), CharEncoder.Sep], first[0].InputIds);
        Assert.Equal([0, 0, 0, 0, 1, 1, 1, 1, 1], first[0].TokenTypeIds!);
        Assert.Equal([CharEncoder.Cls, .. CharEncoder.Chars("qq"), CharEncoder.Sep, .. CharEncoder.Chars("efg"), CharEncoder.Sep], examples[1].Choices![1].InputIds);
        Assert.Equal(1, examples[0].Label);
        Assert.Equal(9, examples[0].Length);

        using var batch = new Batcher(examples, TaskKind.MultipleChoice, CharEncoder.Pad, new BatcherOptions { BatchSize = 2, Shuffle = false }).Build([0, 1]);
        Assert.Equal([2L, 2, 9], batch.InputIds.shape);
        Assert.Equal([2L, 2, 9], batch.AttentionMask.shape);
        Assert.Equal([1L, 0], batch.Labels.data<long>().ToArray());
        Assert.Equal(8, batch.AttentionMask[0, 1].sum().item<long>());   // "cx" + "q c" with 3 specials: 8 real tokens, 1 padding
    }

    [Fact]
    public void EncoderExamples_RefuseQuestionsWithAnotherNumberOfChoices()
    {
        string path = File(
            """{"question": "q", "choices": ["a", "b"], "label": 1}""",
            """{"question": "q", "choices": ["a", "b", "c"], "label": 0}""");
        var error = Assert.Throws<DataFormatException>(() => MultipleChoiceData.EncoderExamples(path, MultipleChoiceData.Read(path).Items, new CharEncoder(), 64));
        Assert.StartsWith($"{path}:2: 3 choices where the first question (line 1) has 2", error.Message);
    }

    [Fact]
    public void DecoderExamples_LearnOnlyTheRightChoiceAfterThePrompt_AndCutLongPromptsFromTheStart()
    {
        string path = File("""{"context": "ctx", "question": "q?", "choices": ["no", "yes"], "label": 1}""");
        var item = MultipleChoiceData.Read(path).Items[0];
        var encoder = new CharEncoder(CharTemplate.Llama);
        Assert.Equal("ctx\nq?", MultipleChoiceData.DecoderPrompt(item));
        var (prompt, choices) = MultipleChoiceData.DecoderTokens(item, encoder, 64);
        Assert.Equal([CharEncoder.Bos, .. CharEncoder.Chars("ctx\nq?")], prompt);
        Assert.Equal(CharEncoder.Chars(" yes"), choices[1]);

        var example = MultipleChoiceData.DecoderTrainingExamples([item], encoder, 64)[0];
        Assert.Equal([.. prompt, .. CharEncoder.Chars(" yes")], example.InputIds);
        Assert.Equal([.. Enumerable.Repeat(-100, prompt.Length), .. CharEncoder.Chars(" yes")], example.LabelIds!);

        var (cut, _) = MultipleChoiceData.DecoderTokens(item, encoder, 6);   // room for 6 − 4 (" yes") = 2 prompt tokens
        Assert.Equal(CharEncoder.Chars("q?"), cut);
    }
}
