using SparseTune.Data;
using SparseTune.Tests.Support;
using Xunit;

namespace SparseTune.Tests.Data;

public class ClassificationDataTests
{
    static readonly CharEncoder Bert = new(CharTemplate.Bert);

    static string DataFile(string name) => Fixtures.TestData("data", name);

    static int[] Wrapped(string text) => [CharEncoder.Cls, .. CharEncoder.Chars(text), CharEncoder.Sep];

    static string WriteTemp(string name, byte[] content)
    {
        string path = Path.Combine(Fixtures.TempDirectory("data"), name);
        File.WriteAllBytes(path, content);
        return path;
    }

    [Fact]
    public void Csv_QuotedCommasNewlinesAndEscapedQuotes_AreOneFieldEach()
    {
        var data = ClassificationData.Load(DataFile("quoted.csv"), Bert);

        Assert.Equal(["pos", "neg"], data.Labels);
        Assert.False(data.Regression);
        Assert.Equal(0, data.SkippedRows);
        Assert.Equal(4, data.Examples.Count);
        Assert.Equal(Wrapped("hello"), data.Examples[0].InputIds);
        Assert.Equal(Wrapped("a, b"), data.Examples[1].InputIds);
        Assert.Equal(Wrapped("line one\nline two"), data.Examples[2].InputIds);
        Assert.Equal(Wrapped("say \"hi\""), data.Examples[3].InputIds);
        Assert.Equal([0f, 1f, 0f, 1f], data.Examples.Select(e => e.Label));
        Assert.Equal([2, 3, 4, 6], data.Examples.Select(e => e.SourceLine)); // the multi-line record starts on line 4
        Assert.All(data.Examples, e => Assert.Null(e.TokenTypeIds));
    }

    [Fact]
    public void Csv_BadRow_ReportsTheLineWhereTheRecordStarts()
    {
        string path = DataFile("bad.csv");
        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(path, Bert));

        Assert.Equal(path, error.File);
        Assert.Equal(3, error.Line);
        Assert.Equal($"{path}:3: empty label in 'label'", error.Message);
    }

    [Fact]
    public void Csv_SkipBadRows_CountsAndKeepsReasons()
    {
        string path = DataFile("bad.csv");
        var data = ClassificationData.Load(path, Bert, new ClassificationDataOptions { SkipBadRows = true });

        Assert.Equal(3, data.SkippedRows);
        Assert.Equal(
        [
            $"{path}:3: empty label in 'label'",
            $"{path}:5: missing field: expected 2 fields (text, label), found 1",
            $"{path}:7: empty text in 'text'",
        ], data.SkippedReasons);
        Assert.Equal([Wrapped("first"), Wrapped("last")], data.Examples.Select(e => e.InputIds));
        Assert.Equal(["a", "b"], data.Labels);
        Assert.Equal([2, 8], data.Examples.Select(e => e.SourceLine));
    }

    [Fact]
    public void Csv_UnterminatedQuote_IsABadRowAtItsStart()
    {
        string path = WriteTemp("open.csv", "text,label\nok,a\n\"never closed,a\nmore,b\n"u8.ToArray());
        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(path, Bert));
        Assert.Equal(3, error.Line);
        Assert.Equal("unterminated quoted field", error.Problem);

        var data = ClassificationData.Load(path, Bert, new ClassificationDataOptions { SkipBadRows = true });
        Assert.Equal(1, data.SkippedRows);
        Assert.Single(data.Examples);
    }

    [Fact]
    public void Csv_TextAfterClosingQuote_IsABadRow()
    {
        string path = WriteTemp("after.csv", "text,label\n\"ab\"c,a\n"u8.ToArray());
        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(path, Bert));
        Assert.Equal(2, error.Line);
        Assert.Equal("unexpected 'c' after a closing quote (line 2)", error.Problem);
    }

    [Fact]
    public void Csv_CrLfLineEndings_AreHandled()
    {
        string path = WriteTemp("crlf.csv", "text,label\r\n\"x\r\ny\",a\r\nz,b\r\n"u8.ToArray());
        var data = ClassificationData.Load(path, Bert);
        Assert.Equal([Wrapped("x\r\ny"), Wrapped("z")], data.Examples.Select(e => e.InputIds));
        Assert.Equal([2, 4], data.Examples.Select(e => e.SourceLine));
    }

    [Fact]
    public void Tsv_PairColumns_GiveTokenTypesAndIntegerLabelIds()
    {
        var data = ClassificationData.Load(DataFile("pairs.tsv"), Bert);

        Assert.Equal(["0", "1", "2"], data.Labels);
        Assert.Equal([1f, 0f, 2f], data.Examples.Select(e => e.Label));
        var first = data.Examples[0];
        Assert.Equal([CharEncoder.Cls, .. CharEncoder.Chars("the cat"), CharEncoder.Sep, .. CharEncoder.Chars("a dog"), CharEncoder.Sep], first.InputIds);
        Assert.Equal([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1], first.TokenTypeIds!);
        // No quoting in TSV: quotes are text.
        Assert.Equal([CharEncoder.Cls, 'x', CharEncoder.Sep, '"', 'y', '"', CharEncoder.Sep], data.Examples[1].InputIds);
    }

    [Fact]
    public void Tsv_EmptyPairColumnOption_LoadsSingleTexts()
    {
        var data = ClassificationData.Load(DataFile("pairs.tsv"), Bert, new ClassificationDataOptions { TextPairColumn = "" });
        Assert.Equal(Wrapped("the cat"), data.Examples[0].InputIds);
        Assert.Null(data.Examples[0].TokenTypeIds);
    }

    [Fact]
    public void Jsonl_BadRows_HaveTheirLineNumbers()
    {
        string path = DataFile("mixed.jsonl");
        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(path, Bert));
        Assert.Equal(3, error.Line);
        Assert.StartsWith($"{path}:3: invalid JSON", error.Message);

        var data = ClassificationData.Load(path, Bert, new ClassificationDataOptions { SkipBadRows = true });
        Assert.Equal(5, data.SkippedRows);
        Assert.Equal([3, 4, 5, 6, 7], data.SkippedReasons.Select(r => int.Parse(r[(path.Length + 1)..r.IndexOf(": ", path.Length, StringComparison.Ordinal)])));
        Assert.Equal($"{path}:4: empty text in 'text'", data.SkippedReasons[1]);
        Assert.Equal($"{path}:5: missing field 'text'", data.SkippedReasons[2]);
        Assert.Equal($"{path}:6: unknown label '0.5': a non-integer number (set Regression for float targets)", data.SkippedReasons[3]);
        Assert.Equal($"{path}:7: expected a JSON object, found array", data.SkippedReasons[4]);
        Assert.Equal(["positive", "negative"], data.Labels);
        Assert.Equal([0f, 1f, 0f], data.Examples.Select(e => e.Label));
        Assert.Equal([1, 2, 8], data.Examples.Select(e => e.SourceLine));
    }

    [Fact]
    public void IntegerLabels_AreTheirOwnIds_AndMustCoverZeroToK()
    {
        // Ids 0 and 3 only: 1 and 2 never appear, so the file is refused (issue 18: a stray 17 silently made 18 classes).
        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(DataFile("ids.jsonl"), Bert));
        Assert.Equal(1, error.Line);
        Assert.Contains("label 3 makes 4 classes but ids 1, 2 never appear", error.Message);
        // With the model's 4 class names the same file loads: JSON 3 and "3" are the same id.
        var data = ClassificationData.Load(DataFile("ids.jsonl"), Bert, new ClassificationDataOptions { IdLabels = ["a", "b", "c", "d"] });
        Assert.Equal(["a", "b", "c", "d"], data.Labels);
        Assert.Equal([3f, 0f, 3f], data.Examples.Select(e => e.Label));
        Assert.Equal([1, 2, 4], data.Examples.Select(e => e.SourceLine)); // blank line 3 skipped, still counted
    }

    [Fact]
    public void FixedLabels_UnknownEvalLabel_IsABadRow()
    {
        string path = DataFile("quoted.csv");
        var options = new ClassificationDataOptions { Labels = ["neg", "pos"] };
        var data = ClassificationData.Load(path, Bert, options);
        Assert.Equal(["neg", "pos"], data.Labels);
        Assert.Equal([1f, 0f, 1f, 0f], data.Examples.Select(e => e.Label));

        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(path, Bert, options with { Labels = ["pos"] }));
        Assert.Equal(3, error.Line);
        Assert.Equal($"{path}:3: unknown label 'neg' (labels: pos)", error.Message);
    }

    [Fact]
    public void Regression_FloatLabels()
    {
        var data = ClassificationData.Load(DataFile("stsb.csv"), Bert, new ClassificationDataOptions { Regression = true });
        Assert.True(data.Regression);
        Assert.Empty(data.Labels);
        Assert.Equal(Training.TaskKind.Regression, data.Task);
        Assert.Equal([4.2f, 0.5f, 5f], data.Examples.Select(e => e.Label));
        Assert.NotNull(data.Examples[0].TokenTypeIds);
    }

    [Fact]
    public void FloatLabel_WithoutRegression_IsAnUnknownLabel()
    {
        string path = DataFile("stsb.csv");
        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(path, Bert));
        Assert.Equal(2, error.Line);
        Assert.Equal("unknown label '4.2': a non-integer number (set Regression for float targets)", error.Problem);
    }

    [Fact]
    public void InvalidUtf8_IsABadRowOnItsLine()
    {
        byte[] bytes = [.. "text,label\nfine,a\n"u8, (byte)'b', 0xC3, 0x28, .. ",a\nalso fine,b\n"u8];
        string path = WriteTemp("bytes.csv", bytes);
        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(path, Bert));
        Assert.Equal($"{path}:3: invalid UTF-8 bytes", error.Message);

        var data = ClassificationData.Load(path, Bert, new ClassificationDataOptions { SkipBadRows = true });
        Assert.Equal(1, data.SkippedRows);
        Assert.Equal([2, 4], data.Examples.Select(e => e.SourceLine));
    }

    [Fact]
    public void MissingColumn_ThrowsEvenWhenSkippingBadRows()
    {
        string path = DataFile("quoted.csv");
        var error = Assert.Throws<DataFormatException>(() =>
            ClassificationData.Load(path, Bert, new ClassificationDataOptions { LabelColumn = "gold", SkipBadRows = true }));
        Assert.Equal($"{path}:1: no column 'gold' (columns: sentence, label)", error.Message);
    }

    [Fact]
    public void Truncation_KeepsTheFinalSpecialToken()
    {
        string path = WriteTemp("long.csv", "text,label\nabcdefgh,a\nabc,a\n"u8.ToArray());
        var data = ClassificationData.Load(path, Bert, new ClassificationDataOptions { MaxLength = 6 });
        Assert.Equal([CharEncoder.Cls, 'a', 'b', 'c', 'd', CharEncoder.Sep], data.Examples[0].InputIds);
        Assert.Equal(Wrapped("abc"), data.Examples[1].InputIds);

        Assert.Equal([1, 'a', 'b', 'c', 'd'], Truncation.EncodeSingle(new CharEncoder(CharTemplate.Llama), "abcdefgh", 5));
        Assert.Equal(['a', 'b', 'c', 'd', 'e'], Truncation.EncodeSingle(new CharEncoder(CharTemplate.Gpt), "abcdefgh", 5));
    }

    [Fact]
    public void PairTruncation_ShortensTheLongerTextFirst()
    {
        // 7 + 3 text tokens, 3 specials, max 9: the first text gives up 4.
        var (ids, types) = Truncation.EncodePair(Bert, "abcdefg", "xyz", 9);
        Assert.Equal([CharEncoder.Cls, 'a', 'b', 'c', CharEncoder.Sep, 'x', 'y', 'z', CharEncoder.Sep], ids);
        Assert.Equal([0, 0, 0, 0, 0, 1, 1, 1, 1], types);

        // 5 + 4, max 8 (budget 5): 5→4, then alternately from the second on ties: (4,3), (3,3), (3,2).
        (ids, types) = Truncation.EncodePair(Bert, "abcde", "wxyz", 8);
        Assert.Equal([CharEncoder.Cls, 'a', 'b', 'c', CharEncoder.Sep, 'w', 'x', CharEncoder.Sep], ids);
        Assert.Equal([0, 0, 0, 0, 0, 1, 1, 1], types);

        // Via the loader: the pair file with a small max length.
        var data = ClassificationData.Load(DataFile("pairs.tsv"), Bert, new ClassificationDataOptions { MaxLength = 7 });
        Assert.Equal([CharEncoder.Cls, 't', 'h', CharEncoder.Sep, 'a', ' ', CharEncoder.Sep], data.Examples[0].InputIds);
        Assert.All(data.Examples, e => Assert.True(e.InputIds.Length <= 7));
    }
}
