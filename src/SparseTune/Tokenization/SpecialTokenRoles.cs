using System.Text.Json;

namespace SparseTune.Tokenization;

/// <summary>
/// Which token plays each special role (pad, bos, eos, cls, sep, unk, mask). Later sources override earlier ones:
/// well-known names found in the vocabulary, then what the tokenizer files themselves say, then
/// special_tokens_map.json, then tokenizer_config.json (as transformers' from_pretrained does; null there means none).
/// </summary>
internal sealed class SpecialTokenRoles
{
    private static readonly (string Role, string[] Candidates)[] WellKnown =
    [
        ("pad", ["[PAD]", "<pad>", "<|pad|>"]),
        ("bos", ["<s>", "<|begin_of_text|>", "<|startoftext|>", "<|endoftext|>"]),
        ("eos", ["</s>", "<|end_of_text|>", "<|endoftext|>"]),
        ("cls", ["[CLS]"]),
        ("sep", ["[SEP]"]),
        ("unk", ["[UNK]", "<unk>", "<|unk|>", "<|endoftext|>"]),
        ("mask", ["[MASK]", "<mask>"]),
    ];

    private readonly Dictionary<string, (string? Token, string? ConfigFile)> _roles = new(StringComparer.Ordinal);

    /// <summary>Fills every role with the first well-known token name present in <paramref name="vocab"/>.</summary>
    public void GuessFrom(IReadOnlyDictionary<string, int> vocab)
    {
        foreach (var (role, candidates) in WellKnown)
            if (candidates.FirstOrDefault(vocab.ContainsKey) is string token) _roles[role] = (token, null);
    }

    /// <summary>Sets a role from the tokenizer's own files when <paramref name="token"/> is in <paramref name="vocab"/>.</summary>
    public void SetFromModel(string role, string? token, IReadOnlyDictionary<string, int> vocab)
    {
        if (!string.IsNullOrEmpty(token) && vocab.ContainsKey(token)) _roles[role] = (token, null);
    }

    /// <summary>Applies the "&lt;role&gt;_token" entries of special_tokens_map.json, then of tokenizer_config.json.</summary>
    public void ApplyConfigFiles(TokenizerFolder folder)
    {
        foreach (string file in new[] { "special_tokens_map.json", "tokenizer_config.json" })
        {
            if (folder.ReadJson(file) is not JsonElement config || config.ValueKind != JsonValueKind.Object) continue;
            foreach (var (role, _) in WellKnown)
            {
                if (!config.TryGetProperty(role + "_token", out var value)) continue;
                string? token = value.ValueKind switch
                {
                    JsonValueKind.Null => null,
                    JsonValueKind.String => value.GetString(),
                    JsonValueKind.Object when value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
                    _ => throw new InvalidDataException($"{folder.PathOf(file)}: {role}_token should be a string, null or an object with \"content\"."),
                };
                _roles[role] = (token, folder.PathOf(file));
            }
        }
    }

    /// <summary>The token playing <paramref name="role"/>, or null.</summary>
    public string? Token(string role) => _roles.TryGetValue(role, out var entry) ? entry.Token : null;

    /// <summary>All tokens playing some role.</summary>
    public IEnumerable<string> Tokens => _roles.Values.Select(v => v.Token).OfType<string>().Distinct(StringComparer.Ordinal);

    /// <summary>The roles' ids; a config file naming a token <paramref name="vocab"/> lacks is an error.</summary>
    public SpecialTokenIds Resolve(IReadOnlyDictionary<string, int> vocab, string source)
    {
        int? Id(string role)
        {
            if (!_roles.TryGetValue(role, out var entry) || entry.Token is null) return null;
            if (vocab.TryGetValue(entry.Token, out int id)) return id;
            throw new InvalidDataException(
                $"{entry.ConfigFile ?? source} names {role}_token '{entry.Token}', which is neither in the vocabulary of {source} nor an added token.");
        }
        return new(Id("pad"), Id("bos"), Id("eos"), Id("cls"), Id("sep"), Id("unk"), Id("mask"));
    }
}
