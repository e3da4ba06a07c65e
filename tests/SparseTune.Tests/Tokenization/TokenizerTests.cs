using System.Text.Json.Nodes;
using SparseTune.Tokenization;
using Xunit;

namespace SparseTune.Tests.Tokenization;

/// <summary>
/// Tokenizers from the hand-made folders in TestData/tokenizers (see README.txt there). Expected ids are worked out
/// by hand: byte-level symbols have GPT-2's ids 0..255 ("Ġ" = space = 220, "Ċ" = "\n" = 198, printable ASCII
/// c = c - 33), merge k makes id 256 + k (RoBERTa: +4 for its leading specials); WordPiece ids are vocab.txt line
/// numbers; SentencePiece ids are 0-2 specials, 3-258 byte pieces, 259.. merged pieces, 295.. single characters.
/// </summary>
public class TokenizerTests
{
    private static string Folder(string name) => Path.Combine(AppContext.BaseDirectory, "TestData", "tokenizers", name);
    private static TextTokenizer Load(string name) => TextTokenizer.FromFolder(Folder(name));

    /// <summary>A scratch copy of a test folder (or an empty one) that tests may add files to.</summary>
    private sealed class ScratchFolder : IDisposable
    {
        public string Dir { get; } = Path.Combine(Path.GetTempPath(), "sparsetune-tokenizer-" + Guid.NewGuid().ToString("N"));

        public ScratchFolder(string? copyOf = null)
        {
            Directory.CreateDirectory(Dir);
            if (copyOf is not null)
                foreach (string file in Directory.GetFiles(Folder(copyOf)))
                    File.Copy(file, Path.Combine(Dir, Path.GetFileName(file)));
        }

        public void Write(string file, string text) => File.WriteAllText(Path.Combine(Dir, file), text);
        public void Dispose() => Directory.Delete(Dir, recursive: true);
    }

    private static readonly string[] Samples =
    [
        "Hello world",
        "the cat sat on the mat",
        "Hi\n\n\nthe dog's playing  with it's ball\t!",
        "héllo wörld 🙂🚀 日本語",
        "👩‍👩‍👧 family\r\n  leading and trailing  ",
        "",
    ];

    public static TheoryData<string> Texts => new(Samples);

    // ---------------------------------------------------------------- byte-level BPE (GPT-2)

    [Fact]
    public void Gpt2VocabAndMerges_EncodeToHandComputedIds()
    {
        var tok = Load("gpt2-bpe");
        Assert.Equal(TextTokenizer.BpeKind, tok.Kind);
        Assert.Equal(293, tok.VocabSize);
        Assert.Equal(Path.Combine(Folder("gpt2-bpe"), "vocab.json"), tok.SourceFile);
        // GPT-2 uses <|endoftext|> as bos, eos and unk, and has no pad, cls, sep or mask.
        Assert.Equal((292, 292, 292), (tok.BosId, tok.EosId, tok.UnkId));
        Assert.Null(tok.PadId);
        Assert.Null(tok.ClsId);
        Assert.Null(tok.SepId);
        Assert.Null(tok.MaskId);

        Assert.Equal([264, 269], tok.Encode("Hello world"));                        // Hello, Ġworld
        Assert.Equal([285, 277, 279, 281, 258, 283], tok.Encode("the cat sat on the mat"));
        Assert.Equal([274], tok.Encode(" playing"));                                 // in+g first, then Ġp+la+y+ing
        Assert.Equal([72, 83, 284], tok.Encode("it's"));                             // i, t, 's
        Assert.Equal([57, 78, 127, 104], tok.Encode("Zoë"));                         // Z, o, bytes C3 AB
        // "\n\n\n" before a letter splits as "\n\n" (merged to ĊĊ) + "\n": GPT-2's \s+(?!\S).
        Assert.Equal([39, 72, 289, 198, 285], tok.Encode("Hi\n\n\nthe"));
        Assert.Equal([64, 292, 65], tok.Encode("a<|endoftext|>b"));                  // the special token is never split
        // Specials are cut out before the regex runs, so "  " before one is trailing whitespace: one ĠĠ, not Ġ Ġ.
        Assert.Equal([64, 290, 292], tok.Encode("a  <|endoftext|>"));
        Assert.Equal(tok.Encode("Hello world", addSpecialTokens: false), tok.Encode("Hello world"));
    }

    [Theory]
    [MemberData(nameof(Texts))]
    public void Gpt2Decode_RoundTripsUnicodeEmojiAndNewlines(string text)
    {
        var tok = Load("gpt2-bpe");
        Assert.Equal(text, tok.Decode(tok.Encode(text)));
        var roberta = Load("roberta-bpe");
        Assert.Equal(text, roberta.Decode(roberta.Encode(text)));
    }

    [Fact]
    public void Gpt2Pair_IsPlainConcatenationWithTypeIds()
    {
        var tok = Load("gpt2-bpe");
        var pair = tok.EncodePairWithTypeIds("Hello", " world");
        Assert.Equal([264, 269], pair.Ids);
        Assert.Equal([0, 1], pair.TokenTypeIds);
        Assert.Equal(pair.Ids, tok.EncodePair("Hello", " world"));
    }

    [Theory]
    [MemberData(nameof(Texts))]
    public void TokenizerJsonBpe_GivesSameIdsAsVocabAndMergesFiles(string text)
    {
        var files = Load("gpt2-bpe");
        var json = Load("gpt2-tokenizer-json");   // merges as "a b" strings
        Assert.Equal(files.Encode(text), json.Encode(text));
        Assert.Equal(text, json.Decode(json.Encode(text)));

        var robertaFiles = Load("roberta-bpe");
        var robertaJson = Load("roberta-tokenizer-json");  // merges as ["a", "b"] pairs, RobertaProcessing
        Assert.Equal(robertaFiles.Encode(text), robertaJson.Encode(text));
        Assert.Equal(robertaFiles.EncodePairWithTypeIds(text, "the cat"), robertaJson.EncodePairWithTypeIds(text, "the cat"), EncodedPairComparer.Instance);
    }

    [Fact]
    public void TokenizerJsonBpe_HasSameVocabAndSpecialIds()
    {
        foreach (var (files, json) in new[] { ("gpt2-bpe", "gpt2-tokenizer-json"), ("roberta-bpe", "roberta-tokenizer-json") })
        {
            var a = Load(files);
            var b = Load(json);
            Assert.Equal(TextTokenizer.BpeKind, b.Kind);
            Assert.Equal(a.VocabSize, b.VocabSize);
            Assert.Equal((a.PadId, a.BosId, a.EosId, a.ClsId, a.SepId, a.UnkId, a.MaskId), (b.PadId, b.BosId, b.EosId, b.ClsId, b.SepId, b.UnkId, b.MaskId));
        }
    }

    [Fact]
    public void TokenizerJsonBpe_SplitThenByteLevelSequence_MatchesGpt2()
    {
        // Llama 3 / Qwen style: a Split with an explicit regex, then ByteLevel without its own regex.
        using var scratch = new ScratchFolder("gpt2-tokenizer-json");
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(scratch.Dir, "tokenizer.json")))!;
        root["pre_tokenizer"] = JsonNode.Parse("""
            {"type": "Sequence", "pretokenizers": [
              {"type": "Split", "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"},
               "behavior": "Isolated", "invert": false},
              {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}
            """);
        scratch.Write("tokenizer.json", root.ToJsonString());
        var tok = TextTokenizer.FromFolder(scratch.Dir);
        var reference = Load("gpt2-bpe");
        foreach (string text in Samples)
            Assert.Equal(reference.Encode(text), tok.Encode(text));
    }

    [Fact]
    public void TokenizerJsonBpe_AddedTokenOutsideVocab_IsMatchedWholeAndSkippedOnDecode()
    {
        using var scratch = new ScratchFolder("gpt2-tokenizer-json");
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(scratch.Dir, "tokenizer.json")))!;
        root["added_tokens"]!.AsArray().Add(JsonNode.Parse("""
            {"id": 293, "content": "<|pad|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            """));
        scratch.Write("tokenizer.json", root.ToJsonString());
        var tok = TextTokenizer.FromFolder(scratch.Dir);
        Assert.Equal(294, tok.VocabSize);
        Assert.Equal(293, tok.PadId);
        Assert.Equal(293, tok.TokenToId("<|pad|>"));
        Assert.Equal([64, 293, 65], tok.Encode("a<|pad|>b"));
        Assert.Equal("ab", tok.Decode([64, 293, 65]));
        Assert.Equal("a<|pad|>b", tok.Decode([64, 293, 65], skipSpecialTokens: false));
    }

    [Fact]
    public void TokenizerConfig_OverridesSpecialTokensAndAddsBos()
    {
        using var scratch = new ScratchFolder("gpt2-bpe");
        scratch.Write("special_tokens_map.json", """{"pad_token": {"content": "<|endoftext|>", "special": true}}""");
        scratch.Write("tokenizer_config.json", """{"add_bos_token": true, "unk_token": null}""");
        var tok = TextTokenizer.FromFolder(scratch.Dir);
        Assert.Equal(292, tok.PadId);
        Assert.Null(tok.UnkId);
        Assert.Equal([292, 264, 269], tok.Encode("Hello world"));
        Assert.Equal("Hello world", tok.Decode(tok.Encode("Hello world")));
    }

    // ---------------------------------------------------------------- RoBERTa (byte-level BPE with <s> </s>)

    [Fact]
    public void Roberta_WrapsInSAndEndS_WithPadIdOne()
    {
        foreach (var name in new[] { "roberta-bpe", "roberta-tokenizer-json" })
        {
            var tok = Load(name);
            Assert.Equal((1, 0, 2, 0, 2, 3, 296), (tok.PadId, tok.BosId, tok.EosId, tok.ClsId, tok.SepId, tok.UnkId, tok.MaskId));
            Assert.Equal(297, tok.VocabSize);
            Assert.Equal([0, 268, 273, 2], tok.Encode("Hello world"));
            Assert.Equal([268, 273], tok.Encode("Hello world", addSpecialTokens: false));
            var pair = tok.EncodePairWithTypeIds("Hello world", "the cat");
            Assert.Equal([0, 268, 273, 2, 2, 289, 281, 2], pair.Ids);
            Assert.Equal(new int[8], pair.TokenTypeIds);   // RoBERTa has a single token type
            Assert.Equal("Hello world", tok.Decode([0, 268, 273, 2, 1, 1]));
            Assert.Equal("<s>Hello world</s><pad>", tok.Decode([0, 268, 273, 2, 1], skipSpecialTokens: false));
        }
    }

    [Fact]
    public void Roberta_AddPrefixSpace_EncodesFirstWordLikeAMiddleOne()
    {
        using var scratch = new ScratchFolder("roberta-tokenizer-json");
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(scratch.Dir, "tokenizer.json")))!;
        root["pre_tokenizer"]!["add_prefix_space"] = true;
        scratch.Write("tokenizer.json", root.ToJsonString());
        var tok = TextTokenizer.FromFolder(scratch.Dir);
        Assert.Equal([0, 273, 2], tok.Encode("world"));    // " world" -> Ġworld
        Assert.Equal("world", tok.Decode(tok.Encode("world")));
    }

    // ---------------------------------------------------------------- WordPiece (BERT uncased)

    [Fact]
    public void BertVocabTxt_EncodesClsTextSepWithHandComputedIds()
    {
        var tok = Load("bert-wordpiece");
        Assert.Equal(TextTokenizer.WordPieceKind, tok.Kind);
        Assert.Equal(45, tok.VocabSize);
        Assert.Equal((0, 1, 2, 3, 4), (tok.PadId, tok.UnkId, tok.ClsId, tok.SepId, tok.MaskId));
        Assert.Null(tok.BosId);
        Assert.Null(tok.EosId);

        Assert.Equal([2, 5, 6, 27, 10, 11, 18, 3], tok.Encode("The cat is playing!"));   // lowercased; play ##ing
        Assert.Equal([2, 20, 21, 22, 1, 3], tok.Encode("unaffable zebra"));             // un ##aff ##able [UNK]
        Assert.Equal([2, 14, 17, 15, 16, 3], tok.Encode("HÉLLO, world."));               // accents stripped when lowercasing
        Assert.Equal([2, 5, 4, 7, 3], tok.Encode("the [MASK] sat"));                     // [MASK] kept whole
        Assert.Equal([5, 25, 23, 13], tok.Encode("the dog runs", addSpecialTokens: false));
    }

    [Fact]
    public void BertPair_HasSepAndTokenTypeIds()
    {
        foreach (var name in new[] { "bert-wordpiece", "bert-tokenizer-json" })
        {
            var tok = Load(name);
            var pair = tok.EncodePairWithTypeIds("hello world", "the dog runs");
            Assert.Equal([2, 14, 15, 3, 5, 25, 23, 13, 3], pair.Ids);
            Assert.Equal([0, 0, 0, 0, 1, 1, 1, 1, 1], pair.TokenTypeIds);
            Assert.Equal(pair.Ids, tok.EncodePair("hello world", "the dog runs"));
            var plain = tok.EncodePairWithTypeIds("hello world", "the dog runs", addSpecialTokens: false);
            Assert.Equal([14, 15, 5, 25, 23, 13], plain.Ids);
            Assert.Equal([0, 0, 1, 1, 1, 1], plain.TokenTypeIds);
        }
    }

    [Theory]
    [MemberData(nameof(Texts))]
    [InlineData("Unaffable dogs are running today, newest time!")]
    public void TokenizerJsonWordPiece_GivesSameIdsAsVocabTxt(string text)
    {
        var files = Load("bert-wordpiece");
        var json = Load("bert-tokenizer-json");
        Assert.Equal(files.Encode(text), json.Encode(text));
        Assert.Equal((files.VocabSize, files.PadId, files.UnkId, files.ClsId, files.SepId, files.MaskId),
                     (json.VocabSize, json.PadId, json.UnkId, json.ClsId, json.SepId, json.MaskId));
    }

    [Fact]
    public void BertDecode_SkipsSpecialTokensAndJoinsSubwords()
    {
        var tok = Load("bert-wordpiece");
        var ids = tok.Encode("The cat is playing!");
        Assert.Equal("the cat is playing!", tok.Decode(ids));
        Assert.Equal("[CLS] the cat is playing! [SEP]", tok.Decode(ids, skipSpecialTokens: false));
    }

    [Fact]
    public void BertDoLowerCaseFalse_KeepsCase()
    {
        using var scratch = new ScratchFolder("bert-wordpiece");
        scratch.Write("tokenizer_config.json", """{"do_lower_case": false}""");
        var tok = TextTokenizer.FromFolder(scratch.Dir);
        Assert.Equal([2, 1, 6, 3], tok.Encode("The cat"));    // "The" is not in the (lowercase) vocabulary
    }

    // ---------------------------------------------------------------- SentencePiece (llama-style BPE with byte fallback)

    [Fact]
    public void SentencePiece_PrefixesBosWithHandComputedIds()
    {
        var tok = Load("llama-sentencepiece");
        Assert.Equal(TextTokenizer.SentencePieceKind, tok.Kind);
        Assert.Equal(318, tok.VocabSize);
        Assert.Equal((0, 1, 2), (tok.UnkId, tok.BosId, tok.EosId));
        Assert.Null(tok.PadId);
        Assert.Null(tok.ClsId);

        Assert.Equal([1, 268, 273], tok.Encode("Hello world"));                               // <s> ▁Hello ▁world
        Assert.Equal([268, 273], tok.Encode("Hello world", addSpecialTokens: false));
        Assert.Equal([1, 261, 276, 278, 280, 261, 282], tok.Encode("the cat sat on the mat"));
        // ▁ T he (no ▁T or The piece), ▁dog, ▁is (via "is"), ▁playing, "."
        Assert.Equal([1, 295, 314, 260, 290, 294, 287, 315], tok.Encode("The dog is playing."));
        // Z and ë are not pieces: byte fallback to <0x5A> and <0xC3><0xAB> (id = 3 + byte).
        Assert.Equal([1, 295, 93, 299, 198, 174], tok.Encode("Zoë"));
    }

    [Theory]
    [InlineData("Hello world")]
    [InlineData("The dog is playing.")]
    [InlineData("héllo 🙂\nxyz  the\tend")]
    public void SentencePiece_DecodeRoundTrips(string text)
    {
        var tok = Load("llama-sentencepiece");
        Assert.Equal(text, tok.Decode(tok.Encode(text)));
    }

    [Fact]
    public void SentencePiece_PairPutsBosBeforeEachSegment()
    {
        var tok = Load("llama-sentencepiece");
        var pair = tok.EncodePairWithTypeIds("Hello", "world");
        Assert.Equal([1, 268, 1, 273], pair.Ids);
        Assert.Equal([0, 0, 1, 1], pair.TokenTypeIds);
        Assert.Equal("<s>Hello world</s>", tok.Decode([1, 268, 273, 2], skipSpecialTokens: false));
        Assert.Equal("Hello world", tok.Decode([1, 268, 273, 2]));
    }

    [Fact]
    public void UnsupportedTokenizerJsonWithTokenizerModel_FallsBackToSentencePiece()
    {
        using var scratch = new ScratchFolder("llama-sentencepiece");
        scratch.Write("tokenizer.json", """{"version": "1.0", "added_tokens": [], "model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0]]}}""");
        var tok = TextTokenizer.FromFolder(scratch.Dir);
        Assert.Equal(TextTokenizer.SentencePieceKind, tok.Kind);
        Assert.Equal([1, 268, 273], tok.Encode("Hello world"));
    }

    // ---------------------------------------------------------------- errors

    [Fact]
    public void MissingFolder_ThrowsFileNotFoundNamingIt()
    {
        string dir = Path.Combine(Path.GetTempPath(), "sparsetune-no-such-folder-" + Guid.NewGuid().ToString("N"));
        var e = Assert.Throws<FileNotFoundException>(() => TextTokenizer.FromFolder(dir));
        Assert.Contains(dir, e.Message);
        Assert.Contains("tokenizer.json", e.Message);
    }

    [Fact]
    public void FolderWithoutTokenizerFiles_ThrowsFileNotFoundListingWhatWasLookedFor()
    {
        using var scratch = new ScratchFolder();
        scratch.Write("config.json", "{}");
        var e = Assert.Throws<FileNotFoundException>(() => TextTokenizer.FromFolder(scratch.Dir));
        Assert.Contains(scratch.Dir, e.Message);
        foreach (string file in new[] { "tokenizer.json", "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model" })
            Assert.Contains(file, e.Message);
    }

    [Fact]
    public void VocabJsonWithoutMerges_ThrowsFileNotFoundNamingMergesTxt()
    {
        using var scratch = new ScratchFolder();
        File.Copy(Path.Combine(Folder("gpt2-bpe"), "vocab.json"), Path.Combine(scratch.Dir, "vocab.json"));
        var e = Assert.Throws<FileNotFoundException>(() => TextTokenizer.FromFolder(scratch.Dir));
        Assert.Contains("has vocab.json but no merges.txt", e.Message);
    }

    [Theory]
    [InlineData("Unigram", """{"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["a", -1.0]]}""")]
    [InlineData("WordLevel", """{"type": "WordLevel", "vocab": {"<unk>": 0, "a": 1}, "unk_token": "<unk>"}""")]
    public void UnsupportedTokenizerJsonModel_ThrowsNotSupportedNamingTheType(string type, string model)
    {
        using var scratch = new ScratchFolder();
        scratch.Write("tokenizer.json", $$"""{"version": "1.0", "added_tokens": [], "normalizer": null, "model": {{model}}}""");
        var e = Assert.Throws<NotSupportedException>(() => TextTokenizer.FromFolder(scratch.Dir));
        Assert.Contains($"'{type}'", e.Message);
        Assert.Contains(Path.Combine(scratch.Dir, "tokenizer.json"), e.Message);
    }

    [Fact]
    public void SentencePieceStyleBpeTokenizerJson_WithoutTokenizerModel_ThrowsNotSupported()
    {
        using var scratch = new ScratchFolder();
        scratch.Write("tokenizer.json", """
            {"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
             "pre_tokenizer": null, "decoder": {"type": "Sequence", "decoders": []},
             "model": {"type": "BPE", "byte_fallback": true, "vocab": {"<unk>": 0, "▁": 1}, "merges": []}}
            """);
        var e = Assert.Throws<NotSupportedException>(() => TextTokenizer.FromFolder(scratch.Dir));
        Assert.Contains("ByteLevel", e.Message);
    }

    [Fact]
    public void MalformedFiles_ThrowInvalidDataNamingTheFile()
    {
        using (var scratch = new ScratchFolder())
        {
            scratch.Write("tokenizer.json", "{ \"model\": ");
            var e = Assert.Throws<InvalidDataException>(() => TextTokenizer.FromFolder(scratch.Dir));
            Assert.Contains(Path.Combine(scratch.Dir, "tokenizer.json"), e.Message);
        }
        using (var scratch = new ScratchFolder())
        {
            scratch.Write("tokenizer.json", """{"version": "1.0"}""");
            var e = Assert.Throws<InvalidDataException>(() => TextTokenizer.FromFolder(scratch.Dir));
            Assert.Contains("model", e.Message);
        }
        using (var scratch = new ScratchFolder("bert-wordpiece"))
        {
            scratch.Write("tokenizer_config.json", """{"pad_token": "<pad>"}""");
            var e = Assert.Throws<InvalidDataException>(() => TextTokenizer.FromFolder(scratch.Dir));
            Assert.Contains("pad_token '<pad>'", e.Message);
            Assert.Contains("tokenizer_config.json", e.Message);
        }
        using (var scratch = new ScratchFolder())
        {
            scratch.Write("tokenizer.model", "not a protobuf at all");
            var e = Assert.Throws<InvalidDataException>(() => TextTokenizer.FromFolder(scratch.Dir));
            Assert.Contains(Path.Combine(scratch.Dir, "tokenizer.model"), e.Message);
        }
    }

    [Fact]
    public void Decode_RejectsIdsOutsideTheVocabulary()
    {
        var tok = Load("bert-wordpiece");
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([5, 45]));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([-1]));
    }

    private sealed class EncodedPairComparer : IEqualityComparer<EncodedPair>
    {
        public static readonly EncodedPairComparer Instance = new();
        public bool Equals(EncodedPair? x, EncodedPair? y) =>
            x is not null && y is not null && x.Ids.SequenceEqual(y.Ids) && x.TokenTypeIds.SequenceEqual(y.TokenTypeIds);
        public int GetHashCode(EncodedPair obj) => obj.Ids.Count;
    }
}
