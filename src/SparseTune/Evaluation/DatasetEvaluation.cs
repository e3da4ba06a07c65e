using SparseTune.Data;
using SparseTune.Generation;
using SparseTune.Inference;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tokenization;
using SparseTune.Training;
using SparseTune.Tuners;
using TorchSharp;

namespace SparseTune.Evaluation;

/// <summary>What <see cref="DatasetEvaluation.Evaluate"/> scores: a fine-tuned model (or base + artifact) on a labelled file.</summary>
public sealed record DatasetEvalOptions
{
    public required string ModelDirectory { get; init; }
    public required string DataFile { get; init; }
    /// <summary>Any method's artifact to merge into the model first; null: the model as it is.</summary>
    public string? AdapterPath { get; init; }
    /// <summary>How to read the file; Auto: from its name and first line, as finetune does.</summary>
    public DataKind Data { get; init; } = DataKind.Auto;
    /// <summary>Tokens per example (window length for QA, block size for plain text), as the model was fine-tuned with.</summary>
    public int MaxLength { get; init; } = 128;
    public int BatchSize { get; init; } = 16;
    public bool SkipBadRows { get; init; }
    public ClassificationDataOptions Columns { get; init; } = new();
    public SquadTaskOptions Squad { get; init; } = new();
    public string Device { get; init; } = "cpu";
    public Precision Precision { get; init; }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>(Squad.Problems());
        if (PretrainedModel.FolderProblem(ModelDirectory) is { } modelProblem) problems.Add(modelProblem);
        if (!File.Exists(DataFile)) problems.Add($"--data: file not found: {DataFile}");
        if (MethodArtifacts.PathProblem(AdapterPath) is { } adapterProblem) problems.Add(adapterProblem);
        if (MaxLength < 4) problems.Add("--max-length must be at least 4");
        if (BatchSize < 1) problems.Add("--batch-size must be at least 1");
        if (!ComputeDevice.Choices.Contains(Device)) problems.Add($"--device: unknown '{Device}' (choose {string.Join(", ", ComputeDevice.Choices)})");
        return problems;
    }
}

/// <summary>A file's metrics: how it was read, how many examples (questions, rows, blocks) were scored, and the rows skipped.</summary>
public sealed record DatasetEvaluationResult(DataKind Data, int Examples, IReadOnlyDictionary<string, double> Metrics, int SkippedRows);

/// <summary>
/// `eval` for the task of a data file, with the metrics fine-tuning reports for it: classification (accuracy, macro F1,
/// MCC) or regression (Pearson, Spearman) by the model's head; SQuAD exact match and F1; multiple-choice accuracy
/// (an encoder's head, or a decoder's choice likelihoods); perplexity of a causal LM on plain text, Alpaca or E2E
/// data (E2E BLEU and MMLU have their own evaluations).
/// </summary>
public static class DatasetEvaluation
{
    public static DatasetEvaluationResult Evaluate(DatasetEvalOptions options, Action<string>? log = null)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));
        DataKind kind = options.Data == DataKind.Auto ? DataKinds.Detect(options.DataFile) : options.Data;
        return kind switch
        {
            DataKind.Classification or DataKind.Regression => Classification(options, log),
            DataKind.Squad => Squad(options, log),
            DataKind.MultipleChoice => MultipleChoice(options, log),
            _ => Perplexity(options, kind, log),
        };
    }

    /// <summary>Classification or regression, as the model's head says (<see cref="ClassificationPredictor"/>).</summary>
    static DatasetEvaluationResult Classification(DatasetEvalOptions options, Action<string>? log)
    {
        using var predictor = ClassificationPredictor.Load(options.ModelDirectory, options.AdapterPath, new PredictorOptions
        {
            MaxLength = options.MaxLength, BatchSize = options.BatchSize, Device = options.Device, Precision = options.Precision,
        });
        if (predictor.Artifact is { } artifact) log?.Invoke($"merged {artifact} into {options.ModelDirectory} (in memory)");
        var result = predictor.PredictFile(options.DataFile, options.Columns with { SkipBadRows = options.SkipBadRows });
        var metrics = result.Metrics ?? throw new InvalidDataException($"{options.DataFile}: no '{options.Columns.LabelColumn}' column to score against");
        return new DatasetEvaluationResult(predictor.IsRegression ? DataKind.Regression : DataKind.Classification, result.Rows.Count, metrics, result.SkippedRows);
    }

    static DatasetEvaluationResult Squad(DatasetEvalOptions options, Action<string>? log)
    {
        using var predictor = QuestionAnsweringPredictor.Load(options.ModelDirectory, options.AdapterPath, options.Squad, options.MaxLength,
            options.BatchSize, options.Device, options.Precision);
        var result = predictor.PredictFile(options.DataFile, options.SkipBadRows);
        var scores = result.Scores ?? throw new InvalidDataException($"{options.DataFile}: no gold answers to score against");
        log?.Invoke($"{result.Questions.Count} questions in {result.Questions.Select(q => q.Context).Distinct().Count()} contexts");
        return new DatasetEvaluationResult(DataKind.Squad, result.Questions.Count, new SquadEvaluationResult(scores, result.Answers).Metrics, result.SkippedRows);
    }

    static DatasetEvaluationResult MultipleChoice(DatasetEvalOptions options, Action<string>? log)
    {
        var data = MultipleChoiceData.Read(options.DataFile, options.SkipBadRows);
        if (data.Items.Count == 0) throw new InvalidDataException($"{options.DataFile}: no multiple-choice questions");
        using var predictor = MultipleChoicePredictor.Load(options.ModelDirectory, options.AdapterPath, options.MaxLength, options.BatchSize,
            options.Device, options.Precision);
        return new DatasetEvaluationResult(DataKind.MultipleChoice, data.Items.Count, predictor.Metrics(data.Items, options.DataFile), data.SkippedRows);
    }

    static DatasetEvaluationResult Perplexity(DatasetEvalOptions options, DataKind kind, Action<string>? log)
    {
        var encoder = new TokenizerEncoder(TextTokenizer.FromFolder(options.ModelDirectory));
        var data = kind switch
        {
            DataKind.Text => LanguageModelData.FromText(options.DataFile, encoder, options.MaxLength, options.SkipBadRows),
            DataKind.E2E => E2EData.FromJsonl(options.DataFile, encoder, options.MaxLength, options.SkipBadRows),
            _ => LanguageModelData.FromAlpacaJsonl(options.DataFile, encoder, options.MaxLength, options.SkipBadRows),
        };
        if (data.Examples.Count == 0) throw new InvalidDataException($"{options.DataFile}: nothing to score");
        using TransformerModel model = TextGenerator.LoadCausalLM(options.ModelDirectory, options.AdapterPath, log);
        model.to(ComputeDevice.Resolve(options.Device, log));
        model.Precision = options.Precision;
        var batcher = new Batcher(data.Examples, TaskKind.CausalLM, encoder.PadId, new BatcherOptions { BatchSize = options.BatchSize, Shuffle = false });
        var metrics = InEvalMode(model, () => FineTuneJob.Evaluate(model, batcher, TaskKind.CausalLM));
        return new DatasetEvaluationResult(kind, data.Examples.Count, metrics, data.SkippedRows);
    }

    static T InEvalMode<T>(TransformerModel model, Func<T> body)
    {
        T result = default!;
        ChoiceScorer.InEvalMode(model, () => result = body());
        return result;
    }
}
