using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace SparseTune.Tokenization;

/// <summary>A character range [Start, End) of a text.</summary>
public readonly record struct CharSpan(int Start, int End)
{
    public int Length => End - Start;

    /// <summary>True when <paramref name="position"/> lies in [Start, End).</summary>
    public bool Contains(int position) => position >= Start && position < End;

    public override string ToString() => $"[{Start}, {End})";
}

/// <summary>
/// The token ids of a text without special tokens and, index for index, each token's character span in the
/// original text (<see cref="TextTokenizer.EncodeWithOffsets"/>).
/// </summary>
public sealed record EncodedText(IReadOnlyList<int> Ids, IReadOnlyList<CharSpan> Offsets);

/// <summary>
/// Character spans of tokens in the original text, from the offsets Microsoft.ML.Tokenizers reports in the text it
/// tokenized (the normalized text when a normalizer runs).
/// </summary>
/// <remarks>
/// Exactness: byte-level BPE without a normalizer is exact (offsets index the text itself; every byte token of a
/// multi-byte character gets that whole character, surrogate pairs included). When a normalizer changes the text
/// (BERT's lowercasing, accent stripping, control-character removal and spaces around CJK characters), each text
/// element (a character with its combining marks, a surrogate pair, CR LF) is normalized on its own and every
/// normalized character maps back to the element it came from; this is exact whenever normalizing the elements
/// one by one gives the same text as normalizing the whole, as it does for those per-character normalizers.
/// Otherwise positions are scaled by the length ratio (monotone, best effort). Spans are trimmed of leading and
/// trailing whitespace (Hugging Face's trim_offsets: "Ġthe" covers "the"), unless the token is only whitespace.
/// </remarks>
internal static class TokenOffsets
{
    /// <summary>
    /// Tokens of <paramref name="encoded"/> (the text as handed to the tokenizer: <paramref name="text"/> after a
    /// prefix of <paramref name="prefixLength"/> added characters) with their spans in <paramref name="text"/>.
    /// </summary>
    public static EncodedText Encode(Tokenizer inner, string text, string encoded, int prefixLength)
    {
        var tokens = inner.EncodeToTokens(encoded, out string? normalized);
        var map = NormalizedToEncoded(inner.Normalizer, encoded, normalized);
        int normalizedLength = normalized?.Length ?? encoded.Length;
        var ids = new int[tokens.Count];
        var offsets = new CharSpan[tokens.Count];
        for (int i = 0; i < tokens.Count; i++)
        {
            ids[i] = tokens[i].Id;
            var (offset, length) = tokens[i].Offset.GetOffsetAndLength(normalizedLength);
            var span = map(offset, offset + length);
            int start = Math.Clamp(span.Start - prefixLength, 0, text.Length);
            int end = Math.Clamp(span.End - prefixLength, start, text.Length);
            offsets[i] = WholeCharacters(text, start, end);
        }
        return new EncodedText(ids, offsets);
    }

    /// <summary>Maps a [start, end) range of the normalized text to the encoded text.</summary>
    private static Func<int, int, CharSpan> NormalizedToEncoded(Normalizer? normalizer, string encoded, string? normalized)
    {
        // Case-only changes (lowercasing ASCII) keep every position.
        if (normalized is null || string.Equals(normalized, encoded, StringComparison.OrdinalIgnoreCase))
            return (start, end) => new CharSpan(start, end);
        if (normalizer is not null && ElementMap(normalizer, encoded, normalized) is { } owners)
            return (start, end) =>
            {
                if (owners.Length == 0) return new CharSpan(0, 0);
                if (end <= start)
                {
                    int at = start < owners.Length ? owners[start].Start : encoded.Length;
                    return new CharSpan(at, at);
                }
                return new CharSpan(owners[Math.Min(start, owners.Length - 1)].Start, owners[Math.Min(end, owners.Length) - 1].End);
            };
        double ratio = (double)encoded.Length / Math.Max(1, normalized.Length);
        return (start, end) => new CharSpan((int)Math.Floor(start * ratio), Math.Min(encoded.Length, (int)Math.Ceiling(end * ratio)));
    }

    /// <summary>For each normalized character, the text element of <paramref name="encoded"/> it came from; null when
    /// normalizing element by element does not reproduce <paramref name="normalized"/>.</summary>
    private static CharSpan[]? ElementMap(Normalizer normalizer, string encoded, string normalized)
    {
        var owners = new List<CharSpan>(normalized.Length);
        var rebuilt = new StringBuilder(normalized.Length);
        var elements = StringInfo.GetTextElementEnumerator(encoded);
        while (elements.MoveNext())
        {
            string element = elements.GetTextElement();
            string piece = normalizer.Normalize(element);
            rebuilt.Append(piece);
            var owner = new CharSpan(elements.ElementIndex, elements.ElementIndex + element.Length);
            for (int k = 0; k < piece.Length; k++) owners.Add(owner);
        }
        return rebuilt.ToString() == normalized ? [.. owners] : null;
    }

    /// <summary>The span widened to whole surrogate pairs, then trimmed of outer whitespace unless it is all whitespace.</summary>
    private static CharSpan WholeCharacters(string text, int start, int end)
    {
        if (start > 0 && start < text.Length && char.IsLowSurrogate(text[start]) && char.IsHighSurrogate(text[start - 1])) start--;
        if (end > 0 && end < text.Length && char.IsLowSurrogate(text[end]) && char.IsHighSurrogate(text[end - 1])) end++;
        int trimmedStart = start, trimmedEnd = end;
        while (trimmedStart < trimmedEnd && char.IsWhiteSpace(text[trimmedStart])) trimmedStart++;
        while (trimmedEnd > trimmedStart && char.IsWhiteSpace(text[trimmedEnd - 1])) trimmedEnd--;
        return trimmedStart < trimmedEnd ? new CharSpan(trimmedStart, trimmedEnd) : new CharSpan(start, end);
    }
}
