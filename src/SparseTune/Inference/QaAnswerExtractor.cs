using SparseTune.Data;

namespace SparseTune.Inference;

/// <summary>Options of <see cref="QaAnswerExtractor.Extract"/>; the defaults are Hugging Face run_qa.py's.</summary>
public sealed record QaExtractionOptions
{
    /// <summary>Start and end candidates taken per feature: the highest n logits of each.</summary>
    public int NBestSize { get; init; } = 20;

    /// <summary>Longest answer in tokens (end − start + 1).</summary>
    public int MaxAnswerLength { get; init; } = 30;

    /// <summary>SQuAD 2.0: the question may have no answer, predicted as "" when the null score beats the best span by more than <see cref="NullScoreThreshold"/>.</summary>
    public bool Version2 { get; init; }

    /// <summary>Predict no answer when null score − best span score exceeds this (run_qa.py's null_score_diff_threshold).</summary>
    public double NullScoreThreshold { get; init; }
}

/// <summary>The answer predicted for one question.</summary>
/// <param name="Text">Context[Start..End]; "" for no answer.</param>
/// <param name="Start">First character of the answer in the context (0 for no answer).</param>
/// <param name="End">Character after the answer's last (0 for no answer).</param>
/// <param name="Score">Start logit + end logit of the chosen span, or the null score when no answer is predicted.</param>
/// <param name="NullScoreDiff">Null score − best span score (run_qa.py's null_odds entry); NaN when there is no span
/// or (SQuAD v1.1) no null score.</param>
public sealed record QaPrediction(string Id, string Text, int Start, int End, double Score, double NullScoreDiff)
{
    public bool IsNoAnswer => Text.Length == 0;
}

/// <summary>
/// Turns the start and end logits of every feature back into one answer per question, as Hugging Face's
/// utils_qa.postprocess_qa_predictions: per feature the n best starts × n best ends, skipping spans outside the
/// context tokens, ending before they start or longer than MaxAnswerLength; a span scores start + end logit and the
/// best over all the question's features wins. The null score is the lowest start[0] + end[0] over the features.
/// </summary>
/// <remarks>
/// Where a question has no valid span at all, run_qa.py answers the literal text "empty"; this returns "" (no answer)
/// with NaN <see cref="QaPrediction.NullScoreDiff"/> instead.
/// </remarks>
public static class QaAnswerExtractor
{
    /// <summary>One prediction per example, index for index.</summary>
    /// <param name="features">The features of <paramref name="examples"/> (<see cref="QaFeatures.Build"/>), in any order.</param>
    /// <param name="startLogits">Per feature, index for index with <paramref name="features"/>: a start logit per token
    /// (may run past the feature's tokens into padding; those positions are ignored).</param>
    /// <param name="endLogits">Per feature: an end logit per token.</param>
    public static IReadOnlyList<QaPrediction> Extract(IReadOnlyList<QaExample> examples, IReadOnlyList<QaFeature> features,
        IReadOnlyList<float[]> startLogits, IReadOnlyList<float[]> endLogits, QaExtractionOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentNullException.ThrowIfNull(features);
        ArgumentNullException.ThrowIfNull(startLogits);
        ArgumentNullException.ThrowIfNull(endLogits);
        options ??= new QaExtractionOptions();
        if (options.NBestSize < 1) throw new ArgumentOutOfRangeException(nameof(options), $"NBestSize must be at least 1 (got {options.NBestSize}).");
        if (options.MaxAnswerLength < 1) throw new ArgumentOutOfRangeException(nameof(options), $"MaxAnswerLength must be at least 1 (got {options.MaxAnswerLength}).");
        if (startLogits.Count != features.Count || endLogits.Count != features.Count)
            throw new ArgumentException($"Expected start and end logits for each of the {features.Count} features, got {startLogits.Count} and {endLogits.Count}.");

        var featuresOf = new List<int>[examples.Count];
        for (int f = 0; f < features.Count; f++)
        {
            int index = features[f].ExampleIndex;
            if ((uint)index >= (uint)examples.Count)
                throw new ArgumentException($"Feature {f} belongs to example {index}, but there are {examples.Count} examples.", nameof(features));
            if (startLogits[f].Length == 0 || endLogits[f].Length == 0)
                throw new ArgumentException($"Feature {f} has no logits.", nameof(startLogits));
            (featuresOf[index] ??= []).Add(f);
        }

        var predictions = new QaPrediction[examples.Count];
        for (int e = 0; e < examples.Count; e++)
            predictions[e] = Best(examples[e], featuresOf[e] ?? [], features, startLogits, endLogits, options);
        return predictions;
    }

    static QaPrediction Best(QaExample example, List<int> featureIndices, IReadOnlyList<QaFeature> features,
        IReadOnlyList<float[]> startLogits, IReadOnlyList<float[]> endLogits, QaExtractionOptions options)
    {
        double nullScore = double.PositiveInfinity, bestScore = double.NegativeInfinity;
        int bestStart = 0, bestEnd = 0;
        foreach (int f in featureIndices)
        {
            float[] starts = startLogits[f], ends = endLogits[f];
            var offsets = features[f].Offsets;
            nullScore = Math.Min(nullScore, (double)starts[0] + ends[0]);
            foreach (int s in TopIndices(starts, offsets.Count, options.NBestSize))
                foreach (int t in TopIndices(ends, offsets.Count, options.NBestSize))
                {
                    if (offsets[s] is not { } first || offsets[t] is not { } last) continue; // question or special token
                    if (t < s || t - s + 1 > options.MaxAnswerLength) continue;
                    double score = (double)starts[s] + ends[t];
                    // Ties keep the earlier candidate, as Python's stable sort does.
                    if (score > bestScore) (bestScore, bestStart, bestEnd) = (score, first.Start, last.End);
                }
        }
        bool hasSpan = !double.IsNegativeInfinity(bestScore);
        double diff = hasSpan && options.Version2 && featureIndices.Count > 0 ? nullScore - bestScore : double.NaN;
        if (!hasSpan || (options.Version2 && diff > options.NullScoreThreshold))
            return new QaPrediction(example.Id, "", 0, 0, featureIndices.Count > 0 ? nullScore : double.NaN, diff);
        int end = Math.Max(bestStart, bestEnd);
        return new QaPrediction(example.Id, example.Context[bestStart..end], bestStart, end, bestScore, diff);
    }

    /// <summary>Indices of the <paramref name="count"/> largest of the first <paramref name="length"/> values, largest first (ties: lower index first).</summary>
    static int[] TopIndices(float[] values, int length, int count)
    {
        length = Math.Min(length, values.Length);
        var indices = Enumerable.Range(0, length).ToArray();
        Array.Sort(indices, (a, b) => values[b] != values[a] ? values[b].CompareTo(values[a]) : a.CompareTo(b));
        return indices.Length > count ? indices[..count] : indices;
    }
}
