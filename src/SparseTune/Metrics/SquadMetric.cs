using System.Text;
using System.Text.RegularExpressions;
using SparseTune.Data;

namespace SparseTune.Metrics;

/// <summary>
/// Scores of <see cref="SquadMetric.Evaluate"/>, in percent (0–100) as the official scripts print them. The HasAns /
/// NoAns splits are filled for SQuAD 2.0 only (questions with and without gold answers).
/// </summary>
/// <param name="Total">Questions scored.</param>
/// <param name="MissingPredictions">Questions with no prediction: v1.1 scores them 0 (and counts them in Total), v2.0 leaves them out.</param>
public sealed record SquadScores(double ExactMatch, double F1, int Total, int MissingPredictions)
{
    public int? HasAnsTotal { get; init; }
    public double? HasAnsExact { get; init; }
    public double? HasAnsF1 { get; init; }
    public int? NoAnsTotal { get; init; }
    public double? NoAnsExact { get; init; }
    public double? NoAnsF1 { get; init; }
}

/// <summary>
/// SQuAD exact match and token F1 as the official evaluate-v1.1.py and evaluate-v2.0.py compute them: both sides
/// normalised (lowercase, ASCII punctuation removed, articles a/an/the removed, whitespace collapsed), the best over
/// the gold answers. Version 2.0 gives an unanswerable question the gold list [""] and, when either side normalises
/// to nothing, F1 = 1 if both do and 0 otherwise.
/// </summary>
public static class SquadMetric
{
    /// <summary>Python's string.punctuation.</summary>
    const string Punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

    static readonly Regex Articles = new(@"\b(a|an|the)\b", RegexOptions.CultureInvariant);

    /// <summary>The scripts' normalize_answer: white_space_fix(remove_articles(remove_punc(lower(s)))).</summary>
    public static string NormalizeAnswer(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var kept = new StringBuilder(text.Length);
        foreach (char c in text.ToLowerInvariant())
            if (!Punctuation.Contains(c)) kept.Append(c);
        string noArticles = Articles.Replace(kept.ToString(), " ");
        return string.Join(' ', Tokens(noArticles));
    }

    /// <summary>1 when the normalised texts are equal, else 0.</summary>
    public static double ExactMatch(string prediction, string gold) => NormalizeAnswer(prediction) == NormalizeAnswer(gold) ? 1 : 0;

    /// <summary>Token F1 of the normalised texts (multiset overlap); see the class summary for empty texts.</summary>
    public static double F1(string prediction, string gold, bool version2)
    {
        var predicted = Tokens(NormalizeAnswer(prediction));
        var expected = Tokens(NormalizeAnswer(gold));
        if (version2 && (predicted.Length == 0 || expected.Length == 0)) return predicted.Length == expected.Length ? 1 : 0;
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string token in expected) counts[token] = counts.GetValueOrDefault(token) + 1;
        int same = 0;
        foreach (string token in predicted)
            if (counts.TryGetValue(token, out int left) && left > 0) { counts[token] = left - 1; same++; }
        if (same == 0) return 0;
        double precision = (double)same / predicted.Length, recall = (double)same / expected.Length;
        return 2 * precision * recall / (precision + recall);
    }

    /// <summary>
    /// Best exact match and F1 (each 0 or 1 / 0–1) of one prediction over the gold answers. Version 2.0 drops golds
    /// that normalise to nothing and uses [""] when none is left.
    /// </summary>
    public static (double ExactMatch, double F1) Score(IReadOnlyList<string> golds, string prediction, bool version2)
    {
        ArgumentNullException.ThrowIfNull(golds);
        ArgumentNullException.ThrowIfNull(prediction);
        IReadOnlyList<string> candidates = golds;
        if (version2)
        {
            var answerable = golds.Where(g => NormalizeAnswer(g).Length > 0).ToList();
            candidates = answerable.Count > 0 ? answerable : [""];
        }
        double exact = 0, f1 = 0;
        foreach (string gold in candidates)
        {
            exact = Math.Max(exact, ExactMatch(prediction, gold));
            f1 = Math.Max(f1, F1(prediction, gold, version2));
        }
        return (exact, f1);
    }

    /// <summary>
    /// Exact match and F1 in percent over <paramref name="examples"/>, predictions looked up by question id
    /// ("" predicts no answer). A missing prediction scores 0 in v1.1 and is left out in v2.0, as the scripts do.
    /// </summary>
    public static SquadScores Evaluate(IReadOnlyList<QaExample> examples, IReadOnlyDictionary<string, string> predictions, bool version2)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentNullException.ThrowIfNull(predictions);
        double exact = 0, f1 = 0, hasExact = 0, hasF1 = 0, noExact = 0, noF1 = 0;
        int total = 0, missing = 0, hasCount = 0, noCount = 0;
        foreach (var example in examples)
        {
            if (!predictions.TryGetValue(example.Id, out string? prediction))
            {
                missing++;
                if (!version2) total++;
                continue;
            }
            var (e, f) = Score(example.Answers.Select(a => a.Text).ToList(), prediction, version2);
            total++;
            exact += e;
            f1 += f;
            if (example.Answers.Count > 0) { hasCount++; hasExact += e; hasF1 += f; }
            else { noCount++; noExact += e; noF1 += f; }
        }
        static double Percent(double sum, int count) => count == 0 ? 0 : 100.0 * sum / count;
        var scores = new SquadScores(Percent(exact, total), Percent(f1, total), total, missing);
        if (!version2) return scores;
        return scores with
        {
            HasAnsTotal = hasCount, HasAnsExact = hasCount > 0 ? Percent(hasExact, hasCount) : null, HasAnsF1 = hasCount > 0 ? Percent(hasF1, hasCount) : null,
            NoAnsTotal = noCount, NoAnsExact = noCount > 0 ? Percent(noExact, noCount) : null, NoAnsF1 = noCount > 0 ? Percent(noF1, noCount) : null,
        };
    }

    /// <summary>Python's str.split(): runs of whitespace separate, none at the ends.</summary>
    static string[] Tokens(string text) => text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
}
