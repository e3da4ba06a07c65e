using System.CommandLine;
using Spectre.Console;
using SparseTune.Data;
using SparseTune.Evaluation;
using SparseTune.Inference;
using SparseTune.Models;
using SparseTune.Training;
using SparseTune.Tuners;

namespace SparseTune.Cli.Commands;

/// <summary>Everything `sparsetune predict` needs, validated together before any work starts.</summary>
public sealed record PredictOptions
{
    public required string ModelDirectory { get; init; }
    /// <summary>Any method's artifact (a LoRA adapter folder, a sparse delta, …) to merge into the model in memory; null: the model as it is.</summary>
    public string? AdapterPath { get; init; }
    public required string InputFile { get; init; }
    /// <summary>Where the predictions go: CSV for a .csv name, JSONL otherwise.</summary>
    public string OutputFile { get; init; } = "predictions.jsonl";
    /// <summary>Text, pair and label columns as finetune reads them; the label column is optional here.</summary>
    public ClassificationDataOptions Columns { get; init; } = new();
    public PredictorOptions Predictor { get; init; } = new();
    /// <summary>Windows and answer extraction when the model answers questions (SQuAD input).</summary>
    public SquadTaskOptions Squad { get; init; } = new();

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>(Predictor.Problems());
        problems.AddRange(Squad.Problems());
        if (PretrainedModel.FolderProblem(ModelDirectory) is { } modelProblem) problems.Add(modelProblem);
        if (MethodArtifacts.PathProblem(AdapterPath) is { } adapterProblem) problems.Add(adapterProblem);
        if (!File.Exists(InputFile)) problems.Add($"--input: file not found: {InputFile}");
        if (string.IsNullOrWhiteSpace(OutputFile)) problems.Add("--output must name a file");
        else if (File.Exists(InputFile) && Path.GetFullPath(OutputFile) == Path.GetFullPath(InputFile)) problems.Add("--output must differ from --input");
        else if (Directory.Exists(OutputFile)) problems.Add($"--output: {OutputFile} is a folder; name a .jsonl or .csv file");
        return problems;
    }
}

/// <summary>
/// sparsetune predict: a classification or regression model (a run's model/, or a base model with any method's
/// artifact merged in memory) on a CSV/TSV/JSONL file → one prediction per row (JSONL or CSV). Progress, skipped rows and,
/// when the input has labels, the metrics against them go to stderr. The work is <see cref="ClassificationPredictor"/>'s.
/// </summary>
public static class PredictCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Classification, regression or extractive-QA model folder (a fine-tuned run's model/), or the base model of --adapter.", Required = true };
        var adapter = new Option<string?>("--adapter", "--delta") { Description = "Any method's artifact to merge into --model in memory: a LoRA adapter folder, a sparse delta or sparse-weights file, or a run folder holding one." };
        var input = new Option<string>("--input") { Description = "Rows to predict: CSV (header), TSV (header) or JSONL; a label column is optional (then its metrics are reported). A QA model reads SQuAD JSON or JSONL (question, context; answers optional: then EM/F1 are reported).", Required = true };
        var output = new Option<string>("--output") { Description = "Predictions file: .csv writes CSV, anything else JSONL.", DefaultValueFactory = _ => "predictions.jsonl" };
        var textColumn = new Option<string?>("--text-column") { Description = "Text column (default: text, sentence or sentence1)." };
        var pairColumn = new Option<string?>("--text-pair-column") { Description = "Second text column for pairs (default: sentence2 if present)." };
        var labelColumn = new Option<string>("--label-column") { DefaultValueFactory = _ => "label", Description = "Label column; when the input has it, accuracy (or pearson for regression) is reported." };
        var maxLength = new Option<int>("--max-length") { DefaultValueFactory = _ => 128, Description = "Tokens per example, as in finetune (longer texts are cut the same way)." };
        var batchSize = new Option<int>("--batch-size") { DefaultValueFactory = _ => 16, Description = "Examples per forward pass." };
        var skipBad = new Option<bool>("--skip-bad-rows") { Description = "Skip and count malformed rows instead of stopping at the first." };
        var device = CliSupport.DeviceOption();
        var precision = CliSupport.PrecisionOption();
        var squad = new SquadFlags();
        var command = new Command("predict", "Predict labels (or values) for every row of a file with a classification or regression model, or answers with an extractive-QA model.")
        {
            model, adapter, input, output, textColumn, pairColumn, labelColumn, maxLength, batchSize, skipBad, device, precision,
        };
        foreach (var option in squad.All) command.Options.Add(option);
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            var options = new PredictOptions
            {
                ModelDirectory = parse.GetValue(model)!,
                AdapterPath = parse.GetValue(adapter),
                InputFile = parse.GetValue(input)!,
                OutputFile = parse.GetValue(output)!,
                Columns = new ClassificationDataOptions
                {
                    TextColumn = parse.GetValue(textColumn),
                    TextPairColumn = parse.GetValue(pairColumn),
                    LabelColumn = parse.GetValue(labelColumn)!,
                    SkipBadRows = parse.GetValue(skipBad),
                },
                Predictor = new PredictorOptions
                {
                    MaxLength = parse.GetValue(maxLength), BatchSize = parse.GetValue(batchSize),
                    Device = parse.GetValue(device)!, Precision = CliSupport.ParsePrecision(parse.GetValue(precision)),
                },
                Squad = squad.Bind(parse),
            };
            int written = AnswersQuestions(options) ? RunQuestionAnswering(options, Console.Error.WriteLine).Answers.Count
                : File.Exists(options.InputFile) && DataKinds.Detect(options.InputFile) == DataKind.MultipleChoice ? RunMultipleChoice(options, Console.Error.WriteLine).Answers.Count
                : Run(options, Console.Error.WriteLine).Rows.Count;
            Console.WriteLine($"wrote {written} predictions to {options.OutputFile}");
            return 0;
        }));
        return command;
    }

    /// <summary>Whether the model (or the artifact's head) answers questions: then the input is SQuAD data.</summary>
    public static bool AnswersQuestions(PredictOptions options)
    {
        if (options.AdapterPath is { } adapter && (File.Exists(adapter) || Directory.Exists(adapter)))
        {
            var (reader, artifact) = MethodArtifacts.Find(adapter);
            if (reader.HeadOf(artifact).Head is { } head) return head == ModelHead.QuestionAnswering;
        }
        return File.Exists(Path.Combine(options.ModelDirectory, "config.json"))
            && PretrainedModel.HeadOf(ModelConfig.Load(options.ModelDirectory)) == ModelHead.QuestionAnswering;
    }

    /// <summary>Validates, loads the QA model (and artifact), answers every question of the SQuAD file and writes the answers.</summary>
    public static QaFilePredictions RunQuestionAnswering(PredictOptions options, Action<string> log)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));
        var p = options.Predictor;
        using var predictor = QuestionAnsweringPredictor.Load(options.ModelDirectory, options.AdapterPath, options.Squad, p.MaxLength, p.BatchSize, p.Device, p.Precision);
        var result = predictor.PredictFile(options.InputFile, options.Columns.SkipBadRows);
        PredictionFile.WriteAnswers(options.OutputFile, result.Answers);
        if (result.SkippedRows > 0) log($"skipped {result.SkippedRows} bad rows, e.g. {result.SkippedReasons[0]}");
        if (result.Scores is { } scores)
            log($"against the gold answers ({scores.Total} questions): exact_match {scores.ExactMatch:0.00}  f1 {scores.F1:0.00}");
        return result;
    }

    /// <summary>Validates, loads the multiple-choice model (an encoder's head or a causal LM, and artifact), picks a choice per question and writes the picks.</summary>
    public static ChoiceFilePredictions RunMultipleChoice(PredictOptions options, Action<string> log)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));
        var p = options.Predictor;
        using var predictor = MultipleChoicePredictor.Load(options.ModelDirectory, options.AdapterPath, p.MaxLength, p.BatchSize, p.Device, p.Precision);
        var result = predictor.PredictFile(options.InputFile, options.Columns.SkipBadRows);
        PredictionFile.WriteChoices(options.OutputFile, result.Answers);
        if (result.SkippedRows > 0) log($"skipped {result.SkippedRows} bad rows, e.g. {result.SkippedReasons[0]}");
        if (result.Accuracy is { } accuracy) log($"against the labels ({result.Answers.Count} questions): accuracy {accuracy:0.0000}");
        return result;
    }

    /// <summary>Validates, loads the model (and artifact), predicts every row and writes the file.</summary>
    /// <param name="log">Progress, skipped rows and metrics (the CLI sends them to stderr).</param>
    public static FilePredictions Run(PredictOptions options, Action<string> log)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));

        using var predictor = ClassificationPredictor.Load(options.ModelDirectory, options.AdapterPath, options.Predictor);
        if (predictor.Artifact is { } artifact) log($"merged {artifact} into {options.ModelDirectory} (in memory)");
        var view = new PredictionProgressView(log);
        FilePredictions result = view.Run(() => predictor.PredictFile(options.InputFile, options.Columns, view));
        if (view.Last is { } done) log(PredictionProgressView.Line(done));
        PredictionFile.Write(options.OutputFile, result.Rows, predictor.Labels, predictor.IsRegression);

        if (result.SkippedRows > 0) log($"skipped {result.SkippedRows} bad rows, e.g. {result.SkippedReasons[0]}");
        if (result.Metrics is { } metrics)
            log($"against the '{options.Columns.LabelColumn}' column ({result.Rows.Count} rows): {string.Join("  ", metrics.Select(m => $"{m.Key} {m.Value:0.0000}"))}");
        return result;
    }

    /// <summary>
    /// Progress on stderr: a live bar with rows and tokens/s on a terminal; otherwise a line about every tenth of the rows.
    /// </summary>
    sealed class PredictionProgressView(Action<string> log) : IProgress<PredictionProgress>
    {
        readonly bool interactive = !Console.IsErrorRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        ProgressTask? task;
        int lastLogged;

        /// <summary>The last report: all rows, with the run's tokens/s.</summary>
        public PredictionProgress? Last { get; private set; }

        public static string Line(PredictionProgress p) => $"predicted {p.Done}/{p.Total} rows  {p.TokensPerSecond:0} tok/s";

        public T Run<T>(Func<T> work)
        {
            if (!interactive) return work();
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            return console.Progress()
                .AutoClear(true)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    task = ctx.AddTask("predict", maxValue: 1);
                    return work();
                });
        }

        public void Report(PredictionProgress p)
        {
            Last = p;
            string line = Line(p);
            if (task is not null)
            {
                task.MaxValue = p.Total;
                task.Value = p.Done;
                task.Description = Markup.Escape(line);
            }
            else if (p.Done < p.Total && p.Done - lastLogged >= Math.Max(1, p.Total / 10))   // the last line comes after the run
            {
                lastLogged = p.Done;
                log(line);
            }
        }
    }
}
