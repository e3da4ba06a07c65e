using SparseTune.Generation;
using SparseTune.Models;
using SparseTune.Tests.Support;
using Xunit;
using static TorchSharp.torch;

namespace SparseTune.Tests.Generation;

/// <summary>gpt2-tiny (vocab 211, 32 positions), loaded once for the generation tests.</summary>
public sealed class Gpt2TinyModel : IDisposable
{
    public TransformerModel Model { get; } = PretrainedModel.Load(Fixtures.Model("gpt2-tiny"));

    public void Dispose() => Model.Dispose();
}

/// <summary>
/// Decoding on gpt2-tiny's token ids (the fixture has no tokenizer). Its weights are random, so the outputs are
/// arbitrary, but each test pins them against an independent computation on the same model.
/// </summary>
public sealed class SequenceGeneratorTests(Gpt2TinyModel fixture) : IClassFixture<Gpt2TinyModel>
{
    static readonly int[] Prompt = [100, 150, 7, 33, 64]; // greedy continues 135, 23, 85, 85, 88 …: varied enough to pick an EOS from
    TransformerModel Model => fixture.Model;

    /// <summary>Last-position log-probabilities of one forward over <paramref name="sequence"/>, float64.</summary>
    double[] NextLogProbs(IReadOnlyList<int> sequence)
    {
        Model.eval();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var output = Model.Forward(tensor(sequence.Select(t => (long)t).ToArray(), [1, sequence.Count]));
        return output.Logits[0, -1].to_type(ScalarType.Float64).log_softmax(-1).data<double>().ToArray();
    }

    static int ArgMax(double[] values) => Array.IndexOf(values, values.Max());

    /// <summary>An index j whose token does not occur before it, so making it the EOS stops generation exactly there.</summary>
    static int FirstNewTokenAt(int[] tokens, int from) =>
        Enumerable.Range(from, tokens.Length - from).First(j => !tokens.Take(j).Contains(tokens[j]));

    [Fact]
    public void Greedy_EqualsArgmaxOfTheNextTokenDistributionStepByStep()
    {
        var sequence = new List<int>(Prompt);
        double logProb = 0;
        for (int step = 0; step < 5; step++)
        {
            double[] next = NextLogProbs(sequence);
            int best = ArgMax(next);
            logProb += next[best];
            sequence.Add(best);
        }

        var greedy = SequenceGenerator.Greedy(Model, Prompt, new GenerationOptions { MaxNewTokens = 5 });

        Assert.Equal(sequence.Skip(Prompt.Length), greedy.Tokens);
        Assert.Equal(logProb, greedy.LogProb, 5); // the cached steps sum in another order than one full forward
        Assert.False(greedy.EndedWithEos);
        Assert.Equal(greedy.LogProb, SequenceGenerator.ContinuationLogProb(Model, Prompt, greedy.Tokens), 4);
    }

    [Fact]
    public void Greedy_StopsAtEos_WhichCountsInTheLogProbButNotInTheTokens()
    {
        var free = SequenceGenerator.Greedy(Model, Prompt, new GenerationOptions { MaxNewTokens = 6 });
        int j = FirstNewTokenAt(free.Tokens, 2);
        int eos = free.Tokens[j];

        var stopped = SequenceGenerator.Greedy(Model, Prompt, new GenerationOptions { MaxNewTokens = 6, EosId = eos, LengthPenalty = 0.8 });

        Assert.True(stopped.EndedWithEos);
        Assert.Equal(free.Tokens.Take(j), stopped.Tokens);
        double expected = SequenceGenerator.ContinuationLogProb(Model, Prompt, [.. stopped.Tokens, eos]);
        Assert.Equal(expected, stopped.LogProb, 4);
        Assert.Equal(stopped.LogProb / Math.Pow(j + 1, 0.8), stopped.Score, 9); // length counts the EOS
    }

    [Fact]
    public void BeamSearch_WithOneBeam_EqualsGreedy()
    {
        var free = SequenceGenerator.Greedy(Model, Prompt, new GenerationOptions { MaxNewTokens = 6 });
        int eos = free.Tokens[FirstNewTokenAt(free.Tokens, 3)];
        foreach (int? eosId in new int?[] { null, eos })
        {
            var options = new GenerationOptions { MaxNewTokens = 6, NumBeams = 1, EosId = eosId };
            var greedy = SequenceGenerator.Greedy(Model, Prompt, options);
            var beam = SequenceGenerator.BeamSearch(Model, Prompt, options);
            Assert.Equal(greedy.Tokens, beam.Tokens);
            Assert.Equal(greedy.EndedWithEos, beam.EndedWithEos);
            Assert.Equal(greedy.LogProb, beam.LogProb, 9);
        }
    }

    [Fact]
    public void BeamSearch_FindsAtLeastGreedysLogProb_AndReportsTheTrueLogProbOfItsOutput()
    {
        var options = new GenerationOptions { MaxNewTokens = 6, LengthPenalty = 0 };
        var greedy = SequenceGenerator.Greedy(Model, Prompt, options);
        var beam = SequenceGenerator.BeamSearch(Model, Prompt, options with { NumBeams = 4 });

        Assert.Equal(6, beam.Tokens.Length);
        Assert.True(beam.LogProb >= greedy.LogProb - 1e-9, $"beam {beam.LogProb} < greedy {greedy.LogProb}");
        Assert.Equal(beam.LogProb, SequenceGenerator.ContinuationLogProb(Model, Prompt, beam.Tokens), 4);
        Assert.Equal(beam.LogProb, beam.Score, 12); // α = 0: the score is the log-probability
    }

    [Fact]
    public void BeamSearch_WithAsManyBeamsAsTokens_IsExhaustiveOverTwoSteps()
    {
        double[] first = NextLogProbs(Prompt);
        double best = double.NegativeInfinity;
        int[] bestPair = [];
        for (int t1 = 0; t1 < first.Length; t1++)
        {
            double[] second = NextLogProbs([.. Prompt, t1]);
            int t2 = ArgMax(second);
            if (first[t1] + second[t2] > best) (best, bestPair) = (first[t1] + second[t2], [t1, t2]);
        }

        var beam = SequenceGenerator.BeamSearch(Model, Prompt, new GenerationOptions { MaxNewTokens = 2, NumBeams = first.Length, LengthPenalty = 0 });

        Assert.Equal(bestPair, beam.Tokens);
        Assert.Equal(best, beam.LogProb, 4);
    }

    [Fact]
    public void BeamSearch_NeverReturnsTheEos_AndAFinishedHypothesisCountsIt()
    {
        var free = SequenceGenerator.BeamSearch(Model, Prompt, new GenerationOptions { MaxNewTokens = 6, NumBeams = 3 });
        int eos = free.Tokens[FirstNewTokenAt(free.Tokens, 2)];

        var result = SequenceGenerator.BeamSearch(Model, Prompt, new GenerationOptions { MaxNewTokens = 6, NumBeams = 3, EosId = eos, LengthPenalty = 0.8 });

        Assert.DoesNotContain(eos, result.Tokens);
        int[] scored = result.EndedWithEos ? [.. result.Tokens, eos] : result.Tokens;
        Assert.Equal(SequenceGenerator.ContinuationLogProb(Model, Prompt, scored), result.LogProb, 4);
        Assert.Equal(result.LogProb / Math.Pow(scored.Length, 0.8), result.Score, 9);
    }

    [Fact]
    public void NoRepeatNgram_LeavesNoRepeatedBigramInPromptAndOutput()
    {
        int[] prompt = [5, 17, 5, 17];
        var output = SequenceGenerator.Greedy(Model, [5, 17, 42, 99], new GenerationOptions { MaxNewTokens = 20, NoRepeatNgramSize = 2 });
        var beamOutput = SequenceGenerator.BeamSearch(Model, prompt, new GenerationOptions { MaxNewTokens = 12, NumBeams = 3, NoRepeatNgramSize = 2 });

        foreach (int[] sequence in new int[][] { [5, 17, 42, 99, .. output.Tokens], [.. prompt.Skip(2), .. beamOutput.Tokens] })
        {
            var bigrams = sequence.Zip(sequence.Skip(1)).ToList();
            Assert.Equal(bigrams.Count, bigrams.Distinct().Count());
        }
        Assert.Equal(20, output.Tokens.Length);
    }

    [Fact]
    public void BannedTokens_AreThoseThatWouldCompleteAnEarlierNgram()
    {
        int[] sequence = [1, 2, 3, 1, 2];
        Assert.Equal([3], SequenceGenerator.BannedTokens(sequence, 3));   // "1 2" was followed by 3
        Assert.Equal([3], SequenceGenerator.BannedTokens(sequence, 2));   // "2" was followed by 3
        Assert.Equal([1, 2, 3, 1, 2], SequenceGenerator.BannedTokens(sequence, 1)); // every seen token
        Assert.Empty(SequenceGenerator.BannedTokens([1, 2], 4));           // shorter than n - 1
        Assert.Empty(SequenceGenerator.BannedTokens(sequence, 0));
    }

    [Fact]
    public void Generation_StopsAtTheModelsPositionLimit_AndRejectsAPromptThatFillsIt()
    {
        int[] prompt = [.. Enumerable.Range(10, 30)]; // 30 of gpt2-tiny's 32 positions
        Assert.Equal(2, SequenceGenerator.Greedy(Model, prompt, new GenerationOptions { MaxNewTokens = 10 }).Tokens.Length);
        Assert.Equal(2, SequenceGenerator.BeamSearch(Model, prompt, new GenerationOptions { MaxNewTokens = 10, NumBeams = 2 }).Tokens.Length);

        var error = Assert.Throws<ArgumentException>(() => SequenceGenerator.Greedy(Model, [.. Enumerable.Range(10, 32)], new GenerationOptions()));
        Assert.Contains("no room", error.Message);
        Assert.Throws<ArgumentException>(() => SequenceGenerator.Greedy(Model, [5, 211], new GenerationOptions()));
        Assert.Throws<ArgumentException>(() => SequenceGenerator.Greedy(Model, [5], new GenerationOptions { MaxNewTokens = 0 }));
    }

    [Fact]
    public void Generate_ManyPromptsOfDifferentLengths_EqualsEachAlone_AndRestoresTrainingMode()
    {
        IReadOnlyList<int>[] prompts = [[5, 17, 42, 99], [7], [3, 9, 200]];
        var options = new GenerationOptions { MaxNewTokens = 4 };
        Model.train();
        try
        {
            var batch = SequenceGenerator.Generate(Model, prompts, options);
            Assert.True(Model.training);
            for (int i = 0; i < prompts.Length; i++)
                Assert.Equal(SequenceGenerator.Greedy(Model, prompts[i], options).Tokens, batch[i].Tokens);
        }
        finally
        {
            Model.eval();
        }
    }
}
