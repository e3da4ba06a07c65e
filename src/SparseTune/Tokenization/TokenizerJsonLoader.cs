using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace SparseTune.Tokenization;

/// <summary>
/// Reads a Hugging Face tokenizers file (tokenizer.json), for which Microsoft.ML.Tokenizers has no loader, and builds
/// the matching tokenizer: BPE with a ByteLevel pre-tokenizer (GPT-2, RoBERTa, Llama 3, Qwen ...) or WordPiece (BERT).
/// Other models fall back to the folder's tokenizer.model when there is one.
/// </summary>
internal static class TokenizerJsonLoader
{
    public static TextTokenizer Load(TokenizerFolder folder)
    {
        string path = folder.PathOf(TokenizerFolderLoader.TokenizerJson);
        var root = folder.ReadJson(TokenizerFolderLoader.TokenizerJson)!.Value;
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path} has no \"model\" object: not a Hugging Face tokenizers file.");
        string type = ModelType(model, path);
        string? unsupported = type switch
        {
            "BPE" => AnalyzePreTokenizer(root, path) is { ByteLevel: true } ? null
                : "BPE without a ByteLevel pre-tokenizer (SentencePiece-style BPE as in Llama 2 or Mistral)",
            "WordPiece" => null,
            _ => $"model type '{type}'",
        };
        if (unsupported is not null)
        {
            if (folder.Has(TokenizerFolderLoader.SentencePieceModel)) return TokenizerFolderLoader.LoadSentencePiece(folder, root);
            throw new NotSupportedException(
                $"{path}: {unsupported} is not supported; supported are BPE with a ByteLevel pre-tokenizer and WordPiece " +
                $"(SentencePiece models load from {TokenizerFolderLoader.SentencePieceModel}, which '{folder.Dir}' lacks).");
        }
        return type == "BPE" ? LoadBpe(folder, root, model, path) : LoadWordPiece(folder, root, model, path);
    }

    private static string ModelType(JsonElement model, string path)
    {
        if (model.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String) return t.GetString()!;
        // Files from tokenizers before 0.9 carry no type: recognise the model by its fields.
        if (model.TryGetProperty("merges", out _)) return "BPE";
        if (model.TryGetProperty("max_input_chars_per_word", out _)) return "WordPiece";
        if (model.TryGetProperty("vocab", out var v) && v.ValueKind == JsonValueKind.Array) return "Unigram";
        throw new InvalidDataException($"{path}: model has no \"type\" and its fields match no known model.");
    }

    // ------------------------------------------------------------------ BPE

    private static TextTokenizer LoadBpe(TokenizerFolder folder, JsonElement root, JsonElement model, string path)
    {
        var vocab = ReadVocabObject(model, path);
        var merges = new List<string>();
        if (model.TryGetProperty("merges", out var mergeList) && mergeList.ValueKind == JsonValueKind.Array)
            foreach (var merge in mergeList.EnumerateArray())
                merges.Add(merge switch
                {
                    { ValueKind: JsonValueKind.String } => merge.GetString()!,
                    { ValueKind: JsonValueKind.Array } when merge.GetArrayLength() == 2 && merge[0].ValueKind == JsonValueKind.String
                                                          && merge[1].ValueKind == JsonValueKind.String
                        => merge[0].GetString() + " " + merge[1].GetString(),
                    _ => throw new InvalidDataException($"{path}: merge {merge.GetRawText()} is neither \"a b\" nor [\"a\", \"b\"]."),
                });
        var pre = AnalyzePreTokenizer(root, path);
        Regex? split = null;
        if (pre.Pattern is not null)
        {
            try { split = new Regex(pre.Pattern, RegexOptions.CultureInvariant); }
            catch (ArgumentException e) { throw new NotSupportedException($"{path}: the pre-tokenizer regex cannot be used by .NET: {e.Message}", e); }
        }
        var normalizer = root.TryGetProperty("normalizer", out var n) ? BpeNormalizer(n, path) : null;

        var added = AddedTokens.Read(folder, root);
        var all = added.MergeInto(vocab);
        var roles = new SpecialTokenRoles();
        roles.GuessFrom(all);
        roles.SetFromModel("unk", model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String ? unk.GetString() : null, all);
        var template = Template(root, path, roles, all);
        roles.ApplyConfigFiles(folder);
        var ids = roles.Resolve(all, path);
        return TokenizerFolderLoader.BuildByteLevelBpe(path, vocab, merges, added, all, roles, ids, template, split, pre.AddPrefixSpace, normalizer);
    }

    private readonly record struct PreTokenization(bool ByteLevel, string? Pattern, bool AddPrefixSpace);

    /// <summary>
    /// Whether the model is byte-level and how text is split first: ByteLevel (GPT-2's regex unless use_regex is off),
    /// optionally after a Split with its own regex (Llama 3, Qwen), as a Sequence or alone.
    /// </summary>
    private static PreTokenization AnalyzePreTokenizer(JsonElement root, string path)
    {
        var steps = new List<JsonElement>();
        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object)
        {
            if (TypeOf(pre) == "Sequence" && pre.TryGetProperty("pretokenizers", out var list) && list.ValueKind == JsonValueKind.Array)
                steps.AddRange(list.EnumerateArray());
            else steps.Add(pre);
        }
        bool byteLevel = false, addPrefixSpace = false;
        string? pattern = null;
        var unsupported = new List<string>();
        foreach (var step in steps)
        {
            switch (TypeOf(step))
            {
                case "ByteLevel":
                    byteLevel = true;
                    addPrefixSpace = Flag(step, "add_prefix_space", true);
                    if (Flag(step, "use_regex", true))
                    {
                        if (pattern is not null) unsupported.Add("ByteLevel with use_regex after a Split");
                        pattern = SplitPreTokenizer.Gpt2Pattern;
                    }
                    break;
                case "Split":
                    string behavior = step.TryGetProperty("behavior", out var b) ? b.GetString() ?? "" : "";
                    string? regex = null;
                    if (step.TryGetProperty("pattern", out var p) && p.ValueKind == JsonValueKind.Object)
                        regex = p.TryGetProperty("Regex", out var r) ? r.GetString()
                              : p.TryGetProperty("String", out var s) ? Regex.Escape(s.GetString() ?? "") : null;
                    if (behavior != "Isolated" || Flag(step, "invert", false) || regex is null || pattern is not null)
                        unsupported.Add($"Split (behavior {behavior})");
                    else pattern = regex;
                    break;
                default:
                    unsupported.Add(TypeOf(step));
                    break;
            }
        }
        if (!byteLevel && root.TryGetProperty("decoder", out var decoder) && decoder.ValueKind == JsonValueKind.Object && TypeOf(decoder) == "ByteLevel")
            byteLevel = true;
        if (byteLevel && unsupported.Count > 0)
            throw new NotSupportedException($"{path}: pre_tokenizer step(s) {string.Join(", ", unsupported)} are not supported with byte-level BPE.");
        return new(byteLevel, pattern, addPrefixSpace);
    }

    private static Normalizer? BpeNormalizer(JsonElement normalizer, string path)
    {
        if (normalizer.ValueKind == JsonValueKind.Null) return null;
        string type = TypeOf(normalizer);
        switch (type)
        {
            case "NFC": return new UnicodeFormNormalizer(NormalizationForm.FormC);
            case "NFD": return new UnicodeFormNormalizer(NormalizationForm.FormD);
            case "NFKC": return new UnicodeFormNormalizer(NormalizationForm.FormKC);
            case "NFKD": return new UnicodeFormNormalizer(NormalizationForm.FormKD);
            case "Lowercase": return new LowerCaseNormalizer();
            case "Sequence":
                var steps = normalizer.TryGetProperty("normalizers", out var list) && list.ValueKind == JsonValueKind.Array
                    ? list.EnumerateArray().Select(s => BpeNormalizer(s, path)).OfType<Normalizer>().ToList()
                    : [];
                return steps.Count switch { 0 => null, 1 => steps[0], _ => new SequenceNormalizer(steps) };
            default:
                throw new NotSupportedException($"{path}: normalizer '{type}' is not supported for BPE (supported: NFC, NFD, NFKC, NFKD, Lowercase, Sequence).");
        }
    }

    // ------------------------------------------------------------------ WordPiece

    private static TextTokenizer LoadWordPiece(TokenizerFolder folder, JsonElement root, JsonElement model, string path)
    {
        var vocab = ReadVocabObject(model, path);
        var tokensById = new string[vocab.Count];
        foreach (var (token, id) in vocab)
        {
            if (id >= tokensById.Length || tokensById[id] is not null)
                throw new InvalidDataException($"{path}: WordPiece ids must run 0..{vocab.Count - 1} without gaps or repeats (token '{token}' has id {id}).");
            tokensById[id] = token;
        }
        bool lowerCase = false, splitCjk = true;
        bool? stripAccents = null;
        if (root.TryGetProperty("normalizer", out var normalizer))
            ReadWordPieceNormalizer(normalizer, path, ref lowerCase, ref stripAccents, ref splitCjk);

        var added = AddedTokens.Read(folder, root);
        var all = added.MergeInto(vocab);
        var roles = new SpecialTokenRoles();
        roles.GuessFrom(all);
        roles.SetFromModel("unk", model.TryGetProperty("unk_token", out var unk) && unk.ValueKind == JsonValueKind.String ? unk.GetString() : null, all);
        var template = Template(root, path, roles, all);
        roles.ApplyConfigFiles(folder);
        var ids = roles.Resolve(all, path);
        string prefix = model.TryGetProperty("continuing_subword_prefix", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString()! : "##";
        int maxChars = model.TryGetProperty("max_input_chars_per_word", out var m) && m.ValueKind == JsonValueKind.Number ? m.GetInt32() : 100;
        return TokenizerFolderLoader.BuildWordPiece(path, tokensById, added, all, roles, ids, template,
            lowerCase, stripAccents ?? lowerCase, splitCjk, prefix, maxChars);
    }

    private static void ReadWordPieceNormalizer(JsonElement normalizer, string path, ref bool lowerCase, ref bool? stripAccents, ref bool splitCjk)
    {
        if (normalizer.ValueKind == JsonValueKind.Null) return;
        string type = TypeOf(normalizer);
        switch (type)
        {
            case "BertNormalizer":
                lowerCase = Flag(normalizer, "lowercase", true);
                if (normalizer.TryGetProperty("strip_accents", out var s) && s.ValueKind is JsonValueKind.True or JsonValueKind.False) stripAccents = s.GetBoolean();
                splitCjk = Flag(normalizer, "handle_chinese_chars", true);
                break;
            case "Lowercase": lowerCase = true; break;
            case "StripAccents": stripAccents = true; break;
            case "NFC" or "NFD" or "NFKC" or "NFKD": break; // the BERT basic tokenizer normalises on its own
            case "Sequence":
                if (normalizer.TryGetProperty("normalizers", out var list) && list.ValueKind == JsonValueKind.Array)
                    foreach (var step in list.EnumerateArray()) ReadWordPieceNormalizer(step, path, ref lowerCase, ref stripAccents, ref splitCjk);
                break;
            default:
                throw new NotSupportedException($"{path}: normalizer '{type}' is not supported for WordPiece (supported: BertNormalizer, Lowercase, StripAccents, NFC/NFD/NFKC/NFKD, Sequence).");
        }
    }

    // ------------------------------------------------------------------ shared

    private static SpecialTokenTemplate Template(JsonElement root, string path, SpecialTokenRoles roles, Dictionary<string, int> all)
    {
        if (!root.TryGetProperty("post_processor", out var processor)) return SpecialTokenTemplate.None;
        var template = SpecialTokenTemplate.FromTokenizerJson(processor, path, out var cls, out var sep);
        roles.SetFromModel("cls", cls, all);
        roles.SetFromModel("sep", sep, all);
        return template;
    }

    private static Dictionary<string, int> ReadVocabObject(JsonElement model, string path)
    {
        if (!model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
            throw new InvalidDataException($"{path}: model.vocab should be an object of token: id.");
        var result = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var entry in vocab.EnumerateObject())
            result[entry.Name] = entry.Value.ValueKind == JsonValueKind.Number && entry.Value.TryGetInt32(out int id) && id >= 0
                ? id
                : throw new InvalidDataException($"{path}: model.vocab['{entry.Name}'] is {entry.Value.GetRawText()}, not a non-negative integer.");
        return result;
    }

    private static string TypeOf(JsonElement element) =>
        element.ValueKind == JsonValueKind.Object && element.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";

    private static bool Flag(JsonElement element, string name, bool fallback) =>
        element.TryGetProperty(name, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : fallback;
}
