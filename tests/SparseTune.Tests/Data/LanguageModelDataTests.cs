using SparseTune.Data;
using SparseTune.Tests.Support;
using Xunit;

namespace SparseTune.Tests.Data;

public class LanguageModelDataTests
{
    static string DataFile(string name) => Fixtures.TestData("data", name);

    [Fact]
    public void FromText_PacksDocumentsWithEosBetween_DropsTheRemainder()
    {
        // Documents "ab cd\nef" (8), "gh" (2), "ij" (2) → 8 + EOS + 2 + EOS + 2 = 14 tokens → 3 blocks of 4.
        var data = LanguageModelData.FromText(DataFile("corpus.txt"), new CharEncoder(CharTemplate.Gpt), 4);

        Assert.Equal(14, data.Tokens);
        Assert.Equal(3, data.Examples.Count);
        Assert.Equal(['a', 'b', ' ', 'c'], data.Examples[0].InputIds);
        Assert.Equal(['d', '\n', 'e', 'f'], data.Examples[1].InputIds);
        Assert.Equal([CharEncoder.Eos, 'g', 'h', CharEncoder.Eos], data.Examples[2].InputIds);
        Assert.All(data.Examples, e => Assert.Equal(e.InputIds, e.LabelIds));
        Assert.All(data.Examples, e => Assert.NotSame(e.InputIds, e.LabelIds));
    }

    [Fact]
    public void FromText_BosPrefixPerDocument_NoEosWhenTheEncoderHasNone()
    {
        // Llama: BOS + 8, EOS, BOS + 2, EOS, BOS + 2 = 17 tokens → 4 blocks of 4.
        var llama = LanguageModelData.FromText(DataFile("corpus.txt"), new CharEncoder(CharTemplate.Llama), 4);
        Assert.Equal(17, llama.Tokens);
        Assert.Equal(4, llama.Examples.Count);
        Assert.Equal([CharEncoder.Bos, 'a', 'b', ' '], llama.Examples[0].InputIds);

        var noEos = LanguageModelData.FromText(DataFile("corpus.txt"), new CharEncoder(CharTemplate.Gpt, hasEos: false), 5);
        Assert.Equal(12, noEos.Tokens);
        Assert.Equal(2, noEos.Examples.Count);
        Assert.Equal(['\n', 'e', 'f', 'g', 'h'], noEos.Examples[1].InputIds);
    }

    [Fact]
    public void FromText_FewerTokensThanABlock_Throws()
    {
        Assert.Throws<InvalidDataException>(() => LanguageModelData.FromText(DataFile("corpus.txt"), new CharEncoder(CharTemplate.Gpt), 15));
    }

    [Fact]
    public void FromText_InvalidUtf8Line_IsABadRow()
    {
        string path = Path.Combine(Fixtures.TempDirectory("lm"), "bytes.txt");
        File.WriteAllBytes(path, [.. "abcd\n\n"u8, 0xFF, .. "x\nefgh\n"u8]);
        var error = Assert.Throws<DataFormatException>(() => LanguageModelData.FromText(path, new CharEncoder(CharTemplate.Gpt), 2));
        Assert.Equal($"{path}:3: invalid UTF-8 bytes", error.Message);

        var data = LanguageModelData.FromText(path, new CharEncoder(CharTemplate.Gpt), 3, skipBadRows: true);
        Assert.Equal(1, data.SkippedRows);
        Assert.Equal(9, data.Tokens); // abcd EOS efgh
        Assert.Equal([['a', 'b', 'c'], ['d', CharEncoder.Eos, 'e'], ['f', 'g', 'h']], data.Examples.Select(e => e.InputIds));
    }

    [Fact]
    public void AlpacaPrompts_AreStanfordAlpacasTemplates()
    {
        Assert.Equal(
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
            "### Instruction:\nSay hi\n\n### Response:",
            LanguageModelData.Prompt("Say hi", ""));
        Assert.Equal(
            "Below is an instruction that describes a task, paired with an input that provides further context. " +
            "Write a response that appropriately completes the request.\n\n" +
            "### Instruction:\nAdd\n\n### Input:\n1 2\n\n### Response:",
            LanguageModelData.Prompt("Add", "1 2"));
        Assert.EndsWith("### Instruction:\nBraces {input}\n\n### Response:", LanguageModelData.Prompt("Braces {input}", null));
    }

    [Fact]
    public void Alpaca_LabelsMaskExactlyThePromptTokens()
    {
        string path = DataFile("alpaca.jsonl");
        var data = LanguageModelData.FromAlpacaJsonl(path, new CharEncoder(CharTemplate.Gpt), 512, skipBadRows: true);

        Assert.Equal(3, data.Examples.Count);
        Assert.Equal(1, data.SkippedRows);
        Assert.Equal([$"{path}:3: missing field 'output'"], data.SkippedReasons);

        int[] prompt = CharEncoder.Chars(LanguageModelData.Prompt("Say hi", ""));
        var first = data.Examples[0];
        Assert.Equal([.. prompt, 'h', 'i', CharEncoder.Eos], first.InputIds);
        Assert.Equal([.. Enumerable.Repeat(-100, prompt.Length), 'h', 'i', CharEncoder.Eos], first.LabelIds!);

        int[] withInput = CharEncoder.Chars(LanguageModelData.Prompt("Add", "1 2"));
        Assert.Equal([.. withInput, '3', CharEncoder.Eos], data.Examples[1].InputIds);
        Assert.Equal(withInput.Length, data.Examples[1].LabelIds!.Count(l => l == -100));
        Assert.Equal([1, 2, 4], data.Examples.Select(e => e.SourceLine));

        var error = Assert.Throws<DataFormatException>(() => LanguageModelData.FromAlpacaJsonl(path, new CharEncoder(CharTemplate.Gpt), 512));
        Assert.Equal(3, error.Line);
    }

    [Fact]
    public void Alpaca_KeepsTheSpecialPrefix_DropsASpecialSuffix()
    {
        string path = DataFile("alpaca.jsonl");
        int[] prompt = CharEncoder.Chars(LanguageModelData.Prompt("Say hi", ""));

        var llama = LanguageModelData.FromAlpacaJsonl(path, new CharEncoder(CharTemplate.Llama), 512, skipBadRows: true).Examples[0];
        Assert.Equal([CharEncoder.Bos, .. prompt, 'h', 'i', CharEncoder.Eos], llama.InputIds);
        Assert.Equal(prompt.Length + 1, llama.LabelIds!.TakeWhile(l => l == -100).Count());

        var bert = LanguageModelData.FromAlpacaJsonl(path, new CharEncoder(CharTemplate.Bert), 512, skipBadRows: true).Examples[0];
        Assert.Equal([CharEncoder.Cls, .. prompt, 'h', 'i', CharEncoder.Eos], bert.InputIds);
    }

    [Fact]
    public void Alpaca_TruncatesTheResponse_AndRejectsAPromptThatFillsMaxLength()
    {
        string path = DataFile("alpaca.jsonl");
        int promptLength = LanguageModelData.Prompt("Say hi", "").Length;

        var data = LanguageModelData.FromAlpacaJsonl(path, new CharEncoder(CharTemplate.Gpt), promptLength + 2, skipBadRows: true);
        var first = data.Examples[0];
        Assert.Equal(promptLength + 2, first.InputIds.Length);
        Assert.Equal(['h', 'i'], first.LabelIds![^2..]);

        var error = Assert.Throws<DataFormatException>(() => LanguageModelData.FromAlpacaJsonl(path, new CharEncoder(CharTemplate.Gpt), promptLength));
        Assert.Equal(1, error.Line);
        Assert.Contains("leaves no room for the response", error.Problem);
    }
}
