using System.Diagnostics;
using SparseTune.Data;
using SparseTune.Metrics;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tokenization;
using SparseTune.Training;
using SparseTune.Tuners;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Inference;

/// <summary>Options of a <see cref="ClassificationPredictor"/>; the defaults are finetune's.</summary>
public sealed record PredictorOptions
{
    /// <summary>Most tokens of an example, special tokens included, capped at the model's positions; longer texts are cut as in training (<see cref="ClassificationDataOptions.MaxLength"/>).</summary>
    public int MaxLength { get; init; } = 128;

    /// <summary>Examples per forward pass.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>cpu, cuda or auto (<see cref="Nn.ComputeDevice"/>).</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>fp32 or bf16 mixed precision (<see cref="Nn.Precision"/>).</summary>
    public Nn.Precision Precision { get; init; }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (MaxLength < 4) problems.Add("--max-length must be at least 4");
        if (BatchSize < 1) problems.Add("--batch-size must be positive");
        return problems;
    }
}

/// <summary>
/// What the model says about one text. Classification: <see cref="Label"/> (the class with the largest logit, named by
/// the model's id2label), its id, and <see cref="Scores"/>, the softmax probability of every label in id order.
/// Regression: <see cref="Value"/>, with no label and no scores.
/// </summary>
public sealed record Prediction
{
    public string? Label { get; init; }
    /// <summary>Index of <see cref="Label"/> in the model's labels; -1 for regression.</summary>
    public int LabelId { get; init; } = -1;
    public IReadOnlyDictionary<string, float> Scores { get; init; } = new Dictionary<string, float>();
    public float? Value { get; init; }
}

/// <summary>One predicted row of a file: its physical line (from 1), the value of its id column when the file has one, and the prediction.</summary>
public sealed record PredictedRow(int Line, string? Id, Prediction Prediction);

/// <summary>Reported after every batch: rows done of all, real (unpadded) tokens so far and their rate.</summary>
public sealed record PredictionProgress(int Done, int Total, long Tokens, double TokensPerSecond);

/// <summary>
/// A file's predictions in file order, the rows skipped (with the first reasons, FILE:LINE: problem), and when the file
/// has a label column the task's metrics against it (classification: accuracy, macro_f1, mcc; regression: pearson, spearman).
/// </summary>
public sealed record FilePredictions(IReadOnlyList<PredictedRow> Rows, int SkippedRows, IReadOnlyList<string> SkippedReasons,
    IReadOnlyDictionary<string, double>? Metrics);

/// <summary>
/// Batched inference with a sequence-classification or regression model: a fine-tuned run's model/, or a base model
/// with any method's artifact (a LoRA adapter folder, a sparse delta, …) merged into it in memory.
/// <code>
///   using var predictor = ClassificationPredictor.Load("runs/lora/model");           // or Load(base, adapter: "runs/lora")
///   foreach (var p in predictor.Predict(["free food!", "segfault again"]))
///       Console.WriteLine($"{p.Label} {p.Scores[p.Label!]:0.00}");
/// </code>
/// The model runs in eval mode (no dropout) without autograd; texts are encoded and cut exactly as the training data
/// was, so a file's predictions score what finetune's evaluation of the same file scores. Regression is recognised as
/// Hugging Face does: <c>problem_type: "regression"</c>, or a single label and no problem type.
/// </summary>
public sealed class ClassificationPredictor : IDisposable
{
    readonly TransformerModel model;
    readonly ITextEncoder encoder;
    readonly bool ownsModel;
    readonly string[] labels;

    /// <summary>A predictor over a loaded model (the caller keeps ownership unless <paramref name="ownsModel"/>); the model is put in eval mode.</summary>
    /// <exception cref="ArgumentException">The model has no classification head, or the options are invalid.</exception>
    public ClassificationPredictor(TransformerModel model, ITextEncoder encoder, PredictorOptions? options = null, bool ownsModel = false)
    {
        Options = options ?? new PredictorOptions();
        var problems = Options.Problems().ToList();
        if (model.Head != ModelHead.SequenceClassification || model.Config.NumLabels == 0)
            problems.Add($"the model is a {model.Head} model, not a classification or regression model");
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));
        this.model = model;
        this.encoder = encoder;
        this.ownsModel = ownsModel;
        labels = model.Config.Id2Label!.OrderBy(p => int.Parse(p.Key, System.Globalization.CultureInfo.InvariantCulture)).Select(p => p.Value).ToArray();
        IsRegression = IsRegressionConfig(model.Config);
        MaxLength = Math.Min(Options.MaxLength, TaskModel.UsablePositions(model.Config));
        model.eval();
    }

    /// <summary>
    /// Loads a classification or regression model folder, or a base model with <paramref name="adapter"/> (any method's
    /// artifact, or a run folder holding one) merged into it in memory; the tokenizer comes from <paramref name="modelDirectory"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The folder holds no classification model (and no adapter gives it one).</exception>
    public static ClassificationPredictor Load(string modelDirectory, string? adapter = null, PredictorOptions? options = null)
    {
        var (model, tokenizer, artifact) = TaskModel.Load(modelDirectory, adapter, ModelHead.SequenceClassification, "a classification or regression");
        try
        {
            model.to(Nn.ComputeDevice.Resolve((options ?? new()).Device));
            model.Precision = (options ?? new()).Precision;
            return new ClassificationPredictor(model, new TokenizerEncoder(tokenizer), options, ownsModel: true) { Artifact = artifact };
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }


    /// <summary>Hugging Face's rule: problem_type "regression", or one label and no problem type.</summary>
    public static bool IsRegressionConfig(ModelConfig config) =>
        config.ProblemType == "regression" || (string.IsNullOrEmpty(config.ProblemType) && config.NumLabels == 1);

    public PredictorOptions Options { get; }

    /// <summary>Tokens per example: <see cref="PredictorOptions.MaxLength"/>, capped at the positions the model has (a longer input could not run).</summary>
    public int MaxLength { get; }

    public TransformerModel Model => model;

    /// <summary>Class names in id order (id2label); for regression the head's single name.</summary>
    public IReadOnlyList<string> Labels => labels;

    public bool IsRegression { get; }

    public TaskKind Task => IsRegression ? TaskKind.Regression : TaskKind.Classification;

    /// <summary>The artifact merged into the base model by <see cref="Load"/>; null when none.</summary>
    public string? Artifact { get; private init; }

    public Prediction Predict(string text) => Predict([text])[0];

    /// <summary>One prediction per text, in order.</summary>
    /// <exception cref="ArgumentException">A text is null, empty or only white space.</exception>
    public IReadOnlyList<Prediction> Predict(IEnumerable<string> texts) =>
        PredictExamples(texts.Select((text, i) => new Example(Truncation.EncodeSingle(encoder, Checked(text, i), MaxLength))).ToList());

    /// <summary>One prediction per text pair (sentence1, sentence2), in order; pairs are cut longest-first as in training.</summary>
    public IReadOnlyList<Prediction> PredictPairs(IEnumerable<(string Text, string Pair)> pairs) =>
        PredictExamples(pairs.Select((p, i) =>
        {
            var (ids, types) = Truncation.EncodePair(encoder, Checked(p.Text, i), Checked(p.Pair, i), MaxLength);
            return new Example(ids, types);
        }).ToList());

    static string Checked(string? text, int index) =>
        string.IsNullOrWhiteSpace(text) ? throw new ArgumentException($"text {index} is empty") : text;

    /// <summary>Predictions for encoded examples (their labels are ignored), batched in order.</summary>
    public IReadOnlyList<Prediction> PredictExamples(IReadOnlyList<Example> examples, IProgress<PredictionProgress>? progress = null)
    {
        var predictions = new Prediction[examples.Count];
        if (examples.Count == 0) return predictions;
        var batcher = new Batcher(examples, Task, encoder.PadId, new BatcherOptions { BatchSize = Options.BatchSize, Shuffle = false });
        var clock = Stopwatch.StartNew();
        long tokens = 0;
        int done = 0;
        using var guard = NativeCallGuard.Enter();
        using var noGrad = no_grad();
        foreach (int[] indices in batcher.EpochBatches(0))
        {
            NativeCallGuard.SafePoint();
            using (var scope = NewDisposeScope())
            {
                using var batch = batcher.Build(indices).ToTrainingBatch().To(model.Device);
                using var output = model.Forward(batch.InputIds, batch.AttentionMask, batch.TokenTypeIds);
                Tensor logits = output.Logits.cpu().to_type(ScalarType.Float32);           // (B, num_labels)
                if (IsRegression)
                {
                    float[] values = logits.reshape(-1).data<float>().ToArray();
                    for (int r = 0; r < indices.Length; r++) predictions[indices[r]] = new Prediction { Value = values[r] };
                }
                else
                {
                    // The label is the logits' argmax, as the evaluation's accuracy takes it (not the rounded probabilities').
                    long[] best = logits.argmax(-1).data<long>().ToArray();
                    float[] probabilities = logits.softmax(-1).data<float>().ToArray();
                    for (int r = 0; r < indices.Length; r++)
                    {
                        var scores = new Dictionary<string, float>(labels.Length);
                        for (int c = 0; c < labels.Length; c++) scores[labels[c]] = probabilities[r * labels.Length + c];
                        predictions[indices[r]] = new Prediction { Label = labels[best[r]], LabelId = (int)best[r], Scores = scores };
                    }
                }
            }
            tokens += indices.Sum(i => (long)examples[i].InputIds.Length);
            done += indices.Length;
            double seconds = clock.Elapsed.TotalSeconds;
            progress?.Report(new PredictionProgress(done, examples.Count, tokens, seconds > 0 ? tokens / seconds : 0));
        }
        return predictions;
    }

    /// <summary>
    /// Predicts every row of a CSV, TSV or JSONL file (<see cref="ClassificationData"/>: the same columns, encoding and
    /// bad-row rules as training data). The file needs no label column; when it has one, its labels (the model's names
    /// or their integer ids; numbers for regression) are scored. Rows are named by the <c>id</c> column when the file
    /// has one (<see cref="ClassificationDataOptions.IdColumn"/>), else by their line.
    /// </summary>
    /// <exception cref="DataFormatException">A bad row (without SkipBadRows), or a column the file lacks (naming those it has).</exception>
    /// <exception cref="InvalidDataException">The file is empty, or no row is left to predict.</exception>
    public FilePredictions PredictFile(string path, ClassificationDataOptions? columns = null, IProgress<PredictionProgress>? progress = null)
    {
        columns ??= new ClassificationDataOptions();
        if (File.ReadLines(path).All(string.IsNullOrWhiteSpace)) throw new InvalidDataException($"{path}: the file is empty: no rows to predict");
        var data = ClassificationData.Load(path, encoder, columns with
        {
            MaxLength = this.MaxLength,
            LabelOptional = true,
            IdColumn = columns.IdColumn ?? "id",
            Regression = IsRegression,
            Labels = IsRegression ? null : labels,
            IdLabels = null,
        });
        if (data.Examples.Count == 0)
            throw new InvalidDataException($"{path}: no rows to predict{(data.SkippedRows > 0 ? $" ({data.SkippedRows} bad rows skipped, e.g. {data.SkippedReasons[0]})" : "")}");
        var predictions = PredictExamples(data.Examples, progress);

        IReadOnlyDictionary<string, double>? metrics = null;
        if (data.HasLabels)
        {
            var set = MetricSet.For(Task);
            if (IsRegression) set.AddValues(data.Examples.Select(e => (double)e.Label), predictions.Select(p => (double)p.Value!.Value));
            else set.AddClasses(data.Examples.Select(e => (int)e.Label), predictions.Select(p => p.LabelId));
            metrics = set.Compute();
        }
        var rows = data.Examples.Select((e, i) => new PredictedRow(e.SourceLine, e.RowId, predictions[i])).ToList();
        return new FilePredictions(rows, data.SkippedRows, data.SkippedReasons, metrics);
    }

    public void Dispose()
    {
        if (ownsModel) model.Dispose();
    }
}
