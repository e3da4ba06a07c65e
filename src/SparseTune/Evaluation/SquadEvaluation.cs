using SparseTune.Data;
using SparseTune.Inference;
using SparseTune.Metrics;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Training;
using static TorchSharp.torch;

namespace SparseTune.Evaluation;

/// <summary>
/// How extractive QA windows its contexts and picks its answers (Hugging Face run_qa.py's flags). The window length
/// is the run's --max-length.
/// </summary>
public sealed record SquadTaskOptions
{
    /// <summary>Context tokens consecutive windows share; null: run_qa.py's 128, or half the room a window has for context when that is less.</summary>
    public int? DocStride { get; init; }
    public int MaxQueryLength { get; init; } = 64;
    /// <summary>Longest answer in tokens.</summary>
    public int MaxAnswerLength { get; init; } = 30;
    /// <summary>SQuAD v2.0: answer "" when the no-answer score beats the best span's by more than this.</summary>
    public double NullScoreThreshold { get; init; }
    public int NBestSize { get; init; } = 20;

    /// <summary>The window options for <paramref name="maxLength"/>-token features of an encoder with <paramref name="pairSpecialTokens"/> special tokens.</summary>
    public QaFeatureOptions Windows(int maxLength, int pairSpecialTokens)
    {
        int query = Math.Min(MaxQueryLength, Math.Max(1, maxLength / 2));
        int room = maxLength - query - pairSpecialTokens;
        return new QaFeatureOptions { MaxLength = maxLength, MaxQueryLength = query, DocStride = DocStride ?? Math.Max(0, Math.Min(128, room / 2)) };
    }

    public QaExtractionOptions Extraction(bool version2) =>
        new() { Version2 = version2, MaxAnswerLength = MaxAnswerLength, NullScoreThreshold = NullScoreThreshold, NBestSize = NBestSize };

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (DocStride is < 0) problems.Add("--doc-stride must be 0 or more");
        if (MaxQueryLength < 1) problems.Add("--max-query-length must be at least 1");
        if (MaxAnswerLength < 1) problems.Add("--max-answer-length must be at least 1");
        if (!double.IsFinite(NullScoreThreshold)) problems.Add("--null-threshold must be a finite number");
        return problems;
    }
}

/// <summary>SQuAD scores (percent, as the official scripts) and each question's answer.</summary>
public sealed record SquadEvaluationResult(SquadScores Scores, IReadOnlyList<QaPrediction> Predictions)
{
    /// <summary>f1 and exact_match (and, for v2.0, the answerable / unanswerable splits) as eval metrics.</summary>
    public IReadOnlyDictionary<string, double> Metrics
    {
        get
        {
            var metrics = new Dictionary<string, double> { ["f1"] = Scores.F1, ["exact_match"] = Scores.ExactMatch };
            if (Scores.HasAnsF1 is double hasF1) metrics["has_answer_f1"] = hasF1;
            if (Scores.NoAnsF1 is double noF1) metrics["no_answer_f1"] = noF1;
            return metrics;
        }
    }
}

/// <summary>
/// Extractive QA end to end: the model's start/end logits over every window (<see cref="QaFeature"/>), the best
/// answer of each question across its windows (<see cref="QaAnswerExtractor"/>), exact match and F1 against the
/// gold answers (<see cref="SquadMetric"/>).
/// </summary>
public static class SquadEvaluation
{
    /// <summary>The features' start and end logits (float32), feature by feature, in eval mode without gradients.</summary>
    public static (IReadOnlyList<float[]> Start, IReadOnlyList<float[]> End) SpanLogits(TransformerModel model, IReadOnlyList<QaFeature> features,
        int padId, int batchSize, IProgress<int>? progress = null)
    {
        if (model.Head != ModelHead.QuestionAnswering) throw new ArgumentException($"extractive QA needs a question-answering head, not {model.Head}", nameof(model));
        var start = new float[features.Count][];
        var end = new float[features.Count][];
        var batcher = new Batcher(features.Select(f => f.Example).ToList(), TaskKind.QuestionAnswering, padId,
            new BatcherOptions { BatchSize = batchSize, Shuffle = false });
        ChoiceScorer.InEvalMode(model, () =>
        {
            int done = 0;
            foreach (int[] indices in batcher.EpochBatches(0))
            {
                NativeCallGuard.SafePoint();
                using var scope = NewDisposeScope();
                using var batch = batcher.Build(indices).ToTrainingBatch().To(model.Device);
                using var output = model.Forward(batch.InputIds, batch.AttentionMask, batch.TokenTypeIds);
                Tensor logits = output.Logits.to_type(ScalarType.Float32).cpu();                 // (B, T, 2)
                for (int row = 0; row < indices.Length; row++)
                {
                    start[indices[row]] = logits[row, .., 0].data<float>().ToArray();
                    end[indices[row]] = logits[row, .., 1].data<float>().ToArray();
                }
                progress?.Report(done += indices.Length);
            }
        });
        return (start, end);
    }

    /// <summary>Answers every question of <paramref name="data"/> from its features and scores them.</summary>
    public static SquadEvaluationResult Evaluate(TransformerModel model, SquadDataset data, IReadOnlyList<QaFeature> features, int padId,
        SquadTaskOptions options, int batchSize, IProgress<int>? progress = null)
    {
        var (start, end) = SpanLogits(model, features, padId, batchSize, progress);
        var predictions = QaAnswerExtractor.Extract(data.Examples, features, start, end, options.Extraction(data.Version2));
        var scores = SquadMetric.Evaluate(data.Examples, predictions.ToDictionary(p => p.Id, p => p.Text), data.Version2);
        return new SquadEvaluationResult(scores, predictions);
    }
}
