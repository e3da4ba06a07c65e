using SparseTune.Cli.Commands;
using SparseTune.Tokenization;
using Xunit;

namespace SparseTune.Tests.Tokenization;

/// <summary>
/// <see cref="TextTokenizer.EncodeWithOffsets"/> on the demo BERT (WordPiece, lowercasing, accent stripping) and
/// GPT-2 (byte-level BPE) tokenizers and the hand-made RoBERTa folder: the ids are Encode(text, false)'s and every
/// span points at the token's own characters in the original text.
/// </summary>
public class SquadOffsetTests
{
    static readonly Lazy<TextTokenizer> Bert = new(() => TextTokenizer.FromFolder(Demo.ModelDirectory()));
    static readonly Lazy<TextTokenizer> Gpt2 = new(() => TextTokenizer.FromFolder(Demo.Gpt2ModelDirectory()));
    static string TestFolder(string name) => Path.Combine(AppContext.BaseDirectory, "TestData", "tokenizers", name);

    /// <summary>WordPiece tokens by id: vocab.txt line numbers.</summary>
    static readonly Lazy<string[]> BertVocab = new(() => File.ReadAllLines(Path.Combine(Demo.ModelDirectory(), "vocab.txt")));

    const string Ascii = "Hello, World! The lighthouse was built in 1872 by Tomas Berg; it costs $3.50 (today).";
    const string Accented = "The café's naïve résumé — Ünïcödé 日本 🙂 x";

    static void AssertMonotone(string text, EncodedText encoded)
    {
        for (int i = 0; i < encoded.Offsets.Count; i++)
        {
            var span = encoded.Offsets[i];
            Assert.InRange(span.Start, 0, text.Length);
            Assert.InRange(span.End, span.Start, text.Length);
            if (i > 0)
            {
                Assert.True(span.Start >= encoded.Offsets[i - 1].Start, $"token {i} starts at {span.Start}, before token {i - 1}");
                Assert.True(span.End >= encoded.Offsets[i - 1].End, $"token {i} ends at {span.End}, before token {i - 1}");
            }
        }
    }

    [Theory]
    [InlineData(Ascii)]
    [InlineData(Accented)]
    [InlineData("  leading\tand   inner  spaces  ")]
    public void Bert_IdsMatchEncode_AndSpansAreMonotone(string text)
    {
        var encoded = Bert.Value.EncodeWithOffsets(text);
        Assert.Equal(Bert.Value.Encode(text, false), encoded.Ids);
        Assert.Equal(encoded.Ids.Count, encoded.Offsets.Count);
        AssertMonotone(text, encoded);
    }

    [Fact]
    public void Bert_AsciiTokens_SpanTheirOwnText()
    {
        var encoded = Bert.Value.EncodeWithOffsets(Ascii);
        for (int i = 0; i < encoded.Ids.Count; i++)
        {
            string token = BertVocab.Value[encoded.Ids[i]];
            if (token == "[UNK]") continue;
            string piece = token.StartsWith("##", StringComparison.Ordinal) ? token[2..] : token;
            var span = encoded.Offsets[i];
            Assert.Equal(piece, Ascii.Substring(span.Start, span.Length).ToLowerInvariant());
        }
        // The spans of "Tomas" cover the original capitalised word.
        int tomas = Ascii.IndexOf("Tomas", StringComparison.Ordinal);
        Assert.Contains(encoded.Offsets, s => s.Start == tomas);
        Assert.Contains(encoded.Offsets, s => s.End == tomas + 5);
    }

    [Fact]
    public void Bert_LowercasedAccentedAndDecomposedText_MapsBackToTheOriginalCharacters()
    {
        // "e" + combining acute (2 chars) normalises to "e" (1 char): spans must still land on the original text.
        string text = "Cafe\u0301 Ünïcödé";
        var encoded = Bert.Value.EncodeWithOffsets(text);
        Assert.Equal(Bert.Value.Encode(text, false), encoded.Ids);
        AssertMonotone(text, encoded);
        Assert.Equal(0, encoded.Offsets[0].Start);
        Assert.Equal(text.IndexOf(' '), encoded.Offsets.Where(s => s.End <= text.IndexOf(' ')).Max(s => s.End)); // "Café" ends after the accent
        Assert.Equal(text.Length, encoded.Offsets[^1].End);
        string rebuilt = string.Concat(encoded.Offsets.Select(s => text.Substring(s.Start, s.Length)));
        Assert.Equal(text.Replace(" ", ""), rebuilt); // the word pieces tile each word exactly
    }

    [Fact]
    public void Bert_ControlCharactersAndCjk_KeepOriginalPositions()
    {
        string text = "lead\ttab 日本";
        var encoded = Bert.Value.EncodeWithOffsets(text);
        Assert.Equal(Bert.Value.Encode(text, false), encoded.Ids);
        AssertMonotone(text, encoded);
        // Each CJK character is its own token, spanning just that character.
        Assert.Equal(new CharSpan(9, 10), encoded.Offsets[^2]);
        Assert.Equal(new CharSpan(10, 11), encoded.Offsets[^1]);
    }

    [Theory]
    [InlineData(Ascii)]
    [InlineData(Accented)]
    [InlineData("  leading\tand   inner  spaces  ")]
    public void Gpt2_IdsMatchEncode_AndSpansAreMonotone(string text)
    {
        var encoded = Gpt2.Value.EncodeWithOffsets(text);
        Assert.Equal(Gpt2.Value.Encode(text, false), encoded.Ids);
        AssertMonotone(text, encoded);
    }

    [Fact]
    public void Gpt2_AsciiTokens_SpanTheirOwnTextWithoutTheLeadingSpace()
    {
        var encoded = Gpt2.Value.EncodeWithOffsets(Ascii);
        for (int i = 0; i < encoded.Ids.Count; i++)
        {
            var span = encoded.Offsets[i];
            Assert.Equal(Gpt2.Value.Decode([encoded.Ids[i]]).Trim(), Ascii.Substring(span.Start, span.Length));
        }
    }

    [Fact]
    public void Gpt2_MultiByteCharacters_GiveEachByteTokenTheWholeCharacter()
    {
        string text = "café 🙂!";
        var encoded = Gpt2.Value.EncodeWithOffsets(text);
        AssertMonotone(text, encoded);
        // é is two UTF-8 bytes, 🙂 four (a surrogate pair): every byte token spans the whole character.
        Assert.Contains(new CharSpan(3, 4), encoded.Offsets);
        Assert.DoesNotContain(encoded.Offsets, s => s.Start == 6 || s.End == 6); // never inside the surrogate pair
        Assert.Contains(encoded.Offsets, s => s.End == 7 && s.Start <= 5);
        Assert.Equal(new CharSpan(7, 8), encoded.Offsets[^1]);
    }

    [Fact]
    public void Roberta_PrefixSpace_IsNotPartOfTheSpans()
    {
        string dir = Directory.CreateTempSubdirectory("sparsetune-roberta-").FullName;
        try
        {
            foreach (string file in Directory.GetFiles(TestFolder("roberta-bpe"))) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"add_prefix_space": true}""");
            var tokenizer = TextTokenizer.FromFolder(dir);
            string text = "the cat sat";
            var encoded = tokenizer.EncodeWithOffsets(text);
            Assert.Equal(tokenizer.Encode(text, false), encoded.Ids);
            AssertMonotone(text, encoded);
            Assert.Equal(0, encoded.Offsets[0].Start);
            Assert.Equal(text.Length, encoded.Offsets[^1].End);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void BuildPair_UsesTheModelTemplate_AndSaysWhereTheSecondSequenceStarts()
    {
        var bert = Bert.Value.BuildPair([10, 11], [20, 21, 22]);
        Assert.Equal([Bert.Value.ClsId!.Value, 10, 11, Bert.Value.SepId!.Value, 20, 21, 22, Bert.Value.SepId!.Value], bert.Ids);
        Assert.Equal([0, 0, 0, 0, 1, 1, 1, 1], bert.TokenTypeIds);
        Assert.Equal(4, bert.SecondStart);
        Assert.Equal(3, Bert.Value.PairSpecialTokenCount);

        var roberta = TextTokenizer.FromFolder(TestFolder("roberta-bpe"));
        var pair = roberta.BuildPair([10, 11], [20]);
        Assert.Equal([0, 10, 11, 2, 2, 20, 2], pair.Ids); // <s> q </s></s> c </s>
        Assert.All(pair.TokenTypeIds, t => Assert.Equal(0, t));
        Assert.Equal(5, pair.SecondStart);
        Assert.Equal(4, roberta.PairSpecialTokenCount);
        // The same layout as encoding the texts as a pair.
        Assert.Equal(roberta.EncodePair("the cat", "sat"),
            roberta.BuildPair(roberta.Encode("the cat", false), roberta.Encode("sat", false)).Ids);
    }

    [Fact]
    public void SentencePiece_IsNotSupported()
    {
        var tokenizer = TextTokenizer.FromFolder(TestFolder("llama-sentencepiece"));
        Assert.Throws<NotSupportedException>(() => tokenizer.EncodeWithOffsets("hello"));
    }
}
