using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using SparseTune.Benchmarks;
using SparseTune.Models;
using TorchSharp;

namespace SparseTune.Cli.Commands;

/// <summary>sparsetune bench profile: where a full fine-tuning step of a GPT-2 shape goes, operation by operation.</summary>
public static class BenchProfileCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "A GPT-2 shape preset (gpt2-small).", DefaultValueFactory = _ => "gpt2-small" };
        var batch = new Option<int>("--batch", "--batch-size") { DefaultValueFactory = _ => 4 };
        var seqLen = new Option<int>("--seq-len") { DefaultValueFactory = _ => 512 };
        var repeats = new Option<int>("--repeats") { Description = "Timed runs of each operation (median).", DefaultValueFactory = _ => 3 };
        var threads = new Option<int>("--threads") { Description = "libtorch threads (0: all cores).", DefaultValueFactory = _ => 0 };
        var json = new Option<string?>("--json") { Description = "Write the rows as JSON to this file." };
        var command = new Command("profile", "Per-operation profile of one full fine-tuning step of a GPT-2 shape (fp32): forward and backward time of each operation at the step's shapes, its share of the step and its GFLOP/s.")
        { preset, batch, seqLen, repeats, threads, json };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            var (config, _) = BenchPresets.Get(parse.GetValue(preset)!);
            if (config is not Gpt2Config gpt2) throw new UsageException($"--preset {parse.GetValue(preset)} is not a GPT-2 shape (bench profile times GPT-2's operations)");
            if (parse.GetValue(threads) > 0) torch.set_num_threads(parse.GetValue(threads));
            double peak = GemmPeak.MeasureGflops();
            Console.Error.WriteLine($"GEMM peak (1024³ fp32, {torch.get_num_threads()} threads): {peak:0.0} GFLOP/s; {parse.GetValue(preset)}, batch {parse.GetValue(batch)} × {parse.GetValue(seqLen)}");
            var progress = new Progress(name => Console.Error.WriteLine($"timing {name.Trim()} …"));
            var ops = StepProfile.Run(gpt2, parse.GetValue(batch), parse.GetValue(seqLen), parse.GetValue(repeats), progress);
            double total = ops.Where(o => o.Counted).Sum(o => o.StepSeconds);
            var table = new Table().AddColumns("operation", "per step", "forward ms", "backward ms", "s per step", "share", "GFLOP/s (of peak)");
            foreach (var o in ops)
                table.AddRow(Markup.Escape(o.Name), o.Counted ? $"{o.PerStep}" : $"({o.PerStep})", $"{o.ForwardSeconds * 1000:0.0}", $"{o.BackwardSeconds * 1000:0.0}",
                    o.Counted ? $"{o.StepSeconds:0.000}" : $"({o.StepSeconds:0.000})", o.Counted ? $"{o.StepSeconds / total:P1}" : "",
                    o.Flops > 0 ? $"{o.Gflops:0.0} ({o.Gflops / peak:P0})" : "");
            table.AddRow("sum", "", "", "", $"{total:0.000}", "100%", "");
            CliSupport.Out.Write(table);
            if (parse.GetValue(json) is { } path)
                File.WriteAllText(path, JsonSerializer.Serialize(new { gemm_peak_gflops = peak, preset = parse.GetValue(preset), batch = parse.GetValue(batch), seq_len = parse.GetValue(seqLen), sum_seconds = total,
                    ops = ops.Select(o => new { name = o.Name.Trim(), per_step = o.PerStep, forward_seconds = o.ForwardSeconds, backward_seconds = o.BackwardSeconds, step_seconds = o.StepSeconds, counted = o.Counted, gflops = o.Gflops }) },
                    new JsonSerializerOptions { WriteIndented = true }));
            return 0;
        }));
        return command;
    }

    sealed class Progress(Action<string> report) : IProgress<string>
    {
        public void Report(string value) => report(value);
    }
}
