using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using SparseTune.Benchmarks;
using SparseTune.Models;
using SparseTune.Tuners;
using Spectre.Console;
using static TorchSharp.torch;

namespace SparseTune.Cli.Commands;

/// <summary>
/// sparsetune bench: GEMM peak, then each method's training step in its own child process (so peak memory is
/// that method's), reported as absolute figures and as ratios to full fine-tuning from the same run.
/// </summary>
public static class BenchCommand
{
    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static Command Create()
    {
        var preset = new Option<string?>("--preset") { Description = $"Model shape with random weights: {string.Join(", ", BenchPresets.All.Keys)}." };
        var model = new Option<string?>("--model") { Description = "A Hugging Face model folder whose shape (config.json) to use instead of a preset." };
        var methods = new Option<string>("--methods") { Description = "Comma-separated methods to measure.", DefaultValueFactory = _ => string.Join(",", MethodRegistry.Names) };
        var batch = new Option<int>("--batch") { Description = "Sequences per step.", DefaultValueFactory = _ => 4 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence.", DefaultValueFactory = _ => 512 };
        var steps = new Option<int>("--steps") { Description = "Timed steps per method (median reported).", DefaultValueFactory = _ => 5 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed steps first.", DefaultValueFactory = _ => 2 };
        var json = new Option<string?>("--json") { Description = "Write the results as JSON to this file." };
        var threads = new Option<int>("--threads") { Description = "libtorch threads (0: libtorch's default, all cores).", DefaultValueFactory = _ => 0 };
        var single = new Option<string?>("--single-method") { Hidden = true };
        var gemm = new Option<double>("--gemm-gflops") { Hidden = true };
        var command = new Command("bench", "Measure step time, MFU, memory and inference latency of every method side by side.")
        { preset, model, methods, batch, seqLen, steps, warmup, json, threads, single, gemm };
        command.Subcommands.Add(BenchAccuracyCommand.Create());
        command.Subcommands.Add(BenchGenerateCommand.Create());

        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            if (parse.GetValue(threads) is > 0 and var t) set_num_threads(t);
            string? presetName = parse.GetValue(preset), modelDir = parse.GetValue(model);
            if (presetName is null == modelDir is null) throw new UsageException("give exactly one of --preset or --model");
            var (config, head) = modelDir is not null
                ? LoadShape(CliSupport.ExistingDirectory(modelDir, "--model"))
                : BenchPresets.Get(presetName!);
            int b = parse.GetValue(batch), s = parse.GetValue(seqLen), n = parse.GetValue(steps), w = parse.GetValue(warmup);
            var problems = new List<string>();
            if (b <= 0) problems.Add("--batch must be positive");
            if (s <= 1 || s > config.MaxPositions) problems.Add($"--seq-len must be in 2..{config.MaxPositions} for this model");
            if (n <= 0) problems.Add("--steps must be positive");
            if (w < 1) problems.Add("--warmup must be at least 1");
            var methodList = parse.GetValue(methods)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
            problems.AddRange(methodList.Where(m => MethodRegistry.Find(m) is null).Select(m => $"unknown method '{m}' (available: {string.Join(", ", MethodRegistry.Names)})"));
            if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));

            if (parse.GetValue(single) is { } one)
            {
                // Child process: measure one method and print its JSON row.
                var row = MethodBenchmark.Run(config, head, one, null, b, s, w, n, parse.GetValue(gemm));
                Console.WriteLine(JsonSerializer.Serialize(row, Json));
                return 0;
            }

            var console = CliSupport.Out;
            int threadCount = get_num_threads();
            double fp32 = GemmPeak.MeasureGflops(ScalarType.Float32);
            double bf16 = GemmPeak.MeasureGflops(ScalarType.BFloat16, n: 512, repeats: 3);
            console.MarkupLine($"GEMM peak (1024³ fp32, {threadCount} threads): [bold]{fp32:0.0} GFLOP/s[/]; bf16: {bf16:0.0} GFLOP/s{(GemmPeak.Bf16LooksNative(fp32, bf16) ? "" : " (emulated)")}");
            string shape = modelDir ?? presetName!;
            console.MarkupLine($"model {Markup.Escape(shape)} ({config.ModelType}, {config.NumLayers} layers, hidden {config.HiddenSize}); batch {b} × {s} tokens; {w} warm-up + {n} timed steps");

            var rows = new List<MethodMeasurement>();
            foreach (string method in methodList)
            {
                console.MarkupLine($"measuring [bold]{method}[/] …");
                var args = new List<string> { "bench", "--single-method", method, "--gemm-gflops", fp32.ToString("R"), "--batch", b.ToString(), "--seq-len", s.ToString(), "--steps", n.ToString(), "--warmup", w.ToString(), "--threads", threadCount.ToString() };
                args.AddRange(modelDir is not null ? ["--model", modelDir] : ["--preset", presetName!]);
                rows.Add(RunChild(args));
            }
            var full = rows.FirstOrDefault(r => r.Method == "full");
            PrintTable(console, rows, full);
            if (parse.GetValue(json) is { } jsonPath)
            {
                var document = new
                {
                    gemm_gflops = fp32,
                    bf16_gemm_gflops = bf16,
                    threads = threadCount,
                    model = shape,
                    batch = b,
                    seq_len = s,
                    steps = n,
                    warmup = w,
                    machine = $"{Environment.ProcessorCount} logical cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}",
                    methods = rows.Select(r => new
                    {
                        r.Method, r.StepSeconds, r.StageStepSeconds, r.TokensPerSecond, r.Mfu, r.ParamBytes, r.GradOptimizerBytes, r.PeakMemoryBytes, r.InferenceSeconds, r.TrainableParameters, r.FlopsPerStep, r.MethodReport,
                        ratios_to_full = full is null ? null : new
                        {
                            step_seconds = r.StepSeconds / full.StepSeconds,
                            grad_optimizer_bytes = (double)r.GradOptimizerBytes / full.GradOptimizerBytes,
                            peak_memory_bytes = (double)r.PeakMemoryBytes / full.PeakMemoryBytes,
                            inference_seconds = r.InferenceSeconds / full.InferenceSeconds,
                        },
                    }),
                };
                IO.AtomicFile.WriteAllText(jsonPath, JsonSerializer.Serialize(document, Json));
                console.MarkupLine($"wrote {Markup.Escape(jsonPath)}");
            }
            return 0;
        }));
        return command;
    }

    static (ModelConfig, ModelHead) LoadShape(string dir)
    {
        var config = ModelConfig.Load(dir);
        return (config, PretrainedModel.HeadOf(config));
    }

    static MethodMeasurement RunChild(List<string> args)
    {
        var start = new ProcessStartInfo { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        string self = Environment.ProcessPath!;
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") { start.FileName = self; start.ArgumentList.Add(typeof(BenchCommand).Assembly.Location); }
        else start.FileName = self;
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new InvalidOperationException("could not start the benchmark child process");
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new InvalidOperationException($"benchmark of {args[2]} failed: {stderr.Result.Trim()}");
        return JsonSerializer.Deserialize<MethodMeasurement>(stdout, Json) ?? throw new InvalidDataException("benchmark child printed no result");
    }

    static void PrintTable(IAnsiConsole console, List<MethodMeasurement> rows, MethodMeasurement? full)
    {
        string Ratio(double value, double? reference) => reference is > 0 ? $" ({value / reference:0.00}×)" : "";
        var table = new Table().AddColumns("method", "step s", "tokens/s", "MFU", "trainable", "params", "grad+optim", "peak RSS", "inference s");
        foreach (var r in rows)
            table.AddRow(r.Method,
                r.StageStepSeconds.Length > 1
                    ? string.Join(" → ", r.StageStepSeconds.Select(t => $"{t:0.000}{Ratio(t, full?.StepSeconds)}"))
                    : $"{r.StepSeconds:0.000}{Ratio(r.StepSeconds, full?.StepSeconds)}",
                $"{r.TokensPerSecond:0}",
                $"{100 * r.Mfu:0.0}%",
                CliSupport.HumanCount(r.TrainableParameters),
                CliSupport.HumanBytes(r.ParamBytes),
                $"{CliSupport.HumanBytes(r.GradOptimizerBytes)}{(full is null ? "" : $" ({100.0 * r.GradOptimizerBytes / full.GradOptimizerBytes:0.00}%)")}",
                $"{CliSupport.HumanBytes(r.PeakMemoryBytes)}{Ratio(r.PeakMemoryBytes, full?.PeakMemoryBytes)}",
                $"{r.InferenceSeconds:0.0000}{Ratio(r.InferenceSeconds, full?.InferenceSeconds)}");
        console.Write(table);
    }
}
