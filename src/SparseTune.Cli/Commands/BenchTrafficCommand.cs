using System.CommandLine;
using Spectre.Console;
using SparseTune.Benchmarks;
using SparseTune.Distributed;
using SparseTune.Models;

namespace SparseTune.Cli.Commands;

/// <summary>sparsetune bench traffic: bytes each method all-reduces per step at a LLaMA shape, and the ring all-reduce time.</summary>
public static class BenchTrafficCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "LLaMA-family shape (llama-7b, tinyllama-1.1b, llama-small); nothing is allocated.", DefaultValueFactory = _ => "llama-7b" };
        var ranks = new Option<int>("--ranks") { Description = "Processes in the ring all-reduce.", DefaultValueFactory = _ => 8 };
        var gbits = new Option<string>("--gbit") { Description = "Comma-separated link speeds in Gbit/s.", DefaultValueFactory = _ => "10,100" };
        var loraRank = new Option<int>("--lora-rank") { DefaultValueFactory = _ => 16 };
        var siftRate = new Option<double>("--sparse-rate") { DefaultValueFactory = _ => 0.01 };
        var command = new Command("traffic", "Gradient bytes all-reduced per optimizer step (full, LoRA, SIFT) at a LLaMA shape, and the time a ring all-reduce of them takes.")
        { preset, ranks, gbits, loraRank, siftRate };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            var (config, _) = BenchPresets.Get(parse.GetValue(preset)!);
            if (config is not LlamaConfig llama) throw new UsageException($"--preset {parse.GetValue(preset)} is not a LLaMA-family shape");
            if (parse.GetValue(ranks) < 2) throw new UsageException("--ranks must be at least 2");
            var speeds = parse.GetValue(gbits)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(s => double.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out double g) && g > 0 ? g : throw new UsageException($"--gbit: '{s}' is not a positive number")).ToList();
            var rows = AllReduceTraffic.Table(llama, parse.GetValue(ranks), speeds, parse.GetValue(loraRank), parse.GetValue(siftRate));
            var table = new Table().AddColumns(["method", "setting", "values", "bytes / step", "of full", .. speeds.Select(g => $"ring all-reduce at {g:G} Gbit/s")]);
            foreach (var r in rows)
                table.AddRow([r.Method, r.Setting, $"{r.Values:N0}", Bytes(r.BytesPerStep), $"{r.ShareOfFull:P2}", .. speeds.Select(g => Seconds(r.SecondsAtGbit[g]))]);
            CliSupport.Out.MarkupLine(Markup.Escape($"{parse.GetValue(preset)}: {config.NumLayers} layers, hidden {config.HiddenSize}; {parse.GetValue(ranks)} ranks, ring all-reduce 2(N−1)/N × bytes per link, bandwidth only"));
            CliSupport.Out.Write(table);
            return 0;
        }));
        return command;
    }

    static string Bytes(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):0.00} GiB" : $"{bytes / (double)(1L << 20):0.0} MiB";

    static string Seconds(double s) => s >= 1 ? $"{s:0.0} s" : $"{s * 1000:0.0} ms";
}
