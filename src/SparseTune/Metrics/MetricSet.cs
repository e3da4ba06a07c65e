using SparseTune.Training;
using static TorchSharp.torch;

namespace SparseTune.Metrics;

/// <summary>
/// The eval metrics of a task, accumulated over batches: classification {accuracy, macro_f1, mcc}, multiple choice
/// {accuracy} (logits (B, choices)), regression
/// {pearson, spearman}, causal / masked LM {perplexity, loss} (loss: mean token NLL). Feed it with
/// <see cref="AddBatch"/> (model logits and batch labels) or the Add methods, then <see cref="Compute"/>.
/// </summary>
public sealed class MetricSet
{
    readonly List<int> labels = [], predictions = [];
    readonly List<double> targets = [], values = [];
    double nllSum;
    long tokens;

    MetricSet(TaskKind task) => Task = task;

    public static MetricSet For(TaskKind task) => task switch
    {
        TaskKind.Classification or TaskKind.Regression or TaskKind.CausalLM or TaskKind.MaskedLM or TaskKind.MultipleChoice => new MetricSet(task),
        TaskKind.QuestionAnswering => throw new ArgumentException("extractive QA is scored per question over its windows (SquadEvaluation), not per batch", nameof(task)),
        _ => throw new ArgumentOutOfRangeException(nameof(task)),
    };

    public TaskKind Task { get; }

    /// <summary>The keys <see cref="Compute"/> returns.</summary>
    public IReadOnlyList<string> Names => NamesOf(Task);

    public static IReadOnlyList<string> NamesOf(TaskKind task) => task switch
    {
        TaskKind.Classification => ["accuracy", "macro_f1", "mcc"],
        TaskKind.Regression => ["pearson", "spearman"],
        TaskKind.MultipleChoice => ["accuracy"],
        TaskKind.QuestionAnswering => ["f1", "exact_match"],
        _ => ["perplexity", "loss"],
    };

    /// <summary>The metric that ranks evaluations (best model, early stopping): the first of <see cref="NamesOf"/>.</summary>
    public static string MainMetric(TaskKind task) => NamesOf(task)[0];

    /// <summary>Perplexity and loss improve downwards, every other metric upwards.</summary>
    public static MetricGoal GoalOf(string metric) => metric is "perplexity" or "loss" ? MetricGoal.Minimize : MetricGoal.Maximize;

    /// <summary>Class labels and predicted classes (classification).</summary>
    public void AddClasses(IEnumerable<int> trueLabels, IEnumerable<int> predicted)
    {
        if (Task != TaskKind.MultipleChoice) Require(TaskKind.Classification);
        AppendPairs(labels, predictions, trueLabels, predicted, "labels");
    }

    /// <summary>Targets and predicted values (regression).</summary>
    public void AddValues(IEnumerable<double> trueValues, IEnumerable<double> predicted)
    {
        Require(TaskKind.Regression);
        AppendPairs(targets, values, trueValues, predicted, "targets");
    }

    /// <summary>Appends truths and predictions together; on a length mismatch appends neither and throws.</summary>
    static void AppendPairs<T>(List<T> truths, List<T> predictions, IEnumerable<T> newTruths, IEnumerable<T> newPredictions, string what)
    {
        int before = truths.Count;
        truths.AddRange(newTruths);
        predictions.AddRange(newPredictions);
        if (truths.Count == predictions.Count) return;
        truths.RemoveRange(before, truths.Count - before);
        predictions.RemoveRange(before, predictions.Count - before);
        throw new ArgumentException($"{what} and predictions differ in length");
    }

    /// <summary>Summed token NLL (natural log) over <paramref name="tokenCount"/> tokens (language modelling).</summary>
    public void AddTokens(double nllSum, long tokenCount)
    {
        if (Task is not (TaskKind.CausalLM or TaskKind.MaskedLM)) throw new InvalidOperationException($"a {Task} metric set takes no token losses");
        this.nllSum += nllSum;
        tokens += tokenCount;
    }

    /// <summary>
    /// One batch of model output: logits (B, C) with labels (B) int64 for classification (argmax); (B, 1) or (B)
    /// with (B) float targets for regression; (B, T, V) with (B, T) labels for LM — causal LM predicts token t+1 from
    /// position t (as <see cref="Losses.NextTokenLoss"/>), masked LM the token at t; labels of -100 are skipped.
    /// </summary>
    public void AddBatch(Tensor logits, Tensor batchLabels)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        switch (Task)
        {
            case TaskKind.Classification:
            case TaskKind.MultipleChoice:
                AddClasses(batchLabels.to_type(ScalarType.Int64).cpu().data<long>().Select(v => (int)v).ToArray(),
                    logits.argmax(-1).cpu().data<long>().Select(v => (int)v).ToArray());
                break;
            case TaskKind.Regression:
                AddValues(batchLabels.to_type(ScalarType.Float64).cpu().data<double>().ToArray(),
                    logits.reshape(-1).to_type(ScalarType.Float64).cpu().data<double>().ToArray());
                break;
            default:
                long vocab = logits.shape[^1];
                Tensor flatLogits, flatLabels;
                if (Task == TaskKind.CausalLM)
                {
                    flatLogits = logits[.., ..^1, ..].reshape(-1, vocab);
                    flatLabels = batchLabels[.., 1..].reshape(-1);
                }
                else
                {
                    flatLogits = logits.reshape(-1, vocab);
                    flatLabels = batchLabels.reshape(-1);
                }
                long count = flatLabels.ne(Losses.IgnoreIndex).sum().item<long>();
                if (count == 0) return;
                double sum = nn.functional.cross_entropy(flatLogits.to_type(ScalarType.Float32), flatLabels,
                    ignore_index: Losses.IgnoreIndex, reduction: nn.Reduction.Sum).item<float>();
                AddTokens(sum, count);
                break;
        }
    }

    /// <summary>The metrics of everything added so far (NaN where nothing was added).</summary>
    public IReadOnlyDictionary<string, double> Compute() => Task switch
    {
        TaskKind.Classification => new Dictionary<string, double>
        {
            ["accuracy"] = Metric.Accuracy(labels, predictions),
            ["macro_f1"] = Metric.MacroF1(labels, predictions),
            ["mcc"] = Metric.MatthewsCorrelation(labels, predictions),
        },
        TaskKind.MultipleChoice => new Dictionary<string, double> { ["accuracy"] = Metric.Accuracy(labels, predictions) },
        TaskKind.Regression => new Dictionary<string, double>
        {
            ["pearson"] = Metric.Pearson(targets, values),
            ["spearman"] = Metric.Spearman(targets, values),
        },
        _ => new Dictionary<string, double>
        {
            ["perplexity"] = tokens == 0 ? double.NaN : Metric.Perplexity(nllSum / tokens),
            ["loss"] = tokens == 0 ? double.NaN : nllSum / tokens,
        },
    };

    /// <summary>Forgets everything added.</summary>
    public void Reset()
    {
        labels.Clear(); predictions.Clear(); targets.Clear(); values.Clear();
        nllSum = 0; tokens = 0;
    }

    void Require(TaskKind task)
    {
        if (Task != task) throw new InvalidOperationException($"a {Task} metric set takes no {task} results");
    }
}
