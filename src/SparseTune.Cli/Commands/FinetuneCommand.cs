using System.CommandLine;
using Spectre.Console;
using SparseTune.Data;
using SparseTune.Distributed;
using SparseTune.Training;
using SparseTune.Tuners;

namespace SparseTune.Cli.Commands;

/// <summary>
/// sparsetune finetune: the main job. With no arguments it fine-tunes the bundled demo model on the bundled
/// fortune-cookie categories. Every option binds onto the library's option records and all are validated
/// before any work starts.
/// </summary>
public static class FinetuneCommand
{
    /// <summary>Epochs of the bundled demo when --epochs is not given (about 45 s per method on 2 cores).</summary>
    public const int DemoEpochs = 10;

    /// <summary>Training flags a method may give its own default (its original scripts'; PST's NLU/NLG settings).</summary>
    const string MethodDefaultsNote = " A method may declare its original's value, used when this flag is not given (pst: see README).";

    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Hugging Face model folder (default: the bundled demo model)." };
        var train = new Option<string?>("--train") { Description = "Training data: CSV/TSV/JSONL (classification), .txt (causal LM), Alpaca JSONL (default: bundled demo data)." };
        var eval = new Option<string?>("--eval") { Description = "Evaluation data in the same format." };
        var data = new Option<string>("--data")
        {
            Description = "How to read the data: auto (from the file), classification, regression, text, alpaca, e2e, squad (extractive QA: SQuAD JSON or JSONL), multiple-choice (JSONL with choices).",
            DefaultValueFactory = _ => "auto",
        };
        data.AcceptOnlyFromAmong([.. DataKinds.Names]);
        var method = new Option<string>("--method")
        {
            Description = "Fine-tuning method: " + string.Join("; ", MethodRegistry.All.Select(m => $"{m.Name} — {m.Summary}")) + ".",
            DefaultValueFactory = _ => "lora",
        };
        var output = new Option<string?>("--output") { Description = "Output folder (default: a new folder under runs/)." };
        var epochs = new Option<int?>("--epochs") { Description = $"Passes over the training data (default 3; the bundled demo {DemoEpochs})." };
        var maxSteps = new Option<int?>("--max-steps") { Description = "Optimizer steps (overrides --epochs)." };
        var batchSize = new Option<int>("--batch-size") { DefaultValueFactory = _ => 16, Description = "Examples per micro-batch." };
        var gradAccum = new Option<int>("--grad-accum") { DefaultValueFactory = _ => 1, Description = "Micro-batches per optimizer step." };
        var lr = new Option<double?>("--lr")
        {
            Description = "Peak learning rate (default per method: " + string.Join(", ", MethodRegistry.All.Select(m => $"{m.Name} {m.DefaultLearningRate:G}"))
                + "; on the bundled demo " + string.Join(", ", MethodRegistry.All.Select(m => $"{m.Name} {m.DemoLearningRate:G}")) + ").",
        };
        var weightDecay = new Option<double>("--weight-decay") { DefaultValueFactory = _ => 0.01, Description = "Decoupled AdamW weight decay (not on biases and norms)." + MethodDefaultsNote };
        var schedule = new Option<ScheduleKind>("--schedule") { DefaultValueFactory = _ => ScheduleKind.Linear, Description = "Learning-rate schedule after warm-up." };
        var warmupRatio = new Option<double>("--warmup-ratio") { DefaultValueFactory = _ => 0.06, Description = "Share of steps spent warming up." + MethodDefaultsNote };
        var warmupSteps = new Option<int?>("--warmup-steps") { Description = "Warm-up steps (overrides --warmup-ratio; capped at the run's steps)." + MethodDefaultsNote };
        var maxGradNorm = new Option<double>("--max-grad-norm") { DefaultValueFactory = _ => 1.0, Description = "Gradient clipping norm (0: off)." + MethodDefaultsNote };
        var adamEpsilon = new Option<double>("--adam-epsilon") { DefaultValueFactory = _ => 1e-8, Description = "AdamW's ε." + MethodDefaultsNote };
        var labelSmoothing = new Option<double>("--label-smoothing") { DefaultValueFactory = _ => 0.0, Description = "Label smoothing of the cross-entropy loss (every method)." + MethodDefaultsNote };
        var device = CliSupport.DeviceOption();
        var precision = CliSupport.PrecisionOption();
        var evalEvery = new Option<int>("--eval-every") { DefaultValueFactory = _ => 0, Description = "Evaluate every N steps (0: at the end only)." };
        var patience = new Option<int?>("--early-stopping-patience")
        {
            Description = "Stop when the main eval metric (accuracy, pearson, squad f1; perplexity for a language model) has not improved for N evaluations in a row (needs --eval and --eval-every). Only evaluations after the method's last structural change (pruning, sparsity schedule, index selection) count.",
        };
        var keepBest = new Option<bool>("--keep-best") { Description = "Ship the weights of the best evaluation, not the last (needs --eval and --eval-every; candidates as for --early-stopping-patience)." };
        var saveEvery = new Option<int>("--save-every") { DefaultValueFactory = _ => 0, Description = "Checkpoint every N steps for --resume (0: never)." };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 42, Description = "Seed for initialisation, data order and dropout." };
        var resume = new Option<string?>("--resume") { Description = "Continue from OUTPUT/checkpoint of an interrupted run (same options)." };
        var noBaseline = new Option<bool>("--no-baseline") { Description = "Skip evaluating the untuned model first." };
        var maxLength = new Option<int>("--max-length") { DefaultValueFactory = _ => 128, Description = "Tokens per example (block size for plain text)." };
        var textColumn = new Option<string?>("--text-column") { Description = "Text column (default: text, sentence or sentence1)." };
        var pairColumn = new Option<string?>("--text-pair-column") { Description = "Second text column for pairs (default: sentence2 if present)." };
        var labelColumn = new Option<string>("--label-column") { DefaultValueFactory = _ => "label", Description = "Label column." };
        var skipBad = new Option<bool>("--skip-bad-rows") { Description = "Skip and count malformed rows instead of stopping (report.json records the counts)." };
        var labels = new Option<string?>("--labels") { Description = "Comma-separated class names in id order; integer labels in the data are ids into it (default: the data's labels, or a classification checkpoint's id2label)." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the previous run in a non-empty --output folder (its files are removed first)." };
        var groupByLength = new Option<bool>("--group-by-length") { Description = "Batch similar lengths together (less padding)." };
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "Recompute transformer blocks in backward to save activation memory (every method)." };
        var modulesToSave = new Option<string?>("--modules-to-save", "--exception-modules")
        {
            Description = "Comma-separated modules trained in full beside the method's own tensors, for every method (default: the task head for classification, nothing for a language model).",
        };
        var distributed = new Option<string>("--distributed")
        {
            DefaultValueFactory = _ => "auto",
            Description = "Data-parallel training: auto (over MPI when started by mpirun -np N), none, or mpi. The global batch is --batch-size × N × --grad-accum; rank 0 writes every output.",
        };
        distributed.AcceptOnlyFromAmong([.. DistributedModes.Names]);
        var methodFlags = MethodFlagOptions.Create();
        var squad = new SquadFlags();

        var command = new Command("finetune", "Fine-tune a model (the bundled demo when run without arguments).")
        {
            model, train, eval, data, method, output, epochs, maxSteps, batchSize, gradAccum, lr, weightDecay, schedule, warmupRatio, warmupSteps,
            maxGradNorm, adamEpsilon, labelSmoothing, evalEvery, patience, keepBest, saveEvery, seed, resume, noBaseline, maxLength, textColumn, pairColumn, labelColumn,
            skipBad, groupByLength, labels, overwrite, checkpointing, modulesToSave, device, precision, distributed,
        };
        methodFlags.AddTo(command);
        foreach (var option in squad.All) command.Options.Add(option);
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            string chosenMethod = parse.GetValue(method)!;
            MethodDescriptor descriptor = MethodRegistry.Find(chosenMethod)
                ?? throw new UsageException($"--method: unknown '{chosenMethod}' (available: {string.Join(", ", MethodRegistry.Names)})");
            bool demo = parse.GetValue(model) is null && parse.GetValue(train) is null;
            string modelDir = parse.GetValue(model) ?? Demo.ModelDirectory();
            string trainFile = parse.GetValue(train) ?? (demo ? Demo.TrainFile() : throw new UsageException("--train is required with --model"));
            string? evalFile = parse.GetValue(eval) ?? (demo ? Demo.EvalFile() : null);
            // Default output: a resumed run continues in the folder holding its checkpoint; a new run gets runs/METHOD-TIME.
            string outputDir = parse.GetValue(output)
                ?? (parse.GetValue(resume) is { } resumeDir ? Path.GetDirectoryName(Path.GetFullPath(Path.TrimEndingDirectorySeparator(resumeDir)))! : null)
                ?? Path.Combine("runs", $"{chosenMethod}-{DateTime.Now:yyyyMMdd-HHmmss}");
            IReadOnlyList<string>? List(Option<string?> o) => parse.GetValue(o)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

            var options = new FineTuneOptions
            {
                ModelDirectory = modelDir,
                TrainFile = trainFile,
                EvalFile = evalFile,
                Data = DataKinds.Parse(parse.GetValue(data)!),
                Method = chosenMethod,
                MaxLength = parse.GetValue(maxLength),
                SkipBadRows = parse.GetValue(skipBad),
                Overwrite = parse.GetValue(overwrite),
                Device = parse.GetValue(device)!,
                GroupByLength = parse.GetValue(groupByLength),
                Squad = squad.Bind(parse),
                Distributed = DistributedModes.Parse(parse.GetValue(distributed)!),
                Columns = new ClassificationDataOptions { TextColumn = parse.GetValue(textColumn), TextPairColumn = parse.GetValue(pairColumn), LabelColumn = parse.GetValue(labelColumn)!, Labels = List(labels) },
                Training = new TrainingOptions
                {
                    Epochs = parse.GetValue(epochs) ?? (demo ? DemoEpochs : 3),
                    MaxSteps = parse.GetValue(maxSteps),
                    BatchSize = parse.GetValue(batchSize),
                    GradientAccumulation = parse.GetValue(gradAccum),
                    LearningRate = parse.GetValue(lr) ?? (demo ? descriptor.DemoLearningRate : descriptor.DefaultLearningRate),
                    WeightDecay = parse.GetValue(weightDecay),
                    Schedule = parse.GetValue(schedule),
                    WarmupRatio = parse.GetValue(warmupRatio),
                    WarmupSteps = parse.GetValue(warmupSteps),
                    MaxGradNorm = parse.GetValue(maxGradNorm),
                    AdamEpsilon = parse.GetValue(adamEpsilon),
                    LabelSmoothing = parse.GetValue(labelSmoothing),
                    EvalEvery = parse.GetValue(evalEvery),
                    EarlyStoppingPatience = parse.GetValue(patience),
                    KeepBest = parse.GetValue(keepBest),
                    SaveEvery = parse.GetValue(saveEvery),
                    Seed = parse.GetValue(seed),
                    ResumeFrom = parse.GetValue(resume),
                    EvaluateBaseline = !parse.GetValue(noBaseline),
                    OutputDirectory = outputDir,
                    GradientCheckpointing = parse.GetValue(checkpointing),
                    Precision = CliSupport.ParsePrecision(parse.GetValue(precision)),
                    TrainedModules = List(modulesToSave),
                },
                MethodOptions = methodFlags.Bind(parse, descriptor),
            };
            var problems = options.Problems();
            if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));

            // The method's own training defaults (its original scripts'), for every training flag the user did not give.
            Option[] trainingFlags = [weightDecay, maxGradNorm, adamEpsilon, warmupRatio, warmupSteps, labelSmoothing];
            var declared = descriptor.DefaultTraining(FineTuneJob.TaskFamilyOf(options));
            var (training, applied) = declared.ApplyTo(options.Training, flag => trainingFlags.Any(o => o.Name == flag && parse.GetResult(o) is { Implicit: false }));
            options = options with { Training = training };

            // Rank 0 alone prints; the other ranks train silently (their errors still reach stderr).
            if (!DistributedModes.Open(options.Distributed).IsMain)
            {
                FineTuneJob.Run(options);
                return 0;
            }
            var console = CliSupport.Out;
            console.MarkupLine($"[bold]sparsetune finetune[/] --method {chosenMethod}: {Markup.Escape(modelDir)} on {Markup.Escape(trainFile)}");
            if (applied.Count > 0) console.MarkupLine(Markup.Escape($"{chosenMethod}'s training defaults ({declared.Source}): {string.Join(", ", applied)}"));
            var view = new TrainingProgressView();
            FineTuneOutcome outcome = view.Run($"{chosenMethod}", () => FineTuneJob.Run(options, view, message => console.MarkupLine(Markup.Escape(message))));
            PrintOutcome(console, outcome);
            return 0;
        }));
        return command;
    }

    static void PrintOutcome(IAnsiConsole console, FineTuneOutcome outcome)
    {
        var report = outcome.Report;
        var table = new Table().AddColumns("metric", "untuned baseline", "fine-tuned");
        foreach (var (name, value) in report.Eval)
        {
            string baseline = report.BaselineEval is { } b && b.TryGetValue(name, out var v) ? $"{v:0.0000}" : "-";
            table.AddRow(name, baseline, $"{value:0.0000}");
        }
        console.Write(table);
        console.MarkupLine($"train loss {report.TrainLossFirst:0.0000} → {report.TrainLossLast:0.0000}; {report.Steps} steps, {report.Tokens:N0} tokens in {report.WallSeconds:0.0} s ({report.TokensPerSecond:0} tokens/s)");
        if (report.BestEval is { } best)
            console.MarkupLine(Markup.Escape($"best evaluation: {best.Metric} {best.Value:0.0000} at step {best.Step}{(best.Kept ? " (its weights ship: --keep-best)" : "")}"
                + (report.EarlyStopping is { Triggered: true, Step: var stop } ? $"; early stopping after step {stop}" : "")));
        foreach (var (what, path) in outcome.Outputs)
            console.MarkupLine($"{what}: {Markup.Escape(path)}");
    }
}

/// <summary>Locates the bundled demo (model and data) from the working folder or the program's folder upwards.</summary>
public static class Demo
{
    public static string ModelDirectory() => Find(Path.Combine("demo", "model"));
    /// <summary>The bundled tiny GPT-2 (byte-level BPE, 128 positions) for generation.</summary>
    public static string Gpt2ModelDirectory() => Find(Path.Combine("demo", "gpt2-model"));
    public static string TrainFile() => Find(Path.Combine("demo", "data", "fortunes-train.jsonl"));
    public static string EvalFile() => Find(Path.Combine("demo", "data", "fortunes-eval.jsonl"));
    /// <summary>Any bundled demo file or folder, e.g. Bundled("squad", "train.json").</summary>
    public static string Bundled(params string[] parts) => Find(Path.Combine(["demo", .. parts]));

    static string Find(string relative)
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, relative);
                if (File.Exists(candidate) || Directory.Exists(candidate)) return candidate;
            }
        }
        throw new UsageException($"the bundled demo ({relative}) was not found; run from the SparseTune checkout or pass --model and --train");
    }
}
