using SparseTune.Data;
using SparseTune.Models;

namespace SparseTune.Evaluation;

/// <summary>One question's outcome: the choice picked by the summed and by the per-token mean log-likelihood.</summary>
public sealed record ChoicePrediction(MultipleChoiceItem Item, int BySum, int ByMean, IReadOnlyList<ChoiceScore> Scores);

/// <summary>Accuracy by summed log-likelihood ("accuracy") and by its per-token mean ("accuracy_norm"), with each question's picks.</summary>
public sealed record MultipleChoiceResult(IReadOnlyDictionary<string, double> Metrics, IReadOnlyList<ChoicePrediction> Predictions);

/// <summary>
/// Multiple choice with a causal LM: each choice is scored by the log-likelihood of its tokens after the prompt
/// (<see cref="MultipleChoiceData.DecoderTokens"/>, <see cref="ChoiceScorer"/>); the answer is the most likely
/// choice, by the sum (accuracy) and by the per-token mean (accuracy_norm, which does not favour short choices).
/// </summary>
public static class MultipleChoiceEvaluation
{
    /// <summary>The metric that ranks a decoder's multiple-choice evaluations.</summary>
    public const string MainMetric = "accuracy";

    /// <summary>Scores every item; items without a label count in the predictions but not in the accuracies.</summary>
    public static MultipleChoiceResult Score(TransformerModel model, IReadOnlyList<MultipleChoiceItem> items, ITextEncoder encoder, int maxLength,
        int batchSize, IProgress<int>? progress = null)
    {
        var choiceItems = items.Select(item =>
        {
            var (prompt, choices) = MultipleChoiceData.DecoderTokens(item, encoder, maxLength);
            return new ChoiceItem(prompt, choices);
        }).ToList();
        var scores = ChoiceScorer.Score(model, choiceItems, new ChoiceScorerOptions { BatchSize = batchSize, MaxLength = maxLength }, progress);
        var predictions = items.Select((item, i) => new ChoicePrediction(item,
            ChoiceScorer.Predict(scores[i], ChoiceRanking.Sum), ChoiceScorer.Predict(scores[i], ChoiceRanking.Mean), scores[i])).ToList();
        var labelled = predictions.Where(p => p.Item.Label is not null).ToList();
        double Accuracy(Func<ChoicePrediction, int> pick) =>
            labelled.Count == 0 ? double.NaN : (double)labelled.Count(p => pick(p) == p.Item.Label) / labelled.Count;
        return new MultipleChoiceResult(new Dictionary<string, double>
        {
            ["accuracy"] = Accuracy(p => p.BySum),
            ["accuracy_norm"] = Accuracy(p => p.ByMean),
        }, predictions);
    }
}
