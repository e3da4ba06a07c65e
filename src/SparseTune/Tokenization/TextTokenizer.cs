using Microsoft.ML.Tokenizers;

namespace SparseTune.Tokenization;

/// <summary>The ids of an encoded sequence pair with their token-type (segment) ids, index for index.</summary>
public sealed record EncodedPair(IReadOnlyList<int> Ids, IReadOnlyList<int> TokenTypeIds)
{
    /// <summary>Index in <see cref="Ids"/> of the second sequence's first token (where it would be when empty); 0 for a single sequence.</summary>
    public int SecondStart { get; init; }
}

/// <summary>
/// A tokenizer read from a Hugging Face model folder: a Microsoft.ML.Tokenizers tokenizer for the text itself plus
/// the special-token ids and the special-token template ([CLS] a [SEP], &lt;s&gt; a &lt;/s&gt;, BOS prefix ...)
/// Hugging Face adds around it.
/// </summary>
public sealed class TextTokenizer
{
    /// <summary><see cref="Kind"/> of byte-level BPE tokenizers (GPT-2, RoBERTa, Llama 3, Qwen ...).</summary>
    public const string BpeKind = "bpe";
    /// <summary><see cref="Kind"/> of WordPiece tokenizers (BERT).</summary>
    public const string WordPieceKind = "wordpiece";
    /// <summary><see cref="Kind"/> of SentencePiece tokenizers (tokenizer.model: Llama, Mistral ...).</summary>
    public const string SentencePieceKind = "sentencepiece";

    private readonly Func<string, IReadOnlyList<int>> _encode;
    private readonly Func<IReadOnlyList<int>, bool, string> _decode;
    private readonly IReadOnlyDictionary<string, int> _vocab;
    private readonly HashSet<int> _specialIds;
    private readonly SpecialTokenTemplate _template;
    private readonly bool _addPrefixSpace;

    internal TextTokenizer(TokenizerParts parts)
    {
        Inner = parts.Inner;
        Kind = parts.Kind;
        SourceFile = parts.SourceFile;
        _encode = parts.Encode;
        _decode = parts.Decode;
        _vocab = parts.Vocab;
        _template = parts.Template;
        _addPrefixSpace = parts.AddPrefixSpace;
        VocabSize = parts.Vocab.Count == 0 ? 0 : parts.Vocab.Values.Max() + 1;
        var ids = parts.Specials;
        (PadId, BosId, EosId, ClsId, SepId, UnkId, MaskId) = (ids.Pad, ids.Bos, ids.Eos, ids.Cls, ids.Sep, ids.Unk, ids.Mask);
        _specialIds = [.. parts.SpecialIds];
        foreach (int? id in new[] { PadId, BosId, EosId, ClsId, SepId, UnkId, MaskId })
            if (id is int value) _specialIds.Add(value);
    }

    /// <summary>
    /// Loads the tokenizer of a Hugging Face model folder, taking the first of: tokenizer.json (BPE or WordPiece
    /// model), vocab.json + merges.txt (byte-level BPE; RoBERTa specials when config.json says so), vocab.txt
    /// (BERT WordPiece), tokenizer.model (SentencePiece). Special tokens also come from special_tokens_map.json and
    /// tokenizer_config.json (the latter wins).
    /// </summary>
    /// <exception cref="FileNotFoundException">The folder does not exist or holds none of those files.</exception>
    /// <exception cref="InvalidDataException">A tokenizer file is malformed or names a token its vocabulary lacks.</exception>
    /// <exception cref="NotSupportedException">tokenizer.json uses a model, normalizer or pre-tokenizer this loader cannot
    /// reproduce (Unigram, WordLevel, SentencePiece-style BPE ...) and the folder has no tokenizer.model to fall back on.</exception>
    public static TextTokenizer FromFolder(string dir) => TokenizerFolderLoader.Load(dir);

    /// <summary>The Microsoft.ML.Tokenizers tokenizer doing the text-to-token work (without special-token templates).</summary>
    public Tokenizer Inner { get; }

    /// <summary>"bpe", "wordpiece" or "sentencepiece".</summary>
    public string Kind { get; }

    /// <summary>Full path of the file the vocabulary was read from (tokenizer.json, vocab.json, vocab.txt, tokenizer.model).</summary>
    public string SourceFile { get; }

    /// <summary>Largest token id plus one, added tokens included (Hugging Face's len(tokenizer)).</summary>
    public int VocabSize { get; }

    public int? PadId { get; }
    public int? BosId { get; }
    public int? EosId { get; }
    public int? ClsId { get; }
    public int? SepId { get; }
    public int? UnkId { get; }
    public int? MaskId { get; }

    /// <summary>Ids <see cref="Decode"/> drops when asked to skip special tokens.</summary>
    public IReadOnlyCollection<int> SpecialIds => _specialIds;

    /// <summary>
    /// Token ids of <paramref name="text"/>; with special tokens BERT/RoBERTa wrap it ([CLS] text [SEP],
    /// &lt;s&gt; text &lt;/s&gt;), SentencePiece prefixes BOS and GPT-2 adds nothing (as Hugging Face does).
    /// </summary>
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        IReadOnlyList<int> ids = EncodeText(text);
        return addSpecialTokens ? _template.Apply(ids, null).Ids : ids;
    }

    /// <summary>Token ids of a sequence pair: [CLS] a [SEP] b [SEP] for WordPiece, &lt;s&gt; a &lt;/s&gt;&lt;/s&gt; b &lt;/s&gt;
    /// for RoBERTa, BOS a BOS b for SentencePiece, plain a b for GPT-2.</summary>
    public IReadOnlyList<int> EncodePair(string first, string second) => EncodePairWithTypeIds(first, second).Ids;

    /// <summary>
    /// <see cref="EncodePair"/> with token-type ids: 0 for the first segment and 1 for the second (its trailing
    /// [SEP] included), except RoBERTa-style templates, whose models have a single token type (all 0).
    /// </summary>
    public EncodedPair EncodePairWithTypeIds(string first, string second, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        var template = addSpecialTokens ? _template : SpecialTokenTemplate.None;
        return template.Apply(EncodeText(first), EncodeText(second));
    }

    /// <summary>
    /// Token ids of <paramref name="text"/> without special tokens — the same ids as <c>Encode(text, false)</c> — and
    /// each token's character span in <paramref name="text"/> itself (not in the lowercased, accent-stripped or
    /// prefix-spaced text the tokenizer saw). See <see cref="TokenOffsets"/> for how exact the spans are.
    /// </summary>
    /// <exception cref="NotSupportedException">A SentencePiece tokenizer: only WordPiece and byte-level BPE report offsets here.</exception>
    public EncodedText EncodeWithOffsets(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (Kind == SentencePieceKind)
            throw new NotSupportedException($"{SourceFile}: character offsets are supported for WordPiece and byte-level BPE tokenizers, not SentencePiece.");
        string encoded = PrefixSpaced(text);
        return TokenOffsets.Encode(Inner, text, encoded, prefixLength: encoded.Length - text.Length);
    }

    /// <summary>
    /// The pair template around two already-encoded sequences ([CLS] a [SEP] b [SEP], &lt;s&gt; a &lt;/s&gt;&lt;/s&gt; b &lt;/s&gt; ...)
    /// with token types as <see cref="EncodePairWithTypeIds"/> and <see cref="EncodedPair.SecondStart"/> set.
    /// </summary>
    public EncodedPair BuildPair(IReadOnlyList<int> first, IReadOnlyList<int> second)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        return _template.Apply(first, second);
    }

    /// <summary>Special tokens the pair template adds (Hugging Face's num_special_tokens_to_add(pair=True)): 3 for BERT, 4 for RoBERTa.</summary>
    public int PairSpecialTokenCount => _template.Apply([], []).Ids.Count;

    /// <summary>Text of <paramref name="ids"/>; special tokens (pad, bos, eos, cls, sep, unk, mask and tokens marked special)
    /// are dropped unless <paramref name="skipSpecialTokens"/> is false.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var kept = new List<int>();
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)VocabSize)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"Token id {id} is outside the vocabulary (size {VocabSize}) of {SourceFile}.");
            if (!skipSpecialTokens || !_specialIds.Contains(id)) kept.Add(id);
        }
        string text = _decode(kept, skipSpecialTokens);
        return _addPrefixSpace && text.StartsWith(' ') ? text[1..] : text;
    }

    /// <summary>Id of a token (vocabulary entry or added token), or null.</summary>
    public int? TokenToId(string token) => _vocab.TryGetValue(token, out int id) ? id : null;

    private IReadOnlyList<int> EncodeText(string text) => _encode(PrefixSpaced(text));

    /// <summary>The text as the tokenizer sees it: with a leading space when the tokenizer adds a prefix space (RoBERTa's add_prefix_space).</summary>
    private string PrefixSpaced(string text) => _addPrefixSpace && text.Length > 0 && text[0] != ' ' ? " " + text : text;
}

/// <summary>Everything a loader hands to <see cref="TextTokenizer"/>.</summary>
internal sealed record TokenizerParts(
    Tokenizer Inner,
    string Kind,
    string SourceFile,
    Func<string, IReadOnlyList<int>> Encode,
    Func<IReadOnlyList<int>, bool, string> Decode,
    IReadOnlyDictionary<string, int> Vocab,
    SpecialTokenIds Specials,
    IEnumerable<int> SpecialIds,
    SpecialTokenTemplate Template,
    bool AddPrefixSpace = false);

internal sealed record SpecialTokenIds(int? Pad, int? Bos, int? Eos, int? Cls, int? Sep, int? Unk, int? Mask);
