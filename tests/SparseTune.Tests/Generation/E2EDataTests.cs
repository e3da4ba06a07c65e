using SparseTune.Data;
using SparseTune.Generation;
using SparseTune.Tests.Data;
using SparseTune.Tests.Support;
using Xunit;

namespace SparseTune.Tests.Generation;

/// <summary>E2E loading with <see cref="CharEncoder"/> (one token per character, EOS = 2, BOS = 1).</summary>
public sealed class E2EDataTests : IDisposable
{
    static readonly string E2EFile = Fixtures.TestData("e2e", "e2e.jsonl");
    const int Ignore = LanguageModelData.IgnoreIndex;
    readonly string temp = Fixtures.TempDirectory("e2e");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    string Write(string name, string text)
    {
        string path = Path.Combine(temp, name);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void FromJsonl_MasksTheMeaningRepresentationAndSeparator_CountsReferenceAndEos()
    {
        var data = E2EData.FromJsonl(E2EFile, new CharEncoder(CharTemplate.Gpt), 512);

        Assert.Equal(16, data.Examples.Count);
        const string mr = "name[The Eagle], eatType[coffee shop], food[French]";
        const string reference = "The Eagle is a French coffee shop.";
        var first = data.Examples[0];
        Assert.Equal([.. CharEncoder.Chars(mr), CharEncoder.Eos, .. CharEncoder.Chars(reference), CharEncoder.Eos], first.InputIds);
        Assert.Equal([.. Enumerable.Repeat(Ignore, mr.Length + 1), .. CharEncoder.Chars(reference), CharEncoder.Eos], first.LabelIds!);
        Assert.Equal(1, first.SourceLine);
        Assert.Equal(data.Examples.Sum(e => e.InputIds.Length), data.Tokens);
        Assert.All(data.Examples, e => Assert.Equal(e.InputIds.Length, e.LabelIds!.Length));
    }

    [Fact]
    public void FromJsonl_KeepsTheEncodersPrefixInsideTheMaskedPrompt()
    {
        string path = Write("one.jsonl", """{"meaning_representation": "a[b]", "reference": "xy"}""" + "\n");
        var example = E2EData.FromJsonl(path, new CharEncoder(CharTemplate.Llama), 64).Examples.Single();

        Assert.Equal([CharEncoder.Bos, 'a', '[', 'b', ']', CharEncoder.Eos, 'x', 'y', CharEncoder.Eos], example.InputIds);
        Assert.Equal([Ignore, Ignore, Ignore, Ignore, Ignore, Ignore, 'x', 'y', CharEncoder.Eos], example.LabelIds!);
        Assert.Equal(example.InputIds[..6], E2EData.PromptIds(new CharEncoder(CharTemplate.Llama), "a[b]"));
    }

    [Fact]
    public void FromJsonl_TruncatesTheReference_AndRejectsAPromptWithNoRoomLeft()
    {
        string path = Write("long.jsonl", """{"meaning_representation": "a[b]", "reference": "xyz"}""" + "\n");
        var cut = E2EData.FromJsonl(path, new CharEncoder(CharTemplate.Gpt), 7).Examples.Single();
        Assert.Equal(['a', '[', 'b', ']', CharEncoder.Eos, 'x', 'y'], cut.InputIds);
        Assert.Equal([Ignore, Ignore, Ignore, Ignore, Ignore, 'x', 'y'], cut.LabelIds!);

        var error = Assert.Throws<DataFormatException>(() => E2EData.FromJsonl(path, new CharEncoder(CharTemplate.Gpt), 5));
        Assert.StartsWith($"{path}:1: the meaning representation (5 tokens with the separator) leaves no room", error.Message);
    }

    [Fact]
    public void BadRows_ReportFileAndLine_OrAreSkippedAndCounted()
    {
        string path = Write("bad.jsonl", string.Join("\n",
            """{"meaning_representation": "a[b]", "reference": "ok"}""",
            """{"meaning_representation": "a[b]"}""",
            "",
            """{"meaning_representation": " ", "reference": "x"}""",
            "not json",
            """{"reference": "x"}""",
            """{"meaning_representation": "c[d]", "reference": "fine"}""") + "\n");
        var encoder = new CharEncoder(CharTemplate.Gpt);

        var error = Assert.Throws<DataFormatException>(() => E2EData.FromJsonl(path, encoder, 64));
        Assert.Equal($"{path}:2: missing field 'reference'", error.Message);
        Assert.Throws<DataFormatException>(() => E2EData.Groups(path));

        var data = E2EData.FromJsonl(path, encoder, 64, skipBadRows: true);
        Assert.Equal(2, data.Examples.Count);
        Assert.Equal(4, data.SkippedRows);
        Assert.StartsWith($"{path}:4: empty text in 'meaning_representation'", data.SkippedReasons[1]);
        Assert.Equal($"{path}:6: missing field 'meaning_representation'", data.SkippedReasons[3]);
        Assert.Equal([1, 7], data.Examples.Select(e => e.SourceLine));

        var groups = E2EData.Groups(path, skipBadRows: true);
        Assert.Equal(4, groups.SkippedRows);
        Assert.Equal(["a[b]", "c[d]"], groups.Groups.Select(g => g.MeaningRepresentation));
    }

    [Fact]
    public void Groups_CollectEveryReferenceOfAMeaningRepresentation_InFileOrder()
    {
        var references = E2EData.Groups(E2EFile);

        Assert.Equal(16, references.Rows);
        Assert.Equal([3, 2, 3, 2, 2, 2, 2], references.Groups.Select(g => g.References.Count));
        Assert.Equal([1, 4, 6, 9, 11, 13, 15], references.Groups.Select(g => g.FirstLine));
        var eagle = references.Groups[0];
        Assert.Equal("name[The Eagle], eatType[coffee shop], food[French]", eagle.MeaningRepresentation);
        Assert.Equal(["The Eagle is a French coffee shop.", "The Eagle is a coffee shop that serves French food.",
            "French food is served at The Eagle coffee shop."], eagle.References);
    }

    [Fact]
    public void AnEncoderWithoutEos_IsRejected_AndDetectionLooksForTheMrField()
    {
        Assert.Throws<ArgumentException>(() => E2EData.FromJsonl(E2EFile, new CharEncoder(CharTemplate.Gpt, hasEos: false), 64));
        Assert.True(E2EData.LooksLikeE2E(E2EFile));
        Assert.False(E2EData.LooksLikeE2E(Fixtures.TestData("data", "alpaca.jsonl")));
        Assert.False(E2EData.LooksLikeE2E(Write("text.jsonl", "not json\n")));
    }
}
