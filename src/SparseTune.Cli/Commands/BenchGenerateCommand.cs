using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using SparseTune.Benchmarks;
using SparseTune.Models;
using static TorchSharp.torch;

namespace SparseTune.Cli.Commands;

/// <summary>sparsetune bench generate: decoding tokens/s with and without the key/value cache.</summary>
public static class BenchGenerateCommand
{
    public static Command Create()
    {
        var preset = new Option<string>("--preset") { Description = "Causal-LM shape with random weights (gpt2-small, llama-small).", DefaultValueFactory = _ => "gpt2-small" };
        var batches = new Option<string>("--batches") { Description = "Comma-separated batch sizes.", DefaultValueFactory = _ => "1,8" };
        var prompt = new Option<int>("--prompt-tokens") { Description = "Tokens per prompt.", DefaultValueFactory = _ => 32 };
        var newTokens = new Option<int>("--new-tokens") { Description = "Tokens generated per prompt.", DefaultValueFactory = _ => 128 };
        var json = new Option<string?>("--json") { Description = "Write the results as JSON to this file." };
        var device = CliSupport.DeviceOption();
        var precision = CliSupport.PrecisionOption();
        var command = new Command("generate", "Greedy decoding speed (tokens/s) with the key/value cache and recomputing the prefix.")
        { preset, batches, prompt, newTokens, json, device, precision };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            var (config, head) = BenchPresets.Get(parse.GetValue(preset)!);
            if (head != ModelHead.CausalLM) throw new UsageException($"--preset {parse.GetValue(preset)} is not a causal LM");
            var sizes = new List<int>();
            foreach (string part in parse.GetValue(batches)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                sizes.Add(int.TryParse(part, out int b) && b > 0 ? b : throw new UsageException($"--batches: '{part}' is not a positive whole number"));
            if (sizes.Count == 0) throw new UsageException("--batches: give at least one batch size");
            if (parse.GetValue(prompt) < 1 || parse.GetValue(newTokens) < 1) throw new UsageException("--prompt-tokens and --new-tokens must be positive");

            var console = CliSupport.Out;
            console.MarkupLine($"{Markup.Escape(parse.GetValue(preset)!)}: {config.NumLayers} layers, hidden {config.HiddenSize}; {parse.GetValue(prompt)} prompt + {parse.GetValue(newTokens)} new tokens, greedy; {get_num_threads()} threads");
            var rows = GenerationBenchmark.Run(config, sizes, parse.GetValue(prompt), parse.GetValue(newTokens), line => console.MarkupLine(Markup.Escape(line)),
                Nn.ComputeDevice.Resolve(parse.GetValue(device)!, line => console.MarkupLine(Markup.Escape(line))), CliSupport.ParsePrecision(parse.GetValue(precision)));
            var table = new Table().AddColumns("batch", "cache tokens/s", "recompute tokens/s", "cache speedup");
            foreach (var r in rows)
                table.AddRow($"{r.Batch}", $"{r.CachedTokensPerSecond:0.0}", $"{r.RecomputeTokensPerSecond:0.0}", $"{r.CacheSpeedup:0.0}×");
            console.Write(table);
            if (parse.GetValue(json) is { } file)
            {
                IO.AtomicFile.WriteAllText(file, JsonSerializer.Serialize(new
                {
                    preset = parse.GetValue(preset),
                    threads = get_num_threads(),
                    results = rows.Select(r => new
                    {
                        batch = r.Batch, prompt_tokens = r.PromptTokens, new_tokens = r.NewTokens,
                        cached_seconds = r.CachedSeconds, recompute_seconds = r.RecomputeSeconds,
                        cached_tokens_per_second = r.CachedTokensPerSecond, recompute_tokens_per_second = r.RecomputeTokensPerSecond,
                        cache_speedup = r.CacheSpeedup,
                    }),
                }, new JsonSerializerOptions { WriteIndented = true }));
                console.MarkupLine($"wrote {Markup.Escape(file)}");
            }
            return 0;
        }));
        return command;
    }
}
