using System.CommandLine;
using Spectre.Console;
using SparseTune.Data;
using SparseTune.Evaluation;
using SparseTune.Generation;
using SparseTune.Models;
using SparseTune.Nn;
using TorchSharp;
using SparseTune.Tokenization;
using SparseTune.Training;
using SparseTune.Tuners;

namespace SparseTune.Cli.Commands;

/// <summary>What `sparsetune eval` evaluates.</summary>
public enum EvalTask
{
    /// <summary>From --data: a folder is MMLU, a file is E2E.</summary>
    Auto,
    /// <summary>E2E NLG: generate from meaning representations, corpus BLEU.</summary>
    E2E,
    /// <summary>MMLU: k-shot multiple choice, accuracy per subject and overall.</summary>
    Mmlu,
    /// <summary>Classification (accuracy, macro F1, MCC) or regression (Pearson, Spearman), as the model's head; CSV/TSV/JSONL with labels.</summary>
    Classification,
    /// <summary>Extractive QA: SQuAD exact match and F1.</summary>
    Squad,
    /// <summary>Multiple-choice accuracy: an encoder's multiple-choice head, or a causal LM's choice likelihoods.</summary>
    MultipleChoice,
    /// <summary>A causal LM's perplexity on plain text (.txt), Alpaca or E2E JSONL (responses only).</summary>
    Perplexity,
}

/// <summary>Everything `sparsetune eval --task e2e` needs, validated together before any work starts.</summary>
public sealed record EvalOptions
{
    public required string ModelDirectory { get; init; }
    public required string DataFile { get; init; }
    /// <summary>Any method's artifact (a LoRA adapter folder, a sparse delta, …) to merge into the model; null: the model as it is.</summary>
    public string? AdapterDirectory { get; init; }
    public GenerationOptions Generation { get; init; } = new();
    /// <summary>Evaluate only the first this-many meaning representations; 0: all.</summary>
    public int Limit { get; init; }
    public bool Lowercase { get; init; }
    public BleuTokenizer Tokenizer { get; init; } = BleuTokenizer.ThirteenA;
    public bool SkipBadRows { get; init; }
    /// <summary>JSONL file for the predictions; null: none written.</summary>
    public string? OutputFile { get; init; }
    /// <summary>cpu, cuda or auto.</summary>
    public string Device { get; init; } = "cpu";
    public Precision Precision { get; init; }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>(Generation.Problems().Select(p => "generation: " + p));
        if (PretrainedModel.FolderProblem(ModelDirectory) is { } modelProblem) problems.Add(modelProblem);
        if (!File.Exists(DataFile)) problems.Add($"--data: file not found: {DataFile}");
        else if (!E2EData.LooksLikeE2E(DataFile))
            problems.Add($"--data: {DataFile} is not E2E JSONL (its first line needs \"{E2EData.MeaningRepresentationField}\" and \"{E2EData.ReferenceField}\"); --task e2e evaluates E2E data only (--task mmlu takes an MMLU folder)");
        if (MethodArtifacts.PathProblem(AdapterDirectory) is { } adapterProblem) problems.Add(adapterProblem);
        if (Limit < 0) problems.Add("--limit must be 0 (all) or more");
        return problems;
    }
}

/// <summary>Everything `sparsetune eval --task mmlu` needs, validated together before any work starts.</summary>
public sealed record MmluEvalOptions
{
    public required string ModelDirectory { get; init; }
    /// <summary>The MMLU folder: test/SUBJECT_test.csv (or val/SUBJECT_val.csv) and dev/SUBJECT_dev.csv.</summary>
    public required string DataDirectory { get; init; }
    /// <summary>Any method's artifact (a LoRA adapter folder, a sparse delta, …) to merge into the model; null: the model as it is.</summary>
    public string? AdapterDirectory { get; init; }
    public MmluSplit Split { get; init; } = MmluSplit.Test;
    /// <summary>Subjects to evaluate (file names without _test.csv); empty: all.</summary>
    public IReadOnlyList<string> Subjects { get; init; } = [];
    public MmluOptions Evaluation { get; init; } = new();
    /// <summary>Per-question predictions JSONL; null: none written.</summary>
    public string? OutputFile { get; init; }
    /// <summary>cpu, cuda or auto.</summary>
    public string Device { get; init; } = "cpu";
    public Precision Precision { get; init; }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>(Evaluation.Problems().Select(p => "mmlu: " + p));
        if (PretrainedModel.FolderProblem(ModelDirectory) is { } modelProblem) problems.Add(modelProblem);
        var (folder, suffix) = MmluData.SplitFiles(Split);
        if (!Directory.Exists(DataDirectory)) problems.Add($"--data: MMLU folder not found: {DataDirectory}");
        else if (!Directory.Exists(Path.Combine(DataDirectory, folder))) problems.Add($"--data: {DataDirectory} has no {folder}/ folder (the MMLU layout: {folder}/SUBJECT{suffix}, dev/SUBJECT_dev.csv)");
        if (MethodArtifacts.PathProblem(AdapterDirectory) is { } adapterProblem) problems.Add(adapterProblem);
        if (Subjects.Any(string.IsNullOrWhiteSpace)) problems.Add("--subjects: an empty subject name");
        return problems;
    }
}

/// <summary>
/// sparsetune eval: one command, one small run function per task. <c>--task e2e</c> is the NLG evaluation of the PST
/// paper's GPT-2 experiments: one generation per distinct meaning representation of an E2E JSONL file, scored with
/// corpus BLEU against every reference of its MR (decoding defaults are LoRA's for GPT-2 on E2E: beam 10, length
/// penalty 0.8, no repeated 4-grams). <c>--task mmlu</c> is Hendrycks et al.'s k-shot MMLU on a folder in the release
/// layout (<see cref="MmluEvaluation"/>). classification, squad, multiple-choice and perplexity score a labelled file
/// with the metrics fine-tuning reports for it (<see cref="DatasetEvaluation"/>).
/// <para>
/// A new task is a value of <see cref="EvalTask"/>, a class of its own options (their flags, the binding onto its
/// options record), a Run function, one line in <see cref="Execute"/> and, when --data can show it, a rule in <see cref="ResolveTask"/>.
/// </para>
/// </summary>
public static class EvalCommand
{
    /// <summary>The flags every task reads.</summary>
    sealed class CommonFlags
    {
        public readonly Option<string> Model = new("--model") { Description = "Hugging Face model folder (config.json, *.safetensors, tokenizer files): a fine-tuned run's model/, or the base model of --adapter.", Required = true };
        public readonly Option<string> Data = new("--data") { Description = "e2e: E2E JSONL, one {\"meaning_representation\", \"reference\"} object a line, several lines per MR. mmlu: a folder in the MMLU release layout (test/SUBJECT_test.csv, dev/SUBJECT_dev.csv). classification: CSV/TSV/JSONL with a label column. squad: SQuAD v1.1/v2.0 JSON or JSONL. multiple-choice: JSONL with question, choices, label. perplexity: .txt, Alpaca or E2E JSONL.", Required = true };
        public readonly Option<string> Task = new("--task") { Description = "e2e, mmlu, classification, squad, multiple-choice, perplexity, or auto: a folder is mmlu; a file is read as finetune reads it (E2E JSONL → e2e, plain text and Alpaca → perplexity).", DefaultValueFactory = _ => "auto" };
        public readonly Option<int> MaxLength = new("--max-length") { Description = "Tokens per example, as fine-tuned (QA: window length; perplexity: block size); mmlu: longest prompt. 0: 128, or the model's position limit for mmlu.", DefaultValueFactory = _ => 0 };
        public readonly Option<int> BatchSize = new("--batch-size") { Description = "Examples (mmlu: prompts) per forward pass.", DefaultValueFactory = _ => 8 };
        public readonly Option<bool> SkipBad = new("--skip-bad-rows") { Description = "Skip and count malformed rows instead of stopping at the first." };
        public readonly Option<string?> Adapter = new("--adapter", "--delta") { Description = "Any method's artifact to merge into --model first: a LoRA adapter folder, a sparse delta or sparse-weights file, or a run folder holding one." };
        public readonly Option<string?> Output = new("--output") { Description = "Predictions JSONL to write. e2e: predictions.jsonl unless given ('' writes none); mmlu: none unless given (subject, index, prediction, answer, probabilities, …)." };
        public readonly Option<string> Device = CliSupport.DeviceOption();
        public readonly Option<string> Precision = CliSupport.PrecisionOption();

        public IEnumerable<Option> All => [Model, Data, Task, Adapter, Output, MaxLength, BatchSize, SkipBad, Device, Precision];
    }

    /// <summary>The flags of --task e2e, bound onto <see cref="EvalOptions"/>.</summary>
    sealed class E2EFlags
    {
        readonly Option<int> beams = new("--beams") { Description = "e2e: beam size; 1 decodes greedily.", DefaultValueFactory = _ => 10 };
        readonly Option<int> maxNew = new("--max-new-tokens") { Description = "e2e: most tokens to generate per MR (EOS included).", DefaultValueFactory = _ => 64 };
        readonly Option<double> lengthPenalty = new("--length-penalty") { Description = "e2e: beam score = log p / length^α (Hugging Face's length_penalty).", DefaultValueFactory = _ => 0.8 };
        readonly Option<int> noRepeat = new("--no-repeat-ngram") { Description = "e2e: forbid repeating any n-gram of this size; 0 turns it off.", DefaultValueFactory = _ => 4 };
        readonly Option<int> limit = new("--limit") { Description = "e2e: evaluate only the first N meaning representations (0: all).", DefaultValueFactory = _ => 0 };
        readonly Option<bool> lowercase = new("--lowercase") { Description = "e2e: lowercase predictions and references before BLEU (sacrebleu -lc)." };
        readonly Option<BleuTokenizer> tokenize = new("--bleu-tokenize") { Description = "e2e: BLEU tokenisation: ThirteenA (sacrebleu's default 13a) or Whitespace.", DefaultValueFactory = _ => BleuTokenizer.ThirteenA };
        readonly Option<bool> noCache = new("--no-cache") { Description = "e2e: recompute the whole prefix at every decoding step instead of keeping a key/value cache (same output, slower)." };

        public IEnumerable<Option> All => [beams, maxNew, lengthPenalty, noRepeat, limit, lowercase, tokenize, noCache];

        public EvalOptions Bind(ParseResult parse, CommonFlags common)
        {
            // E2E writes predictions.jsonl unless told otherwise; an empty --output writes none.
            string? output = parse.GetResult(common.Output) is null ? "predictions.jsonl" : parse.GetValue(common.Output);
            return new EvalOptions
            {
                ModelDirectory = parse.GetValue(common.Model)!,
                DataFile = parse.GetValue(common.Data)!,
                AdapterDirectory = parse.GetValue(common.Adapter),
                Generation = new GenerationOptions
                {
                    NumBeams = parse.GetValue(beams),
                    MaxNewTokens = parse.GetValue(maxNew),
                    LengthPenalty = parse.GetValue(lengthPenalty),
                    NoRepeatNgramSize = parse.GetValue(noRepeat),
                    UseCache = !parse.GetValue(noCache),
                },
                Limit = parse.GetValue(limit),
                Lowercase = parse.GetValue(lowercase),
                Tokenizer = parse.GetValue(tokenize),
                SkipBadRows = parse.GetValue(common.SkipBad),
                OutputFile = string.IsNullOrWhiteSpace(output) ? null : output,
                Device = parse.GetValue(common.Device)!,
                Precision = CliSupport.ParsePrecision(parse.GetValue(common.Precision)),
            };
        }
    }

    /// <summary>The flags of --task mmlu, bound onto <see cref="MmluEvalOptions"/>.</summary>
    sealed class MmluFlags
    {
        readonly Option<int> shots = new("--shots") { Description = "mmlu: dev examples before each question (fewer where a prompt would not fit, or the dev file has fewer).", DefaultValueFactory = _ => 5 };
        readonly Option<string?> subjects = new("--subjects") { Description = "mmlu: comma-separated subjects to evaluate (e.g. anatomy,virology); default all." };
        readonly Option<MmluSplit> split = new("--split") { Description = "mmlu: Test (test/SUBJECT_test.csv) or Val (val/SUBJECT_val.csv).", DefaultValueFactory = _ => MmluSplit.Test };

        public IEnumerable<Option> All => [shots, subjects, split];

        public MmluEvalOptions Bind(ParseResult parse, CommonFlags common) => new()
        {
            ModelDirectory = parse.GetValue(common.Model)!,
            DataDirectory = parse.GetValue(common.Data)!,
            AdapterDirectory = parse.GetValue(common.Adapter),
            Split = parse.GetValue(split),
            Subjects = (parse.GetValue(subjects) ?? "").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
            Evaluation = new MmluOptions
            {
                Shots = parse.GetValue(shots),
                MaxLength = parse.GetValue(common.MaxLength) is > 0 and var length ? length : null,
                BatchSize = parse.GetValue(common.BatchSize),
            },
            OutputFile = string.IsNullOrWhiteSpace(parse.GetValue(common.Output)) ? null : parse.GetValue(common.Output),
            Device = parse.GetValue(common.Device)!,
            Precision = CliSupport.ParsePrecision(parse.GetValue(common.Precision)),
        };
    }

    /// <summary>The flags of the data-file tasks (classification, squad, multiple-choice, perplexity), bound onto <see cref="DatasetEvalOptions"/>.</summary>
    sealed class DatasetFlags
    {
        readonly Option<string?> textColumn = new("--text-column") { Description = "classification: text column (default: text, sentence or sentence1)." };
        readonly Option<string?> pairColumn = new("--text-pair-column") { Description = "classification: second text column for pairs (default: sentence2 if present)." };
        readonly Option<string> labelColumn = new("--label-column") { DefaultValueFactory = _ => "label", Description = "classification: label column." };
        readonly SquadFlags squad = new();

        public IEnumerable<Option> All => [textColumn, pairColumn, labelColumn, .. squad.All];

        public DatasetEvalOptions Bind(ParseResult parse, CommonFlags common, EvalTask task) => new()
        {
            ModelDirectory = parse.GetValue(common.Model)!,
            DataFile = parse.GetValue(common.Data)!,
            AdapterPath = parse.GetValue(common.Adapter),
            Data = task switch
            {
                EvalTask.Squad => DataKind.Squad,
                EvalTask.MultipleChoice => DataKind.MultipleChoice,
                EvalTask.Classification => DataKind.Classification,
                _ => PerplexityKind(parse.GetValue(common.Data)!),
            },
            MaxLength = parse.GetValue(common.MaxLength) is > 0 and var length ? length : 128,
            BatchSize = parse.GetValue(common.BatchSize),
            SkipBadRows = parse.GetValue(common.SkipBad),
            Columns = new ClassificationDataOptions { TextColumn = parse.GetValue(textColumn), TextPairColumn = parse.GetValue(pairColumn), LabelColumn = parse.GetValue(labelColumn)! },
            Squad = squad.Bind(parse),
            Device = parse.GetValue(common.Device)!,
            Precision = CliSupport.ParsePrecision(parse.GetValue(common.Precision)),
        };

        static DataKind PerplexityKind(string data) => DataKinds.Detect(data) is var kind && kind is DataKind.Text or DataKind.Alpaca or DataKind.E2E
            ? kind
            : throw new UsageException($"--task perplexity: {data} is neither plain text (.txt) nor Alpaca or E2E JSONL");

        public IEnumerable<Option> SquadOnly => squad.All;
        public IEnumerable<Option> ClassificationOnly => [textColumn, pairColumn, labelColumn];
    }

    public static Command Create()
    {
        var common = new CommonFlags();
        var e2e = new E2EFlags();
        var mmlu = new MmluFlags();
        var dataset = new DatasetFlags();
        var command = new Command("eval", "Evaluate a model (plus any method's adapter or delta) on a task: E2E BLEU, MMLU accuracy, classification, SQuAD EM/F1, multiple-choice accuracy or perplexity.");
        foreach (var option in common.All.Concat(e2e.All).Concat(mmlu.All).Concat(dataset.All)) command.Options.Add(option);
        var flagsOfTask = new Dictionary<EvalTask, IEnumerable<Option>>
        {
            [EvalTask.E2E] = e2e.All, [EvalTask.Mmlu] = mmlu.All, [EvalTask.Squad] = dataset.SquadOnly, [EvalTask.Classification] = dataset.ClassificationOnly,
        };

        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            EvalTask task = ResolveTask(ParseTask(parse.GetValue(common.Task)), parse.GetValue(common.Data)!);
            // A flag of another task would be ignored silently; say so instead.
            var foreign = flagsOfTask.Where(f => f.Key != task).SelectMany(f => f.Value.Where(o => parse.GetResult(o) is { Implicit: false }).Select(o => $"{o.Name} applies to --task {Name(f.Key)}")).ToList();
            if (foreign.Count > 0) throw new UsageException($"{string.Join("; ", foreign)}, not {Name(task)}");
            return Execute(task, parse, common, e2e, mmlu, dataset);
        }));
        return command;
    }

    /// <summary>The task switch: one small run-and-print function per task.</summary>
    static int Execute(EvalTask task, ParseResult parse, CommonFlags common, E2EFlags e2e, MmluFlags mmlu, DatasetFlags dataset) => task switch
    {
        EvalTask.E2E => PrintE2E(e2e.Bind(parse, common)),
        EvalTask.Mmlu => PrintMmlu(mmlu.Bind(parse, common)),
        EvalTask.Classification or EvalTask.Squad or EvalTask.MultipleChoice or EvalTask.Perplexity => PrintDataset(dataset.Bind(parse, common, task)),
        _ => throw new UsageException($"--task {Name(task)} is not supported"),
    };

    static string Name(EvalTask task) => task == EvalTask.MultipleChoice ? "multiple-choice" : task.ToString().ToLowerInvariant();

    static EvalTask ParseTask(string? text) =>
        Enum.TryParse<EvalTask>(text?.Replace("-", "", StringComparison.Ordinal), ignoreCase: true, out var task) && Enum.IsDefined(task)
            ? task
            : throw new UsageException($"--task: '{text}' is not one of {string.Join(", ", Enum.GetValues<EvalTask>().Select(Name))}");

    /// <summary>
    /// An explicit task as it is; auto: a folder is MMLU; a file is read as finetune reads it (<see cref="DataKinds.Detect"/>):
    /// E2E JSONL is scored by BLEU, plain text and Alpaca by perplexity, SQuAD, multiple choice and classification files
    /// by their tasks. A missing file goes to E2E, whose validation names the problem.
    /// </summary>
    public static EvalTask ResolveTask(EvalTask requested, string data)
    {
        if (requested != EvalTask.Auto) return requested;
        if (Directory.Exists(data)) return EvalTask.Mmlu;
        if (!File.Exists(data)) return EvalTask.E2E;
        return DataKinds.Detect(data) switch
        {
            DataKind.E2E => EvalTask.E2E,
            DataKind.Squad => EvalTask.Squad,
            DataKind.MultipleChoice => EvalTask.MultipleChoice,
            DataKind.Text or DataKind.Alpaca => EvalTask.Perplexity,
            _ => EvalTask.Classification,
        };
    }

    static int PrintDataset(DatasetEvalOptions options)
    {
        var result = DatasetEvaluation.Evaluate(options, Console.Error.WriteLine);
        if (result.SkippedRows > 0) Console.Error.WriteLine($"skipped {result.SkippedRows} bad rows");
        var table = new Table().AddColumns("metric", "value");
        foreach (var (name, value) in result.Metrics) table.AddRow(name, $"{value:0.0000}");
        CliSupport.Out.Write(table);
        CliSupport.Out.MarkupLine(Markup.Escape($"{result.Data}: {string.Join("  ", result.Metrics.Select(m => $"{m.Key} {m.Value:0.0000}"))} over {result.Examples} examples"));
        return 0;
    }

    static int PrintE2E(EvalOptions options)
    {
        var result = Run(options, Console.Error.WriteLine);
        var b = result.Bleu;
        Console.WriteLine($"BLEU = {b.Score:0.00} {string.Join('/', b.Precisions.Select(p => p.ToString("0.0")))} (BP = {b.BrevityPenalty:0.000} hyp_len = {b.HypothesisLength} ref_len = {b.ReferenceLength}) over {result.Predictions.Count} meaning representations");
        if (options.OutputFile is not null) Console.WriteLine($"wrote predictions to {options.OutputFile}");
        return 0;
    }

    static int PrintMmlu(MmluEvalOptions options)
    {
        var result = RunMmlu(options, Console.Error.WriteLine);
        var console = CliSupport.Out;
        var table = new Table().AddColumns("subject", "questions", "correct", "accuracy", "min shots");
        foreach (var s in result.Subjects)
            table.AddRow(Markup.Escape(s.Subject), $"{s.Questions}", $"{s.Correct}", $"{s.Accuracy:0.0000}", $"{s.Shots}");
        table.AddRow("overall (micro)", $"{result.Questions}", $"{result.Correct}", $"{result.Accuracy:0.0000}", "");
        table.AddRow($"macro ({result.Subjects.Count} subjects)", "", "", $"{result.MacroAccuracy:0.0000}", "");
        console.Write(table);
        console.MarkupLine(Markup.Escape($"MMLU accuracy = {result.Accuracy:0.0000} over {result.Questions} questions in {result.Subjects.Count} subjects (macro {result.MacroAccuracy:0.0000})"));
        if (options.OutputFile is not null) console.MarkupLine(Markup.Escape($"wrote predictions to {options.OutputFile}"));
        return 0;
    }

    /// <summary>Validates, loads data, model (and adapter) and tokenizer, evaluates every subject and writes the predictions.</summary>
    /// <param name="log">Per-subject progress and warnings (the CLI sends them to stderr).</param>
    public static MmluResult RunMmlu(MmluEvalOptions options, Action<string>? log = null)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));
        // The data first: a bad row should not wait for the model to load.
        var subjects = MmluData.Load(options.DataDirectory, options.Split, options.Subjects);
        var encoder = new TokenizerEncoder(TextTokenizer.FromFolder(options.ModelDirectory));

        using TransformerModel net = TextGenerator.LoadCausalLM(options.ModelDirectory, options.AdapterDirectory, log);
        net.to(ComputeDevice.Resolve(options.Device, log));
        net.Precision = options.Precision;
        var progress = new SynchronousProgress<MmluProgress>(p =>
            log?.Invoke($"[{p.SubjectsDone}/{p.SubjectCount}] {p.Subject.Subject}: accuracy {p.Subject.Accuracy:0.000} ({p.Subject.Correct}/{p.Subject.Questions}, {p.Subject.Shots}-shot)"));
        var result = MmluEvaluation.Evaluate(net, encoder, subjects, options.Evaluation, progress, log);
        if (options.OutputFile is not null) MmluEvaluation.WritePredictions(options.OutputFile, result.Predictions);
        return result;
    }

    /// <summary>Validates, loads model (and adapter), tokenizer and data, generates, scores and writes the predictions.</summary>
    /// <param name="log">Progress and warnings (the CLI sends them to stderr).</param>
    public static E2EEvaluation Run(EvalOptions options, Action<string>? log = null)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));

        var tokenizer = TextTokenizer.FromFolder(options.ModelDirectory);
        var encoder = new TokenizerEncoder(tokenizer);
        var references = E2EData.Groups(options.DataFile, options.SkipBadRows);
        if (references.SkippedRows > 0) log?.Invoke($"skipped {references.SkippedRows} bad rows, e.g. {references.SkippedReasons[0]}");
        var groups = options.Limit > 0 ? references.Groups.Take(options.Limit).ToList() : references.Groups;
        if (groups.Count == 0) throw new InvalidDataException($"{options.DataFile}: no meaning representations to evaluate");

        using TransformerModel net = TextGenerator.LoadCausalLM(options.ModelDirectory, options.AdapterDirectory, log);
        net.to(ComputeDevice.Resolve(options.Device, log));
        net.Precision = options.Precision;

        int every = Math.Max(1, groups.Count / 10);
        var progress = new SynchronousProgress<int>(done => { if (done % every == 0 || done == groups.Count) log?.Invoke($"generated {done}/{groups.Count}"); });
        var result = E2EEvaluator.Evaluate(net, groups, encoder, ids => tokenizer.Decode(ids), options.Generation,
            options.Tokenizer, options.Lowercase, progress);
        if (options.OutputFile is not null) E2EEvaluator.WritePredictions(options.OutputFile, result.Predictions);
        return result;
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool and print out of order).</summary>
    sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
