using System.Text.RegularExpressions;

namespace SparseTune.Generation;

/// <summary>How <see cref="Bleu"/> splits a sentence into tokens.</summary>
public enum BleuTokenizer
{
    /// <summary>
    /// sacrebleu's default "13a" (mteval-v13a, as WMT scores): punctuation split off, except periods and commas
    /// inside numbers and hyphens inside words; then whitespace.
    /// </summary>
    ThirteenA,

    /// <summary>Whitespace only (the text is taken as already tokenised, as NLTK's corpus_bleu on split strings).</summary>
    Whitespace,
}

/// <summary>Corpus BLEU and the statistics behind it.</summary>
/// <param name="Score">BLEU in sacrebleu's 0–100 scale.</param>
/// <param name="Precisions">Modified n-gram precisions for n = 1..4, 0–100.</param>
/// <param name="Matches">Clipped n-gram matches summed over the corpus, n = 1..4.</param>
/// <param name="Totals">Hypothesis n-grams summed over the corpus, n = 1..4.</param>
/// <param name="ReferenceLength">Sum over sentences of the reference length closest to the hypothesis length (ties: the shorter).</param>
public sealed record BleuScore(double Score, double[] Precisions, double BrevityPenalty, long HypothesisLength, long ReferenceLength, long[] Matches, long[] Totals);

/// <summary>
/// Corpus-level BLEU-4 (Papineni et al., 2002) with several references per hypothesis, computed as sacrebleu's
/// <c>corpus_bleu(..., smooth_method="none")</c> and NLTK's <c>corpus_bleu</c> without smoothing compute it:
/// n-gram matches are clipped per sentence by the most times the n-gram occurs in any one reference and summed
/// over the corpus, as are hypothesis n-grams; the brevity penalty is exp(1 − r/c) when the corpus hypothesis
/// length c is below r, the sum of the per-sentence closest reference lengths;
/// BLEU = BP · exp(¼ Σ log pₙ), which is 0 as soon as one order has no match at all (no smoothing).
/// <para>
/// Tokenisation defaults to sacrebleu's (13a, case-sensitive). The official E2E scorer (e2e-metrics) tokenises
/// and normalises on its own, so its numbers can differ slightly from these; compare runs scored the same way.
/// </para>
/// </summary>
public static class Bleu
{
    public const int MaxOrder = 4;

    /// <summary>Corpus BLEU of <paramref name="hypotheses"/>[i] against all of <paramref name="references"/>[i].</summary>
    public static BleuScore Corpus(IReadOnlyList<string> hypotheses, IReadOnlyList<IReadOnlyList<string>> references,
        BleuTokenizer tokenizer = BleuTokenizer.ThirteenA, bool lowercase = false)
    {
        if (hypotheses.Count != references.Count)
            throw new ArgumentException($"{hypotheses.Count} hypotheses but {references.Count} reference lists");
        return CorpusFromTokens(
            hypotheses.Select(h => Tokenize(h, tokenizer, lowercase)).ToList(),
            references.Select(rs => (IReadOnlyList<IReadOnlyList<string>>)rs.Select(r => Tokenize(r, tokenizer, lowercase)).ToList()).ToList());
    }

    /// <summary>Corpus BLEU of tokenised sentences (each hypothesis needs at least one reference).</summary>
    public static BleuScore CorpusFromTokens(IReadOnlyList<IReadOnlyList<string>> hypotheses, IReadOnlyList<IReadOnlyList<IReadOnlyList<string>>> references)
    {
        if (hypotheses.Count != references.Count)
            throw new ArgumentException($"{hypotheses.Count} hypotheses but {references.Count} reference lists");
        var matches = new long[MaxOrder];
        var totals = new long[MaxOrder];
        long hypothesisLength = 0, referenceLength = 0;
        for (int s = 0; s < hypotheses.Count; s++)
        {
            var hypothesis = hypotheses[s];
            var refs = references[s];
            if (refs.Count == 0) throw new ArgumentException($"hypothesis {s} has no reference");
            hypothesisLength += hypothesis.Count;
            referenceLength += ClosestLength(hypothesis.Count, refs);
            for (int n = 1; n <= MaxOrder; n++)
            {
                var counts = NgramCounts(hypothesis, n);
                // Clip each hypothesis n-gram by the most times any single reference holds it.
                var maxRef = new Dictionary<string, int>();
                foreach (var reference in refs)
                    foreach (var (gram, count) in NgramCounts(reference, n))
                        if (count > maxRef.GetValueOrDefault(gram)) maxRef[gram] = count;
                foreach (var (gram, count) in counts)
                {
                    matches[n - 1] += Math.Min(count, maxRef.GetValueOrDefault(gram));
                    totals[n - 1] += count;
                }
            }
        }

        var precisions = new double[MaxOrder];
        for (int n = 0; n < MaxOrder; n++) precisions[n] = totals[n] == 0 ? 0 : 100.0 * matches[n] / totals[n];
        double brevity = hypothesisLength >= referenceLength ? 1
            : hypothesisLength == 0 ? 0
            : Math.Exp(1 - (double)referenceLength / hypothesisLength);
        double score = precisions.Min() > 0
            ? 100 * brevity * Math.Exp(precisions.Sum(p => Math.Log(p / 100)) / MaxOrder)
            : 0;
        return new BleuScore(score, precisions, brevity, hypothesisLength, referenceLength, matches, totals);
    }

    /// <summary>The tokens BLEU counts, after lowercasing when asked (as sacrebleu, before tokenising).</summary>
    public static IReadOnlyList<string> Tokenize(string text, BleuTokenizer tokenizer = BleuTokenizer.ThirteenA, bool lowercase = false)
    {
        if (lowercase) text = text.ToLowerInvariant();
        if (tokenizer == BleuTokenizer.ThirteenA) text = Tokenize13a(text);
        return text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
    }

    // mteval-v13a's language-dependent rules, in sacrebleu's order (tokenizer_13a.py / tokenizer_re.py).
    static readonly (Regex Pattern, string Replacement)[] Rules13a =
    [
        (new Regex(@"([\{-\~\[-\` -\&\(-\+\:-\@\/])", RegexOptions.CultureInvariant), " $1 "), // punctuation and symbols
        (new Regex(@"([^0-9])([\.,])", RegexOptions.CultureInvariant), "$1 $2 "), // period, comma unless after a digit
        (new Regex(@"([\.,])([^0-9])", RegexOptions.CultureInvariant), " $1 $2"), // period, comma unless before a digit
        (new Regex(@"([0-9])(-)", RegexOptions.CultureInvariant), "$1 $2 "), // a dash after a digit
    ];

    static string Tokenize13a(string line)
    {
        // The language-independent part: SGML leftovers and escaped entities.
        line = line.Replace("<skipped>", "").Replace("-\n", "").Replace("\n", " ")
            .Replace("&quot;", "\"").Replace("&amp;", "&").Replace("&lt;", "<").Replace("&gt;", ">");
        line = " " + line + " ";
        foreach (var (pattern, replacement) in Rules13a) line = pattern.Replace(line, replacement);
        return line;
    }

    static Dictionary<string, int> NgramCounts(IReadOnlyList<string> tokens, int n)
    {
        var counts = new Dictionary<string, int>();
        for (int i = 0; i + n <= tokens.Count; i++)
        {
            // U+001F (unit separator) cannot be typed into a sentence, so the joined key is unambiguous.
            string gram = string.Join('\u001F', Enumerable.Range(i, n).Select(k => tokens[k]));
            counts[gram] = counts.GetValueOrDefault(gram) + 1;
        }
        return counts;
    }

    static int ClosestLength(int hypothesisLength, IReadOnlyList<IReadOnlyList<string>> references)
    {
        int best = references[0].Count;
        foreach (var reference in references)
        {
            int diff = Math.Abs(reference.Count - hypothesisLength), bestDiff = Math.Abs(best - hypothesisLength);
            if (diff < bestDiff || (diff == bestDiff && reference.Count < best)) best = reference.Count;
        }
        return best;
    }
}
