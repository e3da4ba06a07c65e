using System.Text.Json;
using SparseTune.Data;
using SparseTune.Distributed;
using SparseTune.Evaluation;
using SparseTune.Generation;
using SparseTune.Metrics;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tokenization;
using SparseTune.Tuners;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Training;

/// <summary>How the training file is read.</summary>
public enum DataKind
{
    /// <summary>Decide from the file: .txt → plain text LM; JSONL with "instruction" → Alpaca; with "meaning_representation" → E2E; else classification.</summary>
    Auto,
    Classification,
    Regression,
    /// <summary>Plain text packed into blocks.</summary>
    Text,
    /// <summary>Alpaca instruction JSONL; loss only on the response.</summary>
    Alpaca,
    /// <summary>E2E NLG JSONL (meaning_representation, reference); loss only on the reference (<see cref="Generation.E2EData"/>).</summary>
    E2E,
    /// <summary>Extractive QA: SQuAD v1.1/v2.0 JSON or flat JSONL (question, context, answers); encoders only (<see cref="SquadData"/>).</summary>
    Squad,
    /// <summary>
    /// Multiple-choice JSONL (question, optional context, choices, label; <see cref="MultipleChoiceData"/>): an encoder's
    /// multiple-choice head, or a decoder trained on the correct choice and scored by each choice's likelihood.
    /// </summary>
    MultipleChoice,
}

/// <summary>The names <c>--data</c> takes.</summary>
public static class DataKinds
{
    public static readonly IReadOnlyList<string> Names = ["auto", "classification", "regression", "text", "alpaca", "e2e", "squad", "multiple-choice"];

    /// <summary>
    /// The kind of a data file, from its name and first line: .txt → plain text; SQuAD JSON or JSONL with question,
    /// context and answers → squad; JSONL with "instruction" → Alpaca; with "meaning_representation" → E2E; with
    /// "choices" and "question" → multiple choice; anything else classification.
    /// </summary>
    public static DataKind Detect(string path)
    {
        string extension = Path.GetExtension(path).ToLowerInvariant();
        if (extension is ".txt" or ".text") return DataKind.Text;
        if (extension is not (".jsonl" or ".json")) return DataKind.Classification;
        if (SquadData.LooksLikeSquad(path)) return DataKind.Squad;
        string? first = File.ReadLines(path).FirstOrDefault(l => !string.IsNullOrWhiteSpace(l));
        if (first is null) return DataKind.Classification;
        try
        {
            using var doc = JsonDocument.Parse(first);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) return DataKind.Classification;
            if (root.TryGetProperty("instruction", out _)) return DataKind.Alpaca;
            if (root.TryGetProperty(Generation.E2EData.MeaningRepresentationField, out _)) return DataKind.E2E;
            if (MultipleChoiceData.Looks(root)) return DataKind.MultipleChoice;
        }
        catch (JsonException) { }
        return DataKind.Classification;
    }

    /// <summary>A <c>--data</c> value (case-insensitive; "multiple-choice" or "multiplechoice").</summary>
    public static DataKind Parse(string name) =>
        Enum.TryParse(name.Replace("-", "", StringComparison.Ordinal), ignoreCase: true, out DataKind kind) && Enum.IsDefined(kind)
            ? kind
            : throw new ArgumentException($"--data: unknown '{name}' (choose {string.Join(", ", Names)})");
}

/// <summary>Everything `sparsetune finetune` needs, validated together before any work starts.</summary>
public sealed record FineTuneOptions
{
    public required string ModelDirectory { get; init; }
    public required string TrainFile { get; init; }
    public string? EvalFile { get; init; }
    public DataKind Data { get; init; } = DataKind.Auto;
    public string Method { get; init; } = "lora";
    /// <summary>The chosen method's options record (its descriptor's OptionsType); null: the method's defaults.</summary>
    public IMethodOptions? MethodOptions { get; init; }
    public TrainingOptions Training { get; init; } = new();
    public ClassificationDataOptions Columns { get; init; } = new();
    /// <summary>Token budget per example (classification, Alpaca) or block size (plain text).</summary>
    public int MaxLength { get; init; } = 128;
    public bool SkipBadRows { get; init; }
    public bool GroupByLength { get; init; }
    /// <summary>
    /// Replace a previous run in a non-empty output folder (Hugging Face's overwrite_output_dir): its files are removed
    /// first. Without it a non-empty output folder is refused (a resumed run continues in its own folder).
    /// </summary>
    public bool Overwrite { get; init; }

    /// <summary>cpu, cuda or auto (<see cref="ComputeDevice"/>).</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>
    /// Data parallelism (--distributed): <see cref="DistributedMode.Auto"/> trains over MPI when mpirun started the
    /// process. With N ranks the global batch is <see cref="TrainingOptions.BatchSize"/> × N × gradient accumulation.
    /// The library's default is one process.
    /// </summary>
    public DistributedMode Distributed { get; init; } = DistributedMode.None;

    /// <summary>Extractive QA's windows and answer extraction (--data squad).</summary>
    public SquadTaskOptions Squad { get; init; } = new();

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>(Training.Problems());
        problems.AddRange(Squad.Problems());
        if (!ComputeDevice.Choices.Contains(Device)) problems.Add($"--device: unknown '{Device}' (choose {string.Join(", ", ComputeDevice.Choices)})");
        if (PretrainedModel.FolderProblem(ModelDirectory) is { } modelProblem) problems.Add(modelProblem);
        if (!File.Exists(TrainFile)) problems.Add($"--train: file not found: {TrainFile}");
        if (EvalFile is not null && !File.Exists(EvalFile)) problems.Add($"--eval: file not found: {EvalFile}");
        if (EvalFile is null && Training.FollowsBestEvaluation) problems.Add(Training.BestEvaluationNeeds("an evaluation file: set --eval FILE"));
        if (MaxLength < 4) problems.Add("--max-length must be at least 4");
        // Only the chosen method's options are validated.
        if (MethodRegistry.Find(Method) is { } method) problems.AddRange(method.Problems(MethodOptions ?? method.DefaultOptions));
        else problems.Add($"--method: unknown '{Method}' (available: {string.Join(", ", MethodRegistry.Names)})");
        return problems;
    }
}

/// <summary>What a fine-tuning run produced and where.</summary>
public sealed record FineTuneOutcome(RunReport Report, string OutputDirectory, IReadOnlyDictionary<string, string> Outputs, string TrainableSummary, int SkippedRows);

/// <summary>What one data split contributed: the examples used and the rows skipped (with the first reasons, FILE:LINE: problem).</summary>
public sealed record DataSplitReport(string File, int Examples, int RowsSkipped, IReadOnlyList<string> Skipped);

/// <summary>
/// The main job: load model, tokenizer and data; attach the method; train with the one <see cref="Trainer"/>;
/// save the method's artifacts, the model where the method changes it, report.json and the loss plot.
/// </summary>
public static class FineTuneJob
{
    public static FineTuneOutcome Run(FineTuneOptions options, IProgress<TrainingProgress>? progress = null, Action<string>? log = null)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));
        string output = options.Training.OutputDirectory;
        IProcessGroup group = DistributedModes.Open(options.Distributed);
        // Rank 0 alone speaks and writes; the other ranks train silently beside it.
        if (!group.IsMain) (progress, log) = (null, null);
        if (options.Training.ResumeFrom is null && group.IsMain) RunFolder.PrepareForNewRun(output, options.Overwrite);
        if (group.Size > 1)
        {
            group.Barrier();   // the others start once rank 0 has prepared the output folder
            log?.Invoke($"data parallel: {group.Size} ranks over MPI, global batch {options.Training.BatchSize} × {group.Size} × {options.Training.GradientAccumulation} (--batch-size × ranks × --grad-accum)");
        }

        var tokenizer = TextTokenizer.FromFolder(options.ModelDirectory);
        var fileConfig = ModelConfig.Load(options.ModelDirectory);
        TokenizerChecks.AgainstModel(tokenizer, fileConfig, options.ModelDirectory);
        var encoder = new TokenizerEncoder(tokenizer);
        DataKind kind = ResolveKind(options);
        var data = LoadData(options, kind, encoder, fileConfig);
        var (trainExamples, evalExamples, labels, task) = (data.Train, data.Eval, data.Labels, data.Task);
        int skipped = data.Splits.Sum(s => s.RowsSkipped);
        log?.Invoke($"data: {trainExamples.Count} training and {evalExamples?.Count ?? 0} eval examples ({task}{(labels.Count > 0 ? ", labels " + string.Join(", ", labels) : "")}){(skipped > 0 ? $", {skipped} bad rows skipped" : "")}");
        // Refused before any training: an evaluation file from which no row survived would give a meaningless score.
        if (options.EvalFile is not null && evalExamples is { Count: 0 })
            throw new InvalidDataException($"{options.EvalFile}: no usable evaluation rows ({data.Splits[1].RowsSkipped} skipped{(data.Splits[1].Skipped.Count > 0 ? ", e.g. " + data.Splits[1].Skipped[0] : "")})");
        Directory.CreateDirectory(output);

        ModelHead head = data.Head;
        IReadOnlyList<string>? headLabels = task switch
        {
            TaskKind.Classification => labels,
            TaskKind.Regression => ["score"],
            _ => null,
        };
        bool sameLabels = headLabels is not null && fileConfig.Id2Label is { } existing
            && existing.Count == headLabels.Count && headLabels.Select((l, i) => existing.GetValueOrDefault(i.ToString()) == l).All(x => x);
        // A new head is initialised while loading: seed first, so that the same seed gives the same run in any process.
        torch.random.manual_seed(options.Training.Seed);
        using TransformerModel model = PretrainedModel.Load(options.ModelDirectory, head, sameLabels ? null : headLabels, out var loadReport);
        if (loadReport.NewlyInitialised.Count > 0) log?.Invoke($"new {head} head initialised: {string.Join(", ", loadReport.NewlyInitialised)}");
        model.to(ComputeDevice.Resolve(options.Device, log));

        var batcherOptions = new BatcherOptions { BatchSize = options.Training.BatchSize, Seed = options.Training.Seed, GroupByLength = options.GroupByLength };
        // Global batches: the trainer hands each rank its --batch-size rows of every one.
        var train = new Batcher(trainExamples, task, encoder.PadId, batcherOptions with { BatchSize = options.Training.BatchSize * group.Size });
        var eval = evalExamples is null ? null : new Batcher(evalExamples, task, encoder.PadId, batcherOptions with { Shuffle = false, GroupByLength = false });

        using Tuner tuner = MethodRegistry.CreateTuner(options.Method, options.MethodOptions,
            new TunerContext { TrainedModules = options.Training.TrainedModules, BaseModelPath = Path.GetFullPath(options.ModelDirectory) });
        Dictionary<string, string> outputs = [];
        var trainer = new Trainer(model, tuner, task, options.Training)
        {
            Progress = progress,
            Log = log,
            Group = group,
            Evaluate = data.Evaluate ?? (eval is null ? null : m => Evaluate(m, eval, task)),
            MainMetric = data.MainMetric,
            // The method's outputs are written as soon as it has finished, before anything that could still fail.
            Finished = m => outputs = !group.IsMain ? [] : SaveOutputs(m, tuner, output, options.ModelDirectory, kind == DataKind.Alpaca ? PromptTemplate.Alpaca : null),
        };
        TrainingResult result = trainer.Run(train);
        string summary = Trainer.TrainableSummary(model, tuner);
        if (!group.IsMain) return new FineTuneOutcome(NonMainReport(options, result), output, outputs, summary, skipped);

        string metricName = data.MainMetric ?? MetricSet.MainMetric(task);
        string plot = Path.Combine(output, "training-curve.svg");
        LossPlot.WriteSvg(plot, result.LossCurve,
            result.EvalCurve.Where(e => e.Metrics.ContainsKey(metricName)).Select(e => (e.Step, e.Metrics[metricName])).ToList(),
            metricName, $"{options.Method} on {Path.GetFileName(Path.GetFullPath(options.ModelDirectory))}");
        outputs["plot"] = plot;
        outputs["metrics_log"] = Path.Combine(output, "metrics.jsonl");
        string reportPath = Path.Combine(output, "report.json");
        outputs["report"] = reportPath;

        var warnings = RunWarnings.For(result, task, options.Training.LearningRate, metricName);
        foreach (string warning in warnings) log?.Invoke("warning: " + warning);
        var report = new RunReport
        {
            Method = options.Method,
            Options = new
            {
                method = tuner.Options, training = options.Training, data = kind.ToString(), max_length = options.MaxLength,
                train_file = options.TrainFile, eval_file = options.EvalFile, skip_bad_rows = options.SkipBadRows, overwrite = options.Overwrite,
                device = options.Device,
            },
            Data = new Dictionary<string, DataSplitReport?> { ["train"] = data.Splits[0], ["eval"] = data.Splits.Count > 1 ? data.Splits[1] : null },
            Warnings = warnings,
            Model = options.ModelDirectory,
            Task = task.ToString(),
            TrainableParameters = result.TrainableParameters,
            TotalParameters = result.TotalParameters,
            Steps = result.Steps,
            Tokens = result.Tokens,
            WallSeconds = result.WallSeconds,
            TokensPerSecond = result.WallSeconds > 0 ? result.Tokens / result.WallSeconds : 0,
            PeakMemoryBytes = ProcessMemory.PeakResidentBytes(),
            GradOptimizerBytes = result.GradOptimizerBytes,
            TrainLossFirst = result.TrainLossFirst,
            TrainLossLast = result.TrainLossLast,
            Eval = result.Eval,
            BaselineEval = result.BaselineEval,
            BestEval = result.Best,
            EarlyStopping = result.EarlyStopping,
            WeightSparsity = WeightSparsity(model),
            MethodReport = tuner.Report(model),
            Outputs = outputs,
        };
        report.Save(reportPath);
        return new FineTuneOutcome(report, output, outputs, summary, skipped);
    }

    /// <summary>The report a rank other than 0 returns: it writes nothing (rank 0's report.json is the run's).</summary>
    static RunReport NonMainReport(FineTuneOptions options, TrainingResult result) => new()
    {
        Method = options.Method,
        Options = new { },
        Data = new Dictionary<string, DataSplitReport?>(),
        Warnings = [],
        Model = options.ModelDirectory,
        Task = "",
        TrainableParameters = result.TrainableParameters,
        TotalParameters = result.TotalParameters,
        Steps = result.Steps,
        Tokens = result.Tokens,
        WallSeconds = result.WallSeconds,
        TrainLossFirst = result.TrainLossFirst,
        TrainLossLast = result.TrainLossLast,
        Eval = result.Eval,
        Outputs = new Dictionary<string, string>(),
    };

    /// <summary>
    /// What a method ships: its own files (what <see cref="Tuner.SaveArtifacts"/> says it wrote), and the whole
    /// model folder (with the tokenizer files of <paramref name="tokenizerSource"/>) when the method changed the
    /// model's weights. An instruction-tuned model gets its <paramref name="template"/> beside each of them, so that
    /// <c>generate</c> prompts it as it was trained. Returns output name → path for report.json.
    /// </summary>
    public static Dictionary<string, string> SaveOutputs(TransformerModel model, Tuner tuner, string output, string tokenizerSource,
        PromptTemplate? template = null)
    {
        var outputs = new Dictionary<string, string>(tuner.SaveArtifacts(model, output));
        if (tuner.ModifiesBaseWeights)
        {
            string modelDir = Path.Combine(output, "model");
            PretrainedModel.Save(model, modelDir);
            PretrainedModel.CopyTokenizerFiles(tokenizerSource, modelDir);
            outputs["model"] = modelDir;
        }
        if (template is not null)
        {
            foreach (string dir in outputs.Values.Where(Directory.Exists).Append(output).Distinct()) template.Save(dir);
            outputs["prompt_template"] = Path.Combine(output, PromptTemplate.FileName);
        }
        return outputs;
    }

    /// <summary>The kind of task the run's data makes (read from the first line of the training file under --data auto).</summary>
    public static TaskFamily TaskFamilyOf(FineTuneOptions options) =>
        ResolveKind(options) is DataKind.Classification or DataKind.Regression or DataKind.Squad or DataKind.MultipleChoice ? TaskFamily.Classification : TaskFamily.Generation;

    static DataKind ResolveKind(FineTuneOptions options) =>
        options.Data != DataKind.Auto ? options.Data : options.Columns.Regression ? DataKind.Regression : DataKinds.Detect(options.TrainFile);

    /// <summary>
    /// A run's data: training and evaluation examples, the task the batches make, and the head the model needs.
    /// <see cref="Evaluate"/> replaces the per-batch metrics where a task is scored otherwise (QA over its windows, a
    /// decoder's multiple choice by likelihood); <see cref="MainMetric"/> then names the metric that ranks evaluations.
    /// </summary>
    sealed record LoadedData(IReadOnlyList<Example> Train, IReadOnlyList<Example>? Eval, IReadOnlyList<string> Labels, TaskKind Task, IReadOnlyList<DataSplitReport> Splits)
    {
        public ModelHead Head { get; init; } = Task switch
        {
            TaskKind.Classification or TaskKind.Regression => ModelHead.SequenceClassification,
            TaskKind.QuestionAnswering => ModelHead.QuestionAnswering,
            TaskKind.MultipleChoice => ModelHead.MultipleChoice,
            _ => ModelHead.CausalLM,
        };
        public Func<TransformerModel, IReadOnlyDictionary<string, double>>? Evaluate { get; init; }
        public string? MainMetric { get; init; }
    }

    static LoadedData LoadData(FineTuneOptions options, DataKind kind, ITextEncoder encoder, ModelConfig config)
    {
        switch (kind)
        {
            case DataKind.MultipleChoice:
                return LoadMultipleChoice(options, encoder, config);
            case DataKind.Squad:
                return LoadSquad(options, (ISpanEncoder)encoder, config);
            case DataKind.Text:
            case DataKind.Alpaca:
            case DataKind.E2E:
            {
                LanguageModelDataset Load(string path) => kind switch
                {
                    DataKind.Text => LanguageModelData.FromText(path, encoder, options.MaxLength, options.SkipBadRows),
                    DataKind.E2E => Generation.E2EData.FromJsonl(path, encoder, options.MaxLength, options.SkipBadRows),
                    _ => LanguageModelData.FromAlpacaJsonl(path, encoder, options.MaxLength, options.SkipBadRows),
                };
                var train = Load(options.TrainFile);
                var eval = options.EvalFile is null ? null : Load(options.EvalFile);
                if (train.Examples.Count == 0) throw new InvalidDataException($"{options.TrainFile}: no training examples (is the text shorter than one block of {options.MaxLength} tokens?)");
                return new LoadedData(train.Examples, eval?.Examples, [], TaskKind.CausalLM,
                    Splits(new DataSplitReport(options.TrainFile, train.Examples.Count, train.SkippedRows, train.SkippedReasons),
                        eval is null ? null : new DataSplitReport(options.EvalFile!, eval.Examples.Count, eval.SkippedRows, eval.SkippedReasons)));
            }
            default:
            {
                // Integer labels name the classes of a classification checkpoint's own head, when it has one.
                var idLabels = PretrainedModel.HeadOf(config) == ModelHead.SequenceClassification && config.Id2Label is { Count: > 0 } id2label
                    ? id2label.OrderBy(p => int.Parse(p.Key, System.Globalization.CultureInfo.InvariantCulture)).Select(p => p.Value).ToList()
                    : null;
                var columns = options.Columns with { MaxLength = options.MaxLength, SkipBadRows = options.SkipBadRows, Regression = kind == DataKind.Regression, IdLabels = idLabels };
                var train = ClassificationData.Load(options.TrainFile, encoder, columns);
                if (train.Examples.Count == 0) throw new InvalidDataException($"{options.TrainFile}: no training examples");
                var eval = options.EvalFile is null ? null : ClassificationData.Load(options.EvalFile, encoder, columns with { Labels = train.Regression ? null : train.Labels });
                return new LoadedData(train.Examples, eval?.Examples, train.Labels, train.Task,
                    Splits(new DataSplitReport(options.TrainFile, train.Examples.Count, train.SkippedRows, train.SkippedReasons),
                        eval is null ? null : new DataSplitReport(options.EvalFile!, eval.Examples.Count, eval.SkippedRows, eval.SkippedReasons)));
            }
        }
    }

    static IReadOnlyList<DataSplitReport> Splits(DataSplitReport train, DataSplitReport? eval) => eval is null ? [train] : [train, eval];

    /// <summary>
    /// Extractive QA (encoders): every question's context in overlapping windows of --max-length tokens, each window
    /// a training example labelled with the answer's tokens (or [CLS]); evaluation answers each question from all its
    /// windows and reports SQuAD's F1 (the metric that ranks evaluations) and exact match.
    /// </summary>
    static LoadedData LoadSquad(FineTuneOptions options, ISpanEncoder encoder, ModelConfig config)
    {
        if (config is not BertConfig) throw new ArgumentException($"--data squad: extractive question answering needs an encoder (bert, roberta), not {config.ModelType}");
        var train = SquadData.Load(options.TrainFile, new SquadDataOptions { SkipBadRows = options.SkipBadRows });
        var eval = options.EvalFile is null ? null : SquadData.Load(options.EvalFile, new SquadDataOptions { SkipBadRows = options.SkipBadRows });
        if (train.Examples.Count == 0) throw new InvalidDataException($"{options.TrainFile}: no questions");
        var windows = options.Squad.Windows(options.MaxLength, encoder.PairSpecialTokenCount);
        var trainFeatures = QaFeatures.Build(train.Examples, encoder, windows);
        var evalFeatures = eval is null ? null : QaFeatures.Build(eval.Examples, encoder, windows);
        var splits = Splits(new DataSplitReport(options.TrainFile, train.Examples.Count, train.SkippedRows, train.SkippedReasons),
            eval is null ? null : new DataSplitReport(options.EvalFile!, eval.Examples.Count, eval.SkippedRows, eval.SkippedReasons));
        int padId = ((ITextEncoder)encoder).PadId;
        return new LoadedData(trainFeatures.Select(f => f.Example).ToList(), evalFeatures?.Select(f => f.Example).ToList(), [], TaskKind.QuestionAnswering, splits)
        {
            Evaluate = eval is null ? null : m => SquadEvaluation.Evaluate(m, eval, evalFeatures!, padId, options.Squad, options.Training.BatchSize).Metrics,
        };
    }

    /// <summary>
    /// Multiple choice: an encoder gets its multiple-choice head and (B, choices, T) batches; a decoder trains as a
    /// language model on the correct choice after the prompt and is scored by each choice's likelihood
    /// (<see cref="MultipleChoiceEvaluation"/>), ranked by accuracy.
    /// </summary>
    static LoadedData LoadMultipleChoice(FineTuneOptions options, ITextEncoder encoder, ModelConfig config)
    {
        var train = MultipleChoiceData.Read(options.TrainFile, options.SkipBadRows);
        var eval = options.EvalFile is null ? null : MultipleChoiceData.Read(options.EvalFile, options.SkipBadRows);
        if (train.Items.Count == 0) throw new InvalidDataException($"{options.TrainFile}: no multiple-choice questions");
        var splits = Splits(new DataSplitReport(options.TrainFile, train.Items.Count, train.SkippedRows, train.SkippedReasons),
            eval is null ? null : new DataSplitReport(options.EvalFile!, eval.Items.Count, eval.SkippedRows, eval.SkippedReasons));
        if (config is BertConfig)
            return new LoadedData(MultipleChoiceData.EncoderExamples(options.TrainFile, train.Items, encoder, options.MaxLength),
                eval is null ? null : MultipleChoiceData.EncoderExamples(options.EvalFile!, eval.Items, encoder, options.MaxLength),
                [], TaskKind.MultipleChoice, splits);
        return new LoadedData(MultipleChoiceData.DecoderTrainingExamples(train.Items, encoder, options.MaxLength),
            eval is null ? null : MultipleChoiceData.DecoderTrainingExamples(eval.Items, encoder, options.MaxLength), [], TaskKind.CausalLM, splits)
        {
            Evaluate = eval is null ? null : m => MultipleChoiceEvaluation.Score(m, eval.Items, encoder, options.MaxLength, options.Training.BatchSize).Metrics,
            MainMetric = MultipleChoiceEvaluation.MainMetric,
        };
    }

    /// <summary>The task's metrics over every eval batch (model already in eval mode, no grad).</summary>
    public static IReadOnlyDictionary<string, double> Evaluate(TransformerModel model, Batcher eval, TaskKind task)
    {
        var metrics = MetricSet.For(task);
        using var guard = NativeCallGuard.Enter();
        foreach (int[] indices in eval.EpochBatches(0))
        {
            NativeCallGuard.SafePoint();
            using var scope = NewDisposeScope();
            using var batch = eval.Build(indices).ToTrainingBatch().To(model.Device);
            using var output = model.Forward(batch.InputIds, batch.AttentionMask, batch.TokenTypeIds);
            metrics.AddBatch(output.Logits.cpu().to_type(ScalarType.Float32), batch.Labels.cpu());
        }
        return metrics.Compute();
    }

    /// <summary>Fraction of exact zeros in the block linears' effective weights (W plus any adapter's delta not already in W).</summary>
    public static double WeightSparsity(TransformerModel model)
    {
        long zeros = 0, total = 0;
        using var _ = no_grad();
        foreach (var (_, layer) in ModuleSelection.BlockLinears(model))
        {
            using var scope = NewDisposeScope();
            Tensor effective = layer.Adapter is null || layer.Adapter.DeltaInBaseWeight ? layer.weight : layer.weight + layer.Adapter.DeltaWeight(layer);
            zeros += effective.eq(0).sum().item<long>();
            total += effective.numel();
        }
        return total == 0 ? 0 : (double)zeros / total;
    }
}
