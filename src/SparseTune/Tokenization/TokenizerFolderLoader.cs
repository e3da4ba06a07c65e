using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace SparseTune.Tokenization;

/// <summary>The files of a model folder, with JSON files parsed once and errors naming the file.</summary>
internal sealed class TokenizerFolder(string dir)
{
    private static readonly JsonDocumentOptions Options = new() { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip };
    private readonly Dictionary<string, JsonElement?> _json = new(StringComparer.Ordinal);

    public string Dir { get; } = dir;
    public string PathOf(string file) => Path.Combine(Dir, file);
    public bool Has(string file) => File.Exists(PathOf(file));

    /// <summary>The parsed file, or null when it does not exist.</summary>
    public JsonElement? ReadJson(string file)
    {
        if (_json.TryGetValue(file, out var cached)) return cached;
        JsonElement? result = null;
        if (Has(file))
        {
            try
            {
                using var stream = File.OpenRead(PathOf(file));
                using var doc = JsonDocument.Parse(stream, Options);
                result = doc.RootElement.Clone();
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{PathOf(file)} is not valid JSON: {e.Message}", e);
            }
        }
        return _json[file] = result;
    }

    /// <summary>A boolean entry of tokenizer_config.json, or <paramref name="fallback"/>.</summary>
    public bool ConfigFlag(string name, bool fallback) =>
        ReadJson("tokenizer_config.json") is JsonElement { ValueKind: JsonValueKind.Object } config
        && config.TryGetProperty(name, out var value) && value.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? value.GetBoolean()
            : fallback;

    /// <summary>A string entry of a JSON object file, or null.</summary>
    public string? JsonString(string file, string name) =>
        ReadJson(file) is JsonElement { ValueKind: JsonValueKind.Object } obj && obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String
            ? v.GetString()
            : null;
}

/// <summary>Added tokens (Hugging Face: tokens outside the model's own vocabulary or marked special).</summary>
internal sealed class AddedTokens
{
    public Dictionary<string, int> Ids { get; } = new(StringComparer.Ordinal);
    public HashSet<int> Special { get; } = [];

    /// <summary>Reads tokenizer.json's added_tokens (when given), added_tokens.json and tokenizer_config.json's added_tokens_decoder.</summary>
    public static AddedTokens Read(TokenizerFolder folder, JsonElement? tokenizerJson)
    {
        var added = new AddedTokens();
        if (tokenizerJson is JsonElement root && root.TryGetProperty("added_tokens", out var list) && list.ValueKind == JsonValueKind.Array)
            foreach (var token in list.EnumerateArray())
            {
                if (!token.TryGetProperty("id", out var id) || !token.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"{folder.PathOf("tokenizer.json")}: added token {token.GetRawText()} lacks id or content.");
                added.Add(content.GetString()!, id.GetInt32(), token.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True);
            }
        if (folder.ReadJson("added_tokens.json") is JsonElement { ValueKind: JsonValueKind.Object } file)
            foreach (var entry in file.EnumerateObject())
                added.Add(entry.Name, entry.Value.GetInt32(), special: false);
        if (folder.ReadJson("tokenizer_config.json") is JsonElement { ValueKind: JsonValueKind.Object } config
            && config.TryGetProperty("added_tokens_decoder", out var decoder) && decoder.ValueKind == JsonValueKind.Object)
            foreach (var entry in decoder.EnumerateObject())
                if (int.TryParse(entry.Name, out int id) && entry.Value.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String)
                    added.Add(content.GetString()!, id, entry.Value.TryGetProperty("special", out var s) && s.ValueKind == JsonValueKind.True);
        return added;
    }

    private void Add(string content, int id, bool special)
    {
        Ids[content] = id;
        if (special) Special.Add(id);
    }

    /// <summary><paramref name="vocab"/> plus the added tokens.</summary>
    public Dictionary<string, int> MergeInto(IReadOnlyDictionary<string, int> vocab)
    {
        var all = new Dictionary<string, int>(vocab, StringComparer.Ordinal);
        foreach (var (token, id) in Ids) all[token] = id;
        return all;
    }
}

/// <summary>Picks and runs the loader for a model folder; see <see cref="TextTokenizer.FromFolder"/>.</summary>
internal static class TokenizerFolderLoader
{
    internal const string TokenizerJson = "tokenizer.json";
    internal const string VocabJson = "vocab.json";
    internal const string MergesTxt = "merges.txt";
    internal const string VocabTxt = "vocab.txt";
    internal const string SentencePieceModel = "tokenizer.model";
    private const string LookedFor = "tokenizer.json, vocab.json + merges.txt, vocab.txt or tokenizer.model";

    private static readonly string[] RobertaModelTypes = ["roberta", "roberta-prelayernorm", "longformer", "bart", "led", "data2vec-text"];

    public static TextTokenizer Load(string dir)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(dir);
        string full = Path.GetFullPath(dir);
        if (!Directory.Exists(full))
            throw new FileNotFoundException($"Tokenizer folder '{full}' does not exist (looked for {LookedFor}).", full);
        var folder = new TokenizerFolder(full);
        if (folder.Has(TokenizerJson)) return TokenizerJsonLoader.Load(folder);
        if (folder.Has(VocabJson) && folder.Has(MergesTxt)) return LoadVocabAndMerges(folder);
        if (folder.Has(VocabTxt)) return LoadVocabTxt(folder);
        if (folder.Has(SentencePieceModel)) return LoadSentencePiece(folder, tokenizerJson: null);
        string hint = folder.Has(VocabJson) ? $" It has {VocabJson} but no {MergesTxt}."
            : folder.Has(MergesTxt) ? $" It has {MergesTxt} but no {VocabJson}." : "";
        throw new FileNotFoundException($"No tokenizer found in '{full}': looked for {LookedFor}.{hint}", folder.PathOf(TokenizerJson));
    }

    // ------------------------------------------------------------------ vocab.json + merges.txt (GPT-2, RoBERTa)

    private static TextTokenizer LoadVocabAndMerges(TokenizerFolder folder)
    {
        string source = folder.PathOf(VocabJson);
        var vocab = ReadVocabJson(source);
        var merges = File.ReadLines(folder.PathOf(MergesTxt))
            .Where((line, i) => line.Length > 0 && !(i == 0 && line.StartsWith("#version", StringComparison.Ordinal)))
            .ToList();
        bool roberta = IsRobertaLike(folder);
        var added = AddedTokens.Read(folder, tokenizerJson: null);
        var all = added.MergeInto(vocab);
        var roles = new SpecialTokenRoles();
        roles.GuessFrom(all);
        if (roberta)
        {
            roles.SetFromModel("cls", "<s>", all);
            roles.SetFromModel("sep", "</s>", all);
        }
        roles.ApplyConfigFiles(folder);
        var ids = roles.Resolve(all, source);
        SpecialTokenTemplate template;
        if (roberta)
            template = ids is { Cls: int cls, Sep: int sep } ? SpecialTokenTemplate.Roberta(cls, sep)
                : throw new InvalidDataException($"{source}: a RoBERTa-style tokenizer needs <s> and </s> (cls and sep tokens) in its vocabulary.");
        else
            template = SpecialTokenTemplate.BosEos(folder.ConfigFlag("add_bos_token", false) ? ids.Bos : null,
                                                   folder.ConfigFlag("add_eos_token", false) ? ids.Eos : null);
        return BuildByteLevelBpe(source, vocab, merges, added, all, roles, ids, template,
            new Regex(SplitPreTokenizer.Gpt2Pattern, RegexOptions.CultureInvariant), folder.ConfigFlag("add_prefix_space", false), normalizer: null);
    }

    private static bool IsRobertaLike(TokenizerFolder folder)
    {
        string? modelType = folder.JsonString("config.json", "model_type");
        if (modelType is not null && RobertaModelTypes.Contains(modelType, StringComparer.OrdinalIgnoreCase)) return true;
        string? tokenizerClass = folder.JsonString("tokenizer_config.json", "tokenizer_class");
        return tokenizerClass is not null && new[] { "Roberta", "Bart", "Longformer", "LED" }.Any(p => tokenizerClass.StartsWith(p, StringComparison.Ordinal));
    }

    internal static Dictionary<string, int> ReadVocabJson(string path)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        try
        {
            using var stream = File.OpenRead(path);
            using var doc = JsonDocument.Parse(stream);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path} should hold a JSON object of token: id.");
            foreach (var entry in doc.RootElement.EnumerateObject())
                vocab[entry.Name] = entry.Value.ValueKind == JsonValueKind.Number && entry.Value.TryGetInt32(out int id) && id >= 0
                    ? id
                    : throw new InvalidDataException($"{path}: token '{entry.Name}' has id {entry.Value.GetRawText()}, not a non-negative integer.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path} is not valid JSON: {e.Message}", e);
        }
        return vocab;
    }

    /// <summary>A byte-level BPE tokenizer (GPT-2's byte-to-character table, regex pre-split, merges by rank).</summary>
    internal static TextTokenizer BuildByteLevelBpe(string source, IReadOnlyDictionary<string, int> vocab, IReadOnlyList<string> merges,
        AddedTokens added, Dictionary<string, int> all, SpecialTokenRoles roles, SpecialTokenIds ids, SpecialTokenTemplate template,
        Regex? split, bool addPrefixSpace, Normalizer? normalizer)
    {
        // Added tokens and special-role tokens are matched in raw text and never split (Hugging Face's added-token pass).
        var specials = new Dictionary<string, int>(added.Ids, StringComparer.Ordinal);
        foreach (string token in roles.Tokens)
            if (all.TryGetValue(token, out int id)) specials[token] = id;
        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocab)
            {
                Merges = merges,
                ByteLevel = true,
                PreTokenizer = new SplitPreTokenizer(split, specials.Keys),
                Normalizer = normalizer,
                SpecialTokens = specials.Count > 0 ? specials : null,
            });
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new InvalidDataException($"{source}: cannot build a byte-level BPE tokenizer: {e.Message}", e);
        }
        return new TextTokenizer(new TokenizerParts(
            bpe, TextTokenizer.BpeKind, source,
            text => bpe.EncodeToIds(text),
            (list, _) => bpe.Decode(list, considerSpecialTokens: true),
            all, ids, added.Special, template, addPrefixSpace));
    }

    // ------------------------------------------------------------------ vocab.txt (BERT WordPiece)

    private static TextTokenizer LoadVocabTxt(TokenizerFolder folder)
    {
        string source = folder.PathOf(VocabTxt);
        var tokens = File.ReadAllLines(source);
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < tokens.Length; i++) vocab[tokens[i]] = i;
        var added = AddedTokens.Read(folder, tokenizerJson: null);
        var all = added.MergeInto(vocab);
        var roles = new SpecialTokenRoles();
        roles.GuessFrom(all);
        roles.ApplyConfigFiles(folder);
        var ids = roles.Resolve(all, source);
        bool lowerCase = folder.ConfigFlag("do_lower_case", true);
        bool stripAccents = folder.ConfigFlag("strip_accents", lowerCase); // transformers: unset follows lowercase
        var template = ids is { Cls: int cls, Sep: int sep } ? SpecialTokenTemplate.Bert(cls, sep) : SpecialTokenTemplate.None;
        return BuildWordPiece(source, tokens, added, all, roles, ids, template, lowerCase, stripAccents,
            folder.ConfigFlag("tokenize_chinese_chars", true), continuingSubwordPrefix: "##", maxInputCharsPerWord: 100);
    }

    /// <summary>A BERT tokenizer: basic tokenization (cleanup, punctuation, optional lowercase/accent strip, CJK) then WordPiece.</summary>
    internal static TextTokenizer BuildWordPiece(string source, IReadOnlyList<string> tokensById, AddedTokens added,
        Dictionary<string, int> all, SpecialTokenRoles roles, SpecialTokenIds ids, SpecialTokenTemplate template,
        bool lowerCase, bool stripAccents, bool splitCjk, string continuingSubwordPrefix, int maxInputCharsPerWord)
    {
        var inVocab = new HashSet<string>(tokensById, StringComparer.Ordinal);
        string unk = roles.Token("unk") is string u && inVocab.Contains(u)
            ? u
            : throw new InvalidDataException($"{source}: a WordPiece vocabulary needs an unknown token ([UNK]) for words it cannot split.");
        // Microsoft.ML.Tokenizers insists that its cls/sep/pad/mask tokens exist; the template adds specials, so a
        // missing role only needs a stand-in.
        string RoleOrUnk(string role) => roles.Token(role) is string t && inVocab.Contains(t) ? t : unk;
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (token, id) in added.Ids)
            if (id < tokensById.Count && tokensById[id] == token) specials[token] = id;
        var options = new BertOptions
        {
            LowerCaseBeforeTokenization = lowerCase,
            RemoveNonSpacingMarks = stripAccents,
            IndividuallyTokenizeCjk = splitCjk,
            ApplyBasicTokenization = true,
            SplitOnSpecialTokens = true,
            UnknownToken = unk,
            ClassificationToken = RoleOrUnk("cls"),
            SeparatorToken = RoleOrUnk("sep"),
            PaddingToken = RoleOrUnk("pad"),
            MaskingToken = RoleOrUnk("mask"),
            ContinuingSubwordPrefix = continuingSubwordPrefix,
            MaxInputCharsPerWord = maxInputCharsPerWord,
            SpecialTokens = specials.Count > 0 ? specials : null,
        };
        BertTokenizer bert;
        try
        {
            using var stream = new MemoryStream(Encoding.UTF8.GetBytes(string.Join("\n", tokensById) + "\n"));
            bert = BertTokenizer.Create(stream, options);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{source}: cannot build a WordPiece tokenizer: {e.Message}", e);
        }
        return new TextTokenizer(new TokenizerParts(
            bert, TextTokenizer.WordPieceKind, source,
            text => bert.EncodeToIds(text, addSpecialTokens: false, considerPreTokenization: true, considerNormalization: true),
            (list, _) => bert.Decode(list, skipSpecialTokens: false),
            all, ids, added.Special, template));
    }

    // ------------------------------------------------------------------ tokenizer.model (SentencePiece)

    /// <summary>
    /// A SentencePiece model. <paramref name="tokenizerJson"/> is the folder's tokenizer.json when that could not be
    /// used itself: its added tokens and post-processor still apply.
    /// </summary>
    internal static TextTokenizer LoadSentencePiece(TokenizerFolder folder, JsonElement? tokenizerJson)
    {
        string source = folder.PathOf(SentencePieceModel);
        var added = AddedTokens.Read(folder, tokenizerJson);
        var sp = CreateSentencePiece(source, null);
        var extra = added.Ids.Where(kv => !sp.Vocabulary.ContainsKey(kv.Key)).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        if (extra.Count > 0) sp = CreateSentencePiece(source, extra);
        var all = added.MergeInto(sp.Vocabulary);
        var roles = new SpecialTokenRoles();
        roles.GuessFrom(all);
        roles.SetFromModel("bos", sp.BeginningOfSentenceToken, all);
        roles.SetFromModel("eos", sp.EndOfSentenceToken, all);
        roles.SetFromModel("unk", sp.UnknownToken, all);
        SpecialTokenTemplate? template = null;
        if (tokenizerJson is JsonElement root && root.TryGetProperty("post_processor", out var processor))
        {
            template = SpecialTokenTemplate.FromTokenizerJson(processor, folder.PathOf(TokenizerJson), out var cls, out var sep);
            roles.SetFromModel("cls", cls, all);
            roles.SetFromModel("sep", sep, all);
        }
        roles.ApplyConfigFiles(folder);
        var ids = roles.Resolve(all, source);
        template ??= SpecialTokenTemplate.BosEos(folder.ConfigFlag("add_bos_token", true) ? ids.Bos : null,
                                                 folder.ConfigFlag("add_eos_token", false) ? ids.Eos : null);
        return new TextTokenizer(new TokenizerParts(
            sp, TextTokenizer.SentencePieceKind, source,
            text => sp.EncodeToIds(text, addBeginningOfSentence: false, addEndOfSentence: false, considerPreTokenization: true, considerNormalization: true),
            (list, skipSpecialTokens) => sp.Decode(list, considerSpecialTokens: !skipSpecialTokens),
            all, ids, added.Special, template));
    }

    private static SentencePieceTokenizer CreateSentencePiece(string path, IReadOnlyDictionary<string, int>? specialTokens)
    {
        try
        {
            using var stream = File.OpenRead(path);
            return SentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false, specialTokens);
        }
        catch (NotSupportedException e)
        {
            throw new NotSupportedException($"{path}: {e.Message}", e);
        }
        catch (Exception e) when (e is not (FileNotFoundException or DirectoryNotFoundException or UnauthorizedAccessException or OutOfMemoryException))
        {
            throw new InvalidDataException($"{path} is not a usable SentencePiece model: {e.Message}", e);
        }
    }
}
