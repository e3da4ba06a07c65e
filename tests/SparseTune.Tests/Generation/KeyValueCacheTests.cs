using SparseTune.Generation;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tests.Support;
using Xunit;
using static TorchSharp.torch;

namespace SparseTune.Tests.Generation;

/// <summary>
/// Decoding with a key/value cache against the model's plain forward pass (no cache, the path the parity
/// fixtures pin), for every decoder family; Mistral's and Qwen2's sliding window against a reference that never
/// sees the tokens outside the window.
/// </summary>
public sealed class KeyValueCacheTests
{
    static readonly int[] Prompt = [100, 150, 7, 33, 64, 12];

    /// <summary>The parity fixtures (gpt2, llama with grouped-query attention) and llama-tiny re-typed as Qwen2 (q/k/v bias) and Mistral.</summary>
    public static TheoryData<string> Families => ["gpt2", "llama", "qwen2", "mistral"];

    static TransformerModel Create(string family, Func<LlamaConfig, LlamaConfig>? change = null)
    {
        if (family == "gpt2") return PretrainedModel.Load(Fixtures.Model("gpt2-tiny"));
        if (family == "llama" && change is null) return PretrainedModel.Load(Fixtures.Model("llama-tiny"));
        var config = (LlamaConfig)ModelConfig.Load(Fixtures.Model("llama-tiny")) with { ModelType = family };
        manual_seed(5);
        return PretrainedModel.Create(change is null ? config : change(config), ModelHead.CausalLM);
    }

    /// <summary>Next-token logits (V) of the last position of one plain forward over <paramref name="ids"/>.</summary>
    static float[] PlainLastLogits(TransformerModel model, IReadOnlyList<int> ids)
    {
        using var scope = NewDisposeScope();
        using var output = model.Forward(tensor(ids.Select(t => (long)t).ToArray(), [1, ids.Count]));
        return output.Logits[0, -1].data<float>().ToArray();
    }

    static float[] Row(Tensor logits, int row) => logits[row, -1].data<float>().ToArray();

    static double MaxAbsDiff(float[] a, float[] b) => a.Zip(b).Max(p => Math.Abs(p.First - p.Second));

    [Theory]
    [MemberData(nameof(Families))]
    public void CachedSteps_GiveThePlainForwardsLogits_AtEveryPosition(string family)
    {
        using var model = Create(family);
        model.eval();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var cache = model.NewCache(1, Prompt.Length + 6);
        var sequence = new List<int>(Prompt);
        using (var output = model.Forward(tensor(Prompt.Select(t => (long)t).ToArray(), [1, Prompt.Length]), null, cache))
        {
            Assert.Equal([1, 1, model.Config.VocabSize], output.Logits.shape);
            Assert.True(MaxAbsDiff(PlainLastLogits(model, sequence), Row(output.Logits, 0)) < 1e-4);
        }
        for (int step = 0; step < 6; step++)
        {
            int next = 20 + 7 * step;
            sequence.Add(next);
            using var output = model.Forward(tensor(new long[] { next }, [1, 1]), null, cache);
            double diff = MaxAbsDiff(PlainLastLogits(model, sequence), Row(output.Logits, 0));
            Assert.True(diff < 1e-4, $"{family} step {step}: max |Δlogit| {diff}");
        }
        Assert.Equal(Prompt.Length + 6, cache.Length);
        Assert.Throws<InvalidOperationException>(() => model.Forward(tensor(new long[] { 1 }, [1, 1]), null, cache));   // full
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void GreedyWithTheCache_EqualsArgmaxOfPlainForwards_AndTheNoCachePath(string family)
    {
        using var model = Create(family);
        model.eval();
        var expected = new List<int>(Prompt);
        for (int step = 0; step < 10; step++)
        {
            float[] logits = PlainLastLogits(model, expected);
            expected.Add(Array.IndexOf(logits, logits.Max()));
        }

        var options = new GenerationOptions { MaxNewTokens = 10 };
        var cached = SequenceGenerator.Greedy(model, Prompt, options);
        var recomputed = SequenceGenerator.Greedy(model, Prompt, options with { UseCache = false });

        Assert.Equal(expected.Skip(Prompt.Length), cached.Tokens);
        Assert.Equal(cached.Tokens, recomputed.Tokens);
        Assert.Equal(cached.LogProb, recomputed.LogProb, 4);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void LeftPaddedBatch_GivesEachPromptTheTokensItGetsAlone(string family)
    {
        using var model = Create(family);
        IReadOnlyList<int>[] prompts = [[5, 17, 42, 99, 3, 8, 60], [7], [3, 9, 200]];
        var options = new GenerationOptions { MaxNewTokens = 8 };

        var batch = SequenceGenerator.Generate(model, prompts, options);
        var batchNoCache = SequenceGenerator.Generate(model, prompts, options with { UseCache = false });

        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = SequenceGenerator.Greedy(model, prompts[i], options);
            Assert.Equal(alone.Tokens, batch[i].Tokens);
            Assert.Equal(alone.LogProb, batch[i].LogProb, 4);
            Assert.Equal(alone.Tokens, batchNoCache[i].Tokens);
        }
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void BeamSearch_WithTheCache_EqualsBeamSearchRecomputingThePrefix(string family)
    {
        using var model = Create(family);
        var options = new GenerationOptions { MaxNewTokens = 8, NumBeams = 4, LengthPenalty = 0.8, NoRepeatNgramSize = 3 };
        var cached = SequenceGenerator.BeamSearch(model, Prompt, options);
        var recomputed = SequenceGenerator.BeamSearch(model, Prompt, options with { UseCache = false });
        Assert.Equal(recomputed.Tokens, cached.Tokens);
        Assert.Equal(recomputed.Score, cached.Score, 4);
        Assert.Equal(SequenceGenerator.ContinuationLogProb(model, Prompt, cached.Tokens), cached.LogProb, 4);
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void Bf16Decoding_CachesInBf16_AndMatchesRecomputingThePrefix(string family)
    {
        using var model = Create(family);
        model.Precision = Nn.Precision.Bf16;
        var options = new GenerationOptions { MaxNewTokens = 8 };
        var cached = SequenceGenerator.Greedy(model, Prompt, options);
        var recomputed = SequenceGenerator.Greedy(model, Prompt, options with { UseCache = false });
        Assert.Equal(recomputed.Tokens, cached.Tokens);
        Assert.Equal(recomputed.LogProb, cached.LogProb, 1);   // bf16: each path rounds its own products

        model.eval();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var cache = model.NewCache(1, Prompt.Length);
        using var output = model.Forward(tensor(Prompt.Select(t => (long)t).ToArray(), [1, Prompt.Length]), null, cache);
        Assert.Equal(ScalarType.BFloat16, output.Logits.dtype);
        model.Precision = Nn.Precision.Fp32;
        double range = PlainLastLogits(model, Prompt).Max(Math.Abs);
        double diff = MaxAbsDiff(PlainLastLogits(model, Prompt), output.Logits[0, -1].to_type(ScalarType.Float32).data<float>().ToArray());
        Assert.True(diff / range <= 0.03, $"{family}: bf16 cached logits differ by {diff / range:P2} of the range");
    }

    /// <summary>
    /// With one layer and relative (rotary) positions, a window of W makes the output at position i exactly the
    /// output of the last position of the W tokens ending at i run alone without any window.
    /// </summary>
    [Theory]
    [InlineData("mistral", 4, 0)]
    [InlineData("qwen2", 3, 0)]
    public void SlidingWindow_SeesExactlyTheLastWTokens_WithAndWithoutTheCache(string family, int window, int maxWindowLayers)
    {
        using var windowed = Create(family, c => c with { Layers = 1, SlidingWindow = window, UseSlidingWindow = true, MaxWindowLayers = maxWindowLayers });
        using var full = Create(family, c => c with { Layers = 1, SlidingWindow = null });
        full.load_state_dict(windowed.state_dict());
        windowed.eval();
        full.eval();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        int[] ids = [.. Enumerable.Range(0, 12).Select(i => 10 + 13 * i % 200)];

        using var plain = windowed.Forward(tensor(ids.Select(t => (long)t).ToArray(), [1, ids.Length]));
        using var cache = windowed.NewCache(1, ids.Length);
        for (int i = 0; i < ids.Length; i++)
        {
            int[] visible = [.. ids.Skip(Math.Max(0, i + 1 - window)).Take(Math.Min(window, i + 1))];
            float[] reference = PlainLastLogits(full, visible);
            float[] fromMask = plain.Logits[0, i].data<float>().ToArray();
            using var step = windowed.Forward(tensor(new long[] { ids[i] }, [1, 1]), null, cache);
            Assert.True(MaxAbsDiff(reference, fromMask) < 1e-4, $"position {i}: forward {MaxAbsDiff(reference, fromMask)}");
            Assert.True(MaxAbsDiff(reference, Row(step.Logits, 0)) < 1e-4, $"position {i}: cached {MaxAbsDiff(reference, Row(step.Logits, 0))}");
        }
        // Without the window the last position sees all 12 tokens, so the outputs differ: the window did something.
        Assert.True(MaxAbsDiff(PlainLastLogits(full, ids), plain.Logits[0, -1].data<float>().ToArray()) > 1e-3);
    }

    [Fact]
    public void Qwen2Window_AppliesOnlyFromMaxWindowLayers_AndOnlyWithUseSlidingWindow()
    {
        var config = (LlamaConfig)ModelConfig.Load(Fixtures.Model("llama-tiny")) with { ModelType = "qwen2", Layers = 4, SlidingWindow = 8 };
        Assert.All(Enumerable.Range(0, 4), i => Assert.Null(config.SlidingWindowOf(i)));
        var on = config with { UseSlidingWindow = true, MaxWindowLayers = 2 };
        Assert.Equal([null, null, 8, 8], Enumerable.Range(0, 4).Select(on.SlidingWindowOf));
        Assert.Equal([8, 8, 8, 8], Enumerable.Range(0, 4).Select((config with { ModelType = "mistral" }).SlidingWindowOf));
        Assert.All(Enumerable.Range(0, 4), i => Assert.Null((config with { ModelType = "llama" }).SlidingWindowOf(i)));
    }

    [Fact]
    public void Sampling_IsReproducibleWithASeed_AndTopKOfOneIsGreedy()
    {
        using var model = Create("gpt2");
        var sample = new GenerationOptions { MaxNewTokens = 12, DoSample = true, Temperature = 1.5, Seed = 3 };
        var a = SequenceGenerator.Greedy(model, Prompt, sample);
        var b = SequenceGenerator.Greedy(model, Prompt, sample);
        var c = SequenceGenerator.Greedy(model, Prompt, sample with { Seed = 4 });
        Assert.Equal(a.Tokens, b.Tokens);
        Assert.NotEqual(a.Tokens, c.Tokens);
        Assert.Equal(SequenceGenerator.Greedy(model, Prompt, new GenerationOptions { MaxNewTokens = 12 }).Tokens,
            SequenceGenerator.Greedy(model, Prompt, sample with { TopK = 1 }).Tokens);
    }

    [Fact]
    public void Sample_DrawsFromTheTopKAndNucleus_InProportion()
    {
        double[] scores = [Math.Log(0.5), Math.Log(0.3), Math.Log(0.15), Math.Log(0.05)];
        var random = new Random(1);
        int Draws(GenerationOptions o, int token) => Enumerable.Range(0, 20000).Count(_ => SequenceGenerator.Sample(scores, o, random) == token);

        var plain = new GenerationOptions { DoSample = true };
        Assert.InRange(Draws(plain, 3), 800, 1200);                                       // 5% of 20000
        Assert.Equal(0, Draws(plain with { TopK = 2 }, 2));                               // only 0 and 1 remain
        Assert.InRange(Draws(plain with { TopK = 2 }, 1), 7000, 8000);                    // 0.3 / 0.8 = 37.5%
        Assert.Equal(0, Draws(plain with { TopP = 0.79 }, 2));                            // 0.5 + 0.3 reaches 0.79
        Assert.InRange(Draws(plain with { TopP = 0.81 }, 2), 2300, 3300);                 // 0.15 / 0.95 ≈ 15.8%
        Assert.Equal(20000, Draws(plain with { TopP = 0.2 }, 0));                         // the top token always stays
        Assert.InRange(Draws(plain with { Temperature = 0.5 }, 0), 13000, 14000);         // 0.25 / 0.3650 ≈ 68.5%
    }

    [Fact]
    public void RepetitionPenalty_DividesPositiveAndMultipliesNegativeLogitsOfSeenTokens()
    {
        using var model = Create("gpt2");
        model.eval();
        var options = new GenerationOptions { MaxNewTokens = 1, RepetitionPenalty = 3.0 };
        float[] logits = PlainLastLogits(model, Prompt);
        double[] penalised = [.. logits.Select((l, t) => Prompt.Contains(t) ? (l < 0 ? l * 3.0 : l / 3.0) : l)];
        int expected = Array.IndexOf(penalised, penalised.Max());
        Assert.Equal([expected], SequenceGenerator.Greedy(model, Prompt, options).Tokens);
        int unpenalised = Array.IndexOf(logits, logits.Max());
        // The fixture's prompt makes the penalty matter: its favourite next token is one it has already seen.
        Assert.True(expected != unpenalised || !Prompt.Contains(unpenalised));
    }
}
