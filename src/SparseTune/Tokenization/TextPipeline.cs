using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace SparseTune.Tokenization;

/// <summary>
/// Hugging Face's pre-tokenization for byte-level BPE: added/special tokens are cut out first and kept whole, then
/// every other stretch is split by a regex with matches and the text between them kept as pieces ("Isolated").
/// </summary>
internal sealed class SplitPreTokenizer : PreTokenizer
{
    /// <summary>GPT-2's pattern, used by the ByteLevel pre-tokenizer when use_regex is on.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Regex? _pattern;
    private readonly Regex? _specials;

    public SplitPreTokenizer(Regex? pattern, IEnumerable<string> specialTokens)
    {
        _pattern = pattern;
        var alternatives = specialTokens.Where(t => t.Length > 0).Distinct(StringComparer.Ordinal)
            .OrderByDescending(t => t.Length).Select(Regex.Escape).ToList();
        _specials = alternatives.Count == 0 ? null : new Regex(string.Join("|", alternatives), RegexOptions.CultureInvariant);
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => PreTokenize(text.ToString());

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        if (string.IsNullOrEmpty(text)) yield break;
        int position = 0;
        if (_specials is not null)
            for (var m = _specials.Match(text); m.Success; m = m.NextMatch())
            {
                foreach (var piece in Split(text, position, m.Index)) yield return piece;
                yield return (m.Index, m.Length);
                position = m.Index + m.Length;
            }
        foreach (var piece in Split(text, position, text.Length)) yield return piece;
    }

    private IEnumerable<(int Offset, int Length)> Split(string text, int start, int end)
    {
        if (end <= start) yield break;
        if (_pattern is null)
        {
            yield return (start, end - start);
            yield break;
        }
        int position = start;
        // Match(string, beginning, length) sees only [start, end): lookarounds stop at special tokens, as in Hugging Face.
        for (var m = _pattern.Match(text, start, end - start); m.Success; m = m.NextMatch())
        {
            if (m.Length == 0) continue;
            if (m.Index > position) yield return (position, m.Index - position);
            yield return (m.Index, m.Length);
            position = m.Index + m.Length;
        }
        if (position < end) yield return (position, end - position);
    }
}

/// <summary>Unicode normalization (Hugging Face's NFC/NFD/NFKC/NFKD normalizers).</summary>
internal sealed class UnicodeFormNormalizer(NormalizationForm form) : Normalizer
{
    public override string Normalize(string original) => original.Normalize(form);
    public override string Normalize(ReadOnlySpan<char> original) => original.ToString().Normalize(form);
}

/// <summary>Several normalizers one after the other (Hugging Face's Sequence normalizer).</summary>
internal sealed class SequenceNormalizer(IReadOnlyList<Normalizer> steps) : Normalizer
{
    public override string Normalize(string original)
    {
        foreach (var step in steps) original = step.Normalize(original);
        return original;
    }

    public override string Normalize(ReadOnlySpan<char> original) => Normalize(original.ToString());
}
