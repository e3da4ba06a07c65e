using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using SparseTune.Benchmarks;
using SparseTune.Distributed;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tuners;
using Spectre.Console;
using static TorchSharp.torch;

namespace SparseTune.Cli.Commands;

/// <summary>
/// sparsetune bench: GEMM peak, then each method's training step in its own child process (so peak memory is
/// that method's), reported as absolute figures and as ratios to full fine-tuning from the same run. With --distributed,
/// under mpirun, what data parallelism costs each method instead (<see cref="DistributedBenchmark"/>).
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
        var batch = new Option<int>("--batch", "--batch-size") { Description = "Sequences per step (per rank under --distributed).", DefaultValueFactory = _ => 4 };
        var seqLen = new Option<int>("--seq-len") { Description = "Tokens per sequence.", DefaultValueFactory = _ => 512 };
        var steps = new Option<int>("--steps") { Description = "Timed steps per method (median reported).", DefaultValueFactory = _ => 5 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed steps first.", DefaultValueFactory = _ => 2 };
        var json = new Option<string?>("--json") { Description = "Write the results as JSON to this file." };
        var threads = new Option<int>("--threads") { Description = "libtorch threads (0: libtorch's default, all cores; under --distributed, the cores shared among this machine's ranks).", DefaultValueFactory = _ => 0 };
        var precision = new Option<string>("--precision") { Description = "fp32, bf16, auto, or a list (fp32,bf16) to measure each method in each.", DefaultValueFactory = _ => "fp32" };
        var device = CliSupport.DeviceOption();
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "Recompute each block in backward (less activation memory, about a third more compute)." };
        var distributed = new Option<bool>("--distributed") { Description = "Under mpirun -np N (N ≥ 2): bytes all-reduced and seconds in all-reduce per step, and the step time with N ranks against one process on the same per-rank batch." };
        var single = new Option<string?>("--single-method") { Hidden = true };
        var gemm = new Option<double>("--gemm-gflops") { Hidden = true };
        var command = new Command("bench", "Measure step time, MFU, memory and inference latency of every method side by side.")
        { preset, model, methods, batch, seqLen, steps, warmup, json, threads, precision, checkpointing, device, distributed, single, gemm };
        command.Subcommands.Add(BenchAccuracyCommand.Create());
        command.Subcommands.Add(BenchGenerateCommand.Create());
        command.Subcommands.Add(BenchTrafficCommand.Create());
        command.Subcommands.Add(BenchProfileCommand.Create());

        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            bool dataParallel = parse.GetValue(distributed);
            // One line, before anything is built: without a launcher there is nothing to measure.
            if (dataParallel && !DistributedModes.LaunchedByMpi())
                throw new UsageException("bench --distributed needs mpirun: mpirun -np 2 sparsetune bench --distributed --preset tiny");
            if (parse.GetValue(threads) is > 0 and var t) set_num_threads(t);
            else if (dataParallel) set_num_threads(Math.Max(1, Environment.ProcessorCount / RanksOnThisMachine()));
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
            var precisions = parse.GetValue(precision)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(CliSupport.ParsePrecision).Distinct().ToList();
            if (precisions.Count == 0) problems.Add("--precision: give fp32, bf16, auto or a list");
            if (dataParallel && precisions.Count > 1) problems.Add("--precision: give one precision with --distributed");
            if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));
            bool recompute = parse.GetValue(checkpointing);
            if (dataParallel)
                return RunDistributed(config, head, modelDir ?? presetName!, methodList, b, s, w, n, precisions[0], recompute, parse.GetValue(json));

            if (parse.GetValue(single) is { } one)
            {
                // Child process: measure one method and print its JSON row.
                var row = MethodBenchmark.Run(config, head, one, null, b, s, w, n, parse.GetValue(gemm), precisions[0], recompute,
                    ComputeDevice.Resolve(parse.GetValue(device)!));
                Console.WriteLine(JsonSerializer.Serialize(row, Json));
                return 0;
            }

            var console = CliSupport.Out;
            int threadCount = get_num_threads();
            double fp32 = GemmPeak.MeasureGflops(ScalarType.Float32);
            double bf16 = GemmPeak.MeasureGflops(ScalarType.BFloat16, repeats: 5);
            console.MarkupLine($"GEMM peak (1024³, {threadCount} threads), the MFU denominator of each precision: fp32 [bold]{fp32:0.0} GFLOP/s[/], bf16 [bold]{bf16:0.0} GFLOP/s[/]{(GemmPeak.Bf16LooksNative(fp32, bf16) ? "" : " (emulated)")}");
            string shape = modelDir ?? presetName!;
            console.MarkupLine($"model {Markup.Escape(shape)} ({config.ModelType}, {config.NumLayers} layers, hidden {config.HiddenSize}); batch {b} × {s} tokens; {w} warm-up + {n} timed steps");

            var rows = new List<MethodMeasurement>();
            long available = AvailableMemoryBytes();
            foreach (Precision p in precisions)
            foreach (string method in methodList)
            {
                long needed = MethodMeasurement.MinimumBytes(config, method);
                if (available > 0 && needed > available * 9 / 10)
                {
                    string note = $"does not fit: the weights, gradients and AdamW moments alone need {CliSupport.HumanBytes(needed)}, {CliSupport.HumanBytes(available)} is available";
                    console.MarkupLine($"[yellow]{method} ({p.ToString().ToLowerInvariant()}): {Markup.Escape(note)}[/]");
                    rows.Add(new MethodMeasurement { Method = method, Precision = p, Note = note, StepSeconds = double.NaN, InferenceSeconds = double.NaN });
                    continue;
                }
                console.MarkupLine($"measuring [bold]{method}[/] ({p.ToString().ToLowerInvariant()}) …");
                double peak = p == Precision.Bf16 ? bf16 : fp32;
                var args = new List<string> { "bench", "--single-method", method, "--gemm-gflops", peak.ToString("R"), "--batch", b.ToString(), "--seq-len", s.ToString(), "--steps", n.ToString(), "--warmup", w.ToString(), "--threads", threadCount.ToString(), "--precision", p.ToString().ToLowerInvariant() };
                if (recompute) args.Add("--gradient-checkpointing");
                args.AddRange(["--device", parse.GetValue(device)!]);
                args.AddRange(modelDir is not null ? ["--model", modelDir] : ["--preset", presetName!]);
                try
                {
                    rows.Add(RunChild(args));
                }
                catch (Exception e) when (e is InvalidOperationException or InvalidDataException or JsonException)
                {
                    console.MarkupLine($"[red]{Markup.Escape(e.Message)}[/]");
                    rows.Add(new MethodMeasurement { Method = method, Precision = p, Note = e.Message, StepSeconds = double.NaN, InferenceSeconds = double.NaN });
                }
            }
            MethodMeasurement? Full(Precision p) => rows.FirstOrDefault(r => r.Method == "full" && r.Precision == p && r.Note is null);
            MethodMeasurement? Fp32Of(MethodMeasurement r) => r.Precision == Precision.Fp32 ? null : rows.FirstOrDefault(o => o.Method == r.Method && o.Precision == Precision.Fp32 && o.Note is null);
            PrintTable(console, rows, Full, Fp32Of);
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
                    gradient_checkpointing = recompute,
                    methods = rows.Select(r => new
                    {
                        r.Method, precision = r.Precision.ToString().ToLowerInvariant(), r.Note,
                        r.StepSeconds, r.StageStepSeconds, r.TokensPerSecond, r.Mfu, r.ParamBytes, r.GradOptimizerBytes, r.PeakMemoryBytes,
                        r.InferenceSeconds, r.InferenceSpread, r.TrainableParameters, r.FlopsPerStep, r.MethodReport,
                        ratios_to_full = Full(r.Precision) is not { } full || r.Note is not null ? null : new
                        {
                            step_seconds = r.StepSeconds / full.StepSeconds,
                            grad_optimizer_bytes = (double)r.GradOptimizerBytes / full.GradOptimizerBytes,
                            peak_memory_bytes = (double)r.PeakMemoryBytes / full.PeakMemoryBytes,
                            inference_seconds = r.InferenceSeconds / full.InferenceSeconds,
                        },
                        ratios_to_fp32 = Fp32Of(r) is not { } fp || r.Note is not null ? null : new
                        {
                            step_seconds = r.StepSeconds / fp.StepSeconds,
                            inference_seconds = r.InferenceSeconds / fp.InferenceSeconds,
                            peak_memory_bytes = (double)r.PeakMemoryBytes / fp.PeakMemoryBytes,
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

    /// <summary>
    /// bench --distributed: every rank measures every method in this process, one after another (see
    /// <see cref="DistributedBenchmark"/>); rank 0 alone prints and writes the JSON.
    /// </summary>
    static int RunDistributed(ModelConfig config, ModelHead head, string shape, List<string> methodList, int batch, int sequenceLength,
        int warmupSteps, int steps, Precision precision, bool recompute, string? jsonPath)
    {
        IProcessGroup group = DistributedModes.Open(DistributedMode.Mpi);
        if (group.Size < 2) throw new UsageException($"bench --distributed needs at least 2 ranks, mpirun started {group.Size}: mpirun -np 2 …");
        IAnsiConsole? console = group.IsMain ? CliSupport.Out : null;
        int threadCount = get_num_threads();
        console?.MarkupLine($"model {Markup.Escape(shape)} ({config.ModelType}, {config.NumLayers} layers, hidden {config.HiddenSize}); {group.Size} ranks × {batch} sequences × {sequenceLength} tokens, {threadCount} libtorch thread{(threadCount == 1 ? "" : "s")} per rank; {warmupSteps} warm-up + {steps} timed steps; then rank 0 alone on {batch} sequences");
        var rows = new List<DistributedMeasurement>();
        foreach (string method in methodList)
        {
            console?.MarkupLine($"measuring [bold]{method}[/] …");
            rows.Add(DistributedBenchmark.Run(group, config, head, method, batch, sequenceLength, warmupSteps, steps, precision, recompute));
        }
        if (console is null) return 0;

        var table = new Table().AddColumns("method", "trainable", "all-reduced / step (× full)", "scalars / step", "all-reduce s / step",
            $"step s, {group.Size} ranks", "step s, 1 process", "ratio");
        foreach (var r in rows)
            table.AddRow(r.Method, CliSupport.HumanCount(r.TrainableParameters),
                $"{CliSupport.HumanBytes((long)r.GradientBytesPerStep)} ({100 * r.GradientBytesRelativeToFull:0.00}%)",
                $"{r.ScalarBytesPerStep:0} B",
                $"{r.AllReduceSecondsPerStep:0.0000}",
                $"{r.StepSeconds:0.000}",
                $"{r.SingleProcessStepSeconds:0.000}",
                $"{r.StepRatio:0.00}×");
        console.Write(table);
        if (jsonPath is not null)
        {
            var document = new
            {
                model = shape,
                ranks = group.Size,
                threads_per_rank = threadCount,
                batch_per_rank = batch,
                seq_len = sequenceLength,
                steps,
                warmup = warmupSteps,
                precision = precision.ToString().ToLowerInvariant(),
                gradient_checkpointing = recompute,
                machine = $"{Environment.ProcessorCount} logical cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}",
                methods = rows.Select(r => new
                {
                    r.Method, r.TrainableParameters, r.ModelParameters, r.GradientBytesPerStep, r.ScalarBytesPerStep, r.AllReduceSecondsPerStep,
                    r.StepSeconds, r.SingleProcessStepSeconds, r.StepRatio, r.GradientBytesRelativeToFull,
                }),
            };
            IO.AtomicFile.WriteAllText(jsonPath, JsonSerializer.Serialize(document, Json));
            console.MarkupLine($"wrote {Markup.Escape(jsonPath)}");
        }
        return 0;
    }

    /// <summary>Ranks Open MPI started on this machine (OMPI_COMM_WORLD_LOCAL_SIZE), 1 when it does not say.</summary>
    static int RanksOnThisMachine() =>
        int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_SIZE"), out int ranks) && ranks > 0 ? ranks : 1;

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

    /// <summary>MemAvailable of /proc/meminfo; 0 where it cannot be read (then nothing is refused up front).</summary>
    static long AvailableMemoryBytes()
    {
        try
        {
            string? line = File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemAvailable:", StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { return 0; }
        catch (UnauthorizedAccessException) { return 0; }
    }

    static void PrintTable(IAnsiConsole console, List<MethodMeasurement> rows, Func<Precision, MethodMeasurement?> fullOf, Func<MethodMeasurement, MethodMeasurement?> fp32Of)
    {
        string Ratio(double value, double? reference) => reference is > 0 ? $" ({value / reference:0.00}×)" : "";
        var table = new Table().AddColumns("method", "precision", "step s (× full)", "× fp32", "tokens/s", "MFU", "trainable", "params", "grad+optim", "peak RSS", "inference s (spread)");
        foreach (var r in rows)
        {
            string precision = r.Precision.ToString().ToLowerInvariant();
            if (r.Note is not null)
            {
                table.AddRow(r.Method, precision, Markup.Escape(r.Note), "", "", "", "", "", "", "", "");
                continue;
            }
            var full = fullOf(r.Precision);
            var fp32 = fp32Of(r);
            table.AddRow(r.Method, precision,
                r.StageStepSeconds.Length > 1
                    ? string.Join(" → ", r.StageStepSeconds.Select(t => $"{t:0.000}{Ratio(t, full?.StepSeconds)}"))
                    : $"{r.StepSeconds:0.000}{Ratio(r.StepSeconds, full?.StepSeconds)}",
                fp32 is null ? "" : $"{r.StepSeconds / fp32.StepSeconds:0.00}× (inference {r.InferenceSeconds / fp32.InferenceSeconds:0.00}×)",
                $"{r.TokensPerSecond:0}",
                $"{100 * r.Mfu:0.0}%",
                CliSupport.HumanCount(r.TrainableParameters),
                CliSupport.HumanBytes(r.ParamBytes),
                $"{CliSupport.HumanBytes(r.GradOptimizerBytes)}{(full is null ? "" : $" ({100.0 * r.GradOptimizerBytes / full.GradOptimizerBytes:0.00}%)")}",
                $"{CliSupport.HumanBytes(r.PeakMemoryBytes)}{Ratio(r.PeakMemoryBytes, full?.PeakMemoryBytes)}",
                $"{r.InferenceSeconds:0.0000}{Ratio(r.InferenceSeconds, full?.InferenceSeconds)} ±{100 * r.InferenceSpread / 2:0}%");
        }
        console.Write(table);
    }
}
