namespace SparseTune.Data;

/// <summary>
/// Encoding with truncation that keeps the special tokens an encoder adds. The encoder is opaque, so the text's own
/// tokens (encoded without specials) are located inside the templated encoding; what surrounds them is the template.
/// Should the text's tokens not appear there as one run, the sequence keeps its first max-1 tokens and its last.
/// </summary>
internal static class Truncation
{
    public static int[] EncodeSingle(ITextEncoder encoder, string text, int maxLength)
    {
        var full = encoder.Encode(text, addSpecialTokens: true);
        if (full.Count <= maxLength) return [.. full];
        var content = encoder.Encode(text, addSpecialTokens: false);
        int at = IndexOf(full, content, 0);
        int specials = full.Count - content.Count;
        if (at < 0 || specials >= maxLength) return KeepLast(full, maxLength);
        return [.. Slice(full, 0, at), .. Slice(content, 0, maxLength - specials), .. Slice(full, at + content.Count, full.Count)];
    }

    /// <summary>A pair truncated longest-first: a token comes off the end of the longer text until the pair fits
    /// (off the second text when both are as long, as transformers' slow tokenizers do).</summary>
    public static (int[] Ids, int[] TokenTypeIds) EncodePair(ITextEncoder encoder, string a, string b, int maxLength)
    {
        var (ids, types) = encoder.EncodePair(a, b);
        if (ids.Count != types.Count)
            throw new InvalidOperationException($"the encoder returned {ids.Count} ids but {types.Count} token-type ids");
        if (ids.Count <= maxLength) return ([.. ids], [.. types]);
        var contentA = encoder.Encode(a, addSpecialTokens: false);
        var contentB = encoder.Encode(b, addSpecialTokens: false);
        int atA = IndexOf(ids, contentA, 0);
        int atB = atA < 0 ? -1 : IndexOf(ids, contentB, atA + contentA.Count);
        int specials = ids.Count - contentA.Count - contentB.Count;
        if (atB < 0 || specials >= maxLength) return (KeepLast(ids, maxLength), KeepLast(types, maxLength));

        int keepA = contentA.Count, keepB = contentB.Count;
        int budget = maxLength - specials;
        if (keepA + keepB > budget)
        {
            // Longest first, in closed form: shorten the longer down to the shorter, then alternate (B first on ties).
            int excess = keepA + keepB - budget;
            int gap = Math.Abs(keepA - keepB);
            int fromGap = Math.Min(gap, excess);
            if (keepA > keepB) keepA -= fromGap; else keepB -= fromGap;
            excess -= fromGap;
            keepB -= (excess + 1) / 2;
            keepA -= excess / 2;
        }
        int endA = atA + contentA.Count, endB = atB + contentB.Count;
        int[] Pick(IReadOnlyList<int> source) =>
            [.. Slice(source, 0, atA + keepA), .. Slice(source, endA, atB + keepB), .. Slice(source, endB, source.Count)];
        return (Pick(ids), Pick(types));
    }

    /// <summary>The special-token prefix and the text's own tokens of a templated encoding, without any special-token
    /// suffix (a prompt that a response will follow).</summary>
    public static int[] EncodeWithoutSuffix(ITextEncoder encoder, string text)
    {
        var full = encoder.Encode(text, addSpecialTokens: true);
        var content = encoder.Encode(text, addSpecialTokens: false);
        int at = IndexOf(full, content, 0);
        return at < 0 ? [.. full] : [.. Slice(full, 0, at + content.Count)];
    }

    static int[] KeepLast(IReadOnlyList<int> ids, int maxLength) =>
        maxLength <= 0 ? [] : [.. Slice(ids, 0, maxLength - 1), ids[^1]];

    static IEnumerable<int> Slice(IReadOnlyList<int> list, int from, int to)
    {
        for (int i = from; i < to; i++) yield return list[i];
    }

    /// <summary>First index ≥ from where <paramref name="part"/> occurs in <paramref name="whole"/> as a run; -1 if none.</summary>
    internal static int IndexOf(IReadOnlyList<int> whole, IReadOnlyList<int> part, int from)
    {
        for (int start = from; start + part.Count <= whole.Count; start++)
        {
            int k = 0;
            while (k < part.Count && whole[start + k] == part[k]) k++;
            if (k == part.Count) return start;
        }
        return -1;
    }
}
