using System.Diagnostics;
using SparseTune.Generation;
using SparseTune.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Benchmarks;

/// <summary>Decoding speed at one batch size, with and without the key/value cache.</summary>
/// <param name="Batch">Prompts decoded together.</param>
/// <param name="NewTokens">Tokens generated per prompt.</param>
/// <param name="CachedSeconds">Wall time of the whole generation (prompt included) with the cache.</param>
/// <param name="RecomputeSeconds">The same without the cache (every step recomputes the prefix).</param>
public sealed record GenerationMeasurement(int Batch, int PromptTokens, int NewTokens, double CachedSeconds, double RecomputeSeconds)
{
    public double CachedTokensPerSecond => Batch * NewTokens / CachedSeconds;
    public double RecomputeTokensPerSecond => Batch * NewTokens / RecomputeSeconds;
    /// <summary>How many times faster the cache generates: the target is ≥ 5 at 128 new tokens.</summary>
    public double CacheSpeedup => RecomputeSeconds / CachedSeconds;
}

/// <summary>
/// <c>sparsetune bench generate</c>: greedy decoding of random prompts on a model shape with random weights (no
/// EOS, so every row generates exactly the requested tokens), timed with the key/value cache and recomputing.
/// </summary>
public static class GenerationBenchmark
{
    public static IReadOnlyList<GenerationMeasurement> Run(ModelConfig config, IReadOnlyList<int> batchSizes, int promptTokens, int newTokens,
        Action<string>? log = null, Device? device = null, Nn.Precision precision = Nn.Precision.Fp32)
    {
        if (promptTokens + newTokens > config.MaxPositions)
            throw new ArgumentException($"{promptTokens} prompt + {newTokens} new tokens exceed the model's {config.MaxPositions} positions");
        manual_seed(0);
        using var model = PretrainedModel.Create(config, ModelHead.CausalLM);
        if (device is not null) model.to(device);
        model.Precision = precision;
        model.eval();
        var random = new Random(0);
        var options = new GenerationOptions { MaxNewTokens = newTokens, EosId = null };
        // Warm-up: libtorch's first calls allocate and pick kernels.
        SequenceGenerator.Generate(model, [RandomPrompt(random, config, promptTokens)], options with { MaxNewTokens = 4 });

        var rows = new List<GenerationMeasurement>();
        foreach (int batch in batchSizes)
        {
            var prompts = Enumerable.Range(0, batch).Select(_ => (IReadOnlyList<int>)RandomPrompt(random, config, promptTokens)).ToList();
            double Time(bool cache)
            {
                var clock = Stopwatch.StartNew();
                var outputs = SequenceGenerator.Generate(model, prompts, options with { UseCache = cache });
                if (outputs.Any(o => o.Tokens.Length != newTokens)) throw new InvalidOperationException("a row stopped early");
                return clock.Elapsed.TotalSeconds;
            }
            double cached = Time(true);
            log?.Invoke($"batch {batch}: {cached:0.00} s with the cache");
            double recomputed = Time(false);
            log?.Invoke($"batch {batch}: {recomputed:0.00} s recomputing the prefix");
            rows.Add(new GenerationMeasurement(batch, promptTokens, newTokens, cached, recomputed));
        }
        return rows;
    }

    static int[] RandomPrompt(Random random, ModelConfig config, int length) =>
        [.. Enumerable.Range(0, length).Select(_ => random.Next(config.VocabSize))];
}
