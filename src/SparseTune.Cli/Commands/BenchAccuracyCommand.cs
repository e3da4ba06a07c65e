using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using SparseTune.Benchmarks;
using SparseTune.Models;
using SparseTune.Training;
using SparseTune.Tuners;

namespace SparseTune.Cli.Commands;

/// <summary>
/// sparsetune bench accuracy: every method on the bundled demo (or your data) at matched trainable budgets,
/// several seeds; a mean ± std table, accuracy.json and a plot of the metric against trainable parameters
/// and against final weight sparsity.
/// </summary>
public static class BenchAccuracyCommand
{
    public static Command Create()
    {
        var model = new Option<string?>("--model") { Description = "Model folder (default: the bundled demo model)." };
        var train = new Option<string?>("--train") { Description = "Training data (default: bundled demo data)." };
        var eval = new Option<string?>("--eval") { Description = "Evaluation data (default: bundled demo data)." };
        var methods = new Option<string>("--methods") { Description = "Comma-separated methods.", DefaultValueFactory = _ => string.Join(",", MethodRegistry.Names) };
        var seeds = new Option<int>("--seeds") { Description = "Seeds per method.", DefaultValueFactory = _ => 3 };
        var epochs = new Option<int>("--epochs") { DefaultValueFactory = _ => FinetuneCommand.DemoEpochs };
        var output = new Option<string>("--output") { Description = "Folder for runs, accuracy.json and accuracy.svg.", DefaultValueFactory = _ => Path.Combine("runs", $"bench-accuracy-{DateTime.Now:yyyyMMdd-HHmmss}") };
        var command = new Command("accuracy", "Fine-tune with every method at matched budgets over several seeds; table and plot of accuracy vs trainable parameters and sparsity.")
        { model, train, eval, methods, seeds, epochs, output };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            bool demo = parse.GetValue(model) is null;
            string modelDir = parse.GetValue(model) ?? Demo.ModelDirectory();
            string trainFile = parse.GetValue(train) ?? (demo ? Demo.TrainFile() : throw new UsageException("--train is required with --model"));
            string? evalFile = parse.GetValue(eval) ?? (demo ? Demo.EvalFile() : throw new UsageException("--eval is required with --model"));
            var methodList = parse.GetValue(methods)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
            var unknown = methodList.Where(m => MethodRegistry.Find(m) is null).ToList();
            if (unknown.Count > 0) throw new UsageException($"unknown method(s) {string.Join(", ", unknown)}; available: {string.Join(", ", MethodRegistry.Names)}");
            if (parse.GetValue(seeds) < 1) throw new UsageException("--seeds must be at least 1");
            string outputDir = parse.GetValue(output)!;

            var config = ModelConfig.Load(modelDir);
            using var shape = PretrainedModel.Create(config, PretrainedModel.HeadOf(config));
            long blockParameters = ModuleSelection.BlockLinears(shape).Sum(l => l.Layer.weight.numel());
            var arms = AccuracyBenchmark.Arms(new AccuracyBudget(blockParameters, config.HiddenSize, config.NumLayers), methodList);
            var template = new FineTuneOptions
            {
                ModelDirectory = modelDir,
                TrainFile = trainFile,
                EvalFile = evalFile,
                Training = new TrainingOptions { Epochs = parse.GetValue(epochs), OutputDirectory = outputDir, WarmupRatio = 0.06 },
            };
            var console = CliSupport.Out;
            var rows = AccuracyBenchmark.Run(template, arms, Enumerable.Range(1, parse.GetValue(seeds)).ToList(),
                method => demo ? MethodRegistry.Get(method).DemoLearningRate : MethodRegistry.Get(method).DefaultLearningRate, line => console.MarkupLine(Markup.Escape(line)));

            var table = new Table().AddColumns("method", "trainable", "weight sparsity", $"{rows[0].Metric} (mean ± std)", "untuned baseline", "seconds/run");
            foreach (var r in rows)
                table.AddRow(r.Label, $"{r.TrainableParameters:N0}", $"{r.WeightSparsity:0.000}", $"{r.Mean:0.0000} ± {r.Std:0.0000}", $"{r.BaselineMean:0.0000}", $"{r.WallSecondsMean:0}");
            console.Write(table);
            Directory.CreateDirectory(outputDir);
            string json = Path.Combine(outputDir, "accuracy.json"), plot = Path.Combine(outputDir, "accuracy.svg");
            IO.AtomicFile.WriteAllText(json, JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals }));
            AccuracyBenchmark.WritePlot(plot, rows);
            console.MarkupLine($"wrote {Markup.Escape(json)} and {Markup.Escape(plot)}");
            return 0;
        }));
        return command;
    }
}
