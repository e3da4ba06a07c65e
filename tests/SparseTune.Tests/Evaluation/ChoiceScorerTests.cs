using SparseTune.Evaluation;
using SparseTune.Models;
using SparseTune.Tests.Support;
using Xunit;
using static TorchSharp.torch;

namespace SparseTune.Tests.Evaluation;

/// <summary>
/// Likelihood scoring on the tiny GPT-2 (32 positions, 211 ids) and LLaMA (64 positions, 241 ids) fixtures, raw ids
/// (they ship no tokenizer). Random weights, so every score is pinned against a plain forward of one row at a time.
/// </summary>
public sealed class ChoiceScorerTests
{
    static TransformerModel Load(string name) => PretrainedModel.Load(Fixtures.Model(name), ModelHead.CausalLM);

    /// <summary>Items with prompts and continuations of different lengths, so a batch holds padding.</summary>
    static readonly ChoiceItem[] Items =
    [
        new([5, 17, 42, 99], [[7], [8, 9], [120, 3, 77]]),
        new([60], [[1, 2, 3, 4], [100]]),
        new([11, 12, 13, 14, 15, 16, 17, 18, 19], [[20, 21], [22], [23, 24, 25]]),
    ];

    /// <summary>Σ log_softmax(logits at the position before each continuation token)[token], one row, float64.</summary>
    static double ManualLogLikelihood(TransformerModel model, IReadOnlyList<int> prompt, IReadOnlyList<int> choice)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        model.eval();
        long[] ids = [.. prompt.Select(t => (long)t), .. choice.Select(t => (long)t)];
        using var output = model.Forward(tensor(ids, [1, ids.Length]));
        Tensor logProbs = output.Logits[0].to_type(ScalarType.Float64).log_softmax(-1);   // (T, V)
        double sum = 0;
        for (int j = 0; j < choice.Count; j++) sum += logProbs[prompt.Count + j - 1, choice[j]].item<double>();
        return sum;
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void Sums_EqualManualLogSoftmaxGathers_AndCountTheContinuationTokens(string name)
    {
        using var model = Load(name);
        var scores = ChoiceScorer.Score(model, Items, new ChoiceScorerOptions { BatchSize = 4 });

        Assert.Equal(Items.Select(i => i.Choices.Count), scores.Select(s => s.Count));
        for (int i = 0; i < Items.Length; i++)
            for (int c = 0; c < Items[i].Choices.Count; c++)
            {
                var score = scores[i][c];
                Assert.Equal(ManualLogLikelihood(model, Items[i].PromptIds, Items[i].Choices[c]), score.LogLikelihood, 4);
                Assert.Equal(Items[i].Choices[c].Count, score.TokenCount);
                Assert.Equal(score.LogLikelihood / score.TokenCount, score.MeanLogLikelihood, 12);
                Assert.Equal(0, score.PromptTokensDropped);
                Assert.True(score.LogLikelihood < 0);
            }
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void Batched_EqualsOneByOne(string name)
    {
        using var model = Load(name);
        var batched = ChoiceScorer.Score(model, Items, new ChoiceScorerOptions { BatchSize = 16 });
        var single = Items.Select(item => ChoiceScorer.Score(model, [item], new ChoiceScorerOptions { BatchSize = 1 })[0]).ToList();
        for (int i = 0; i < Items.Length; i++)
            for (int c = 0; c < Items[i].Choices.Count; c++)
                Assert.Equal(single[i][c].LogLikelihood, batched[i][c].LogLikelihood, 4);
    }

    [Fact]
    public void Predict_PicksBySumOrByMean_FirstOnTies()
    {
        ChoiceScore[] scores = [new(-3, 1), new(-4, 4), new(-8, 2)];
        Assert.Equal(0, ChoiceScorer.Predict(scores, ChoiceRanking.Sum));
        Assert.Equal(1, ChoiceScorer.Predict(scores, ChoiceRanking.Mean));
        Assert.Equal(0, ChoiceScorer.Predict([new ChoiceScore(-2, 1), new ChoiceScore(-2, 1)], ChoiceRanking.Sum));

        using var model = Load("gpt2-tiny");
        var scored = ChoiceScorer.Score(model, Items);
        int[] bySum = ChoiceScorer.Predict(scored, ChoiceRanking.Sum);
        for (int i = 0; i < Items.Length; i++)
        {
            double best = scored[i].Max(s => s.LogLikelihood);
            Assert.Equal(best, scored[i][bySum[i]].LogLikelihood);
        }
    }

    [Fact]
    public void LongRows_LoseTheirPromptFromTheLeft_AndAContinuationThatCannotFitIsRefused()
    {
        using var model = Load("gpt2-tiny");                                  // 32 positions
        int[] prompt = [.. Enumerable.Range(10, 30)];
        int[] choice = [150, 151, 152, 153, 154];
        var score = ChoiceScorer.Score(model, [new ChoiceItem(prompt, [choice])])[0][0];
        Assert.Equal(3, score.PromptTokensDropped);                            // 30 + 5 - 32
        Assert.Equal(ManualLogLikelihood(model, prompt[3..], choice), score.LogLikelihood, 4);

        var shorter = ChoiceScorer.Score(model, [new ChoiceItem(prompt, [choice])], new ChoiceScorerOptions { MaxLength = 10 })[0][0];
        Assert.Equal(25, shorter.PromptTokensDropped);
        Assert.Equal(ManualLogLikelihood(model, prompt[25..], choice), shorter.LogLikelihood, 4);

        var error = Assert.Throws<ArgumentException>(() => ChoiceScorer.Score(model, [new ChoiceItem([1], [[.. Enumerable.Range(1, 32)]])]));
        Assert.Contains("item 0 choice 0: 32 tokens leave no room for a prompt token within 32 positions", error.Message);
        var empty = Assert.Throws<ArgumentException>(() => ChoiceScorer.Score(model, [new ChoiceItem([], [[1]])]));
        Assert.Contains("item 0: the prompt is empty", empty.Message);
        var outside = Assert.Throws<ArgumentException>(() => ChoiceScorer.Score(model, [new ChoiceItem([1], [[211]])]));
        Assert.Contains("outside the vocabulary", outside.Message);
    }

    [Theory]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void NextTokenLogProbabilities_AreTheLastPositionsLogSoftmax_WhateverThePadding(string name)
    {
        using var model = Load(name);
        IReadOnlyList<int>[] prompts = [[5, 6, 7], [9], [30, 31, 32, 33, 34, 35, 36, 37]];
        int[] candidates = [40, 3, 200];
        double[][] batched = ChoiceScorer.NextTokenLogProbabilities(model, prompts, candidates, new ChoiceScorerOptions { BatchSize = 3 });
        for (int p = 0; p < prompts.Length; p++)
            for (int k = 0; k < candidates.Length; k++)
                Assert.Equal(ManualLogLikelihood(model, prompts[p], [candidates[k]]), batched[p][k], 4);
    }

    [Fact]
    public void Scoring_RunsInEvalMode_AndGivesTrainingModeBack_AndRefusesANonCausalModel()
    {
        using var model = Load("gpt2-tiny");
        model.train();
        var first = ChoiceScorer.Score(model, Items);
        Assert.True(model.training);
        var second = ChoiceScorer.Score(model, Items);                         // dropout would make these differ
        Assert.Equal(first[0][2].LogLikelihood, second[0][2].LogLikelihood);

        using var bert = PretrainedModel.Load(Fixtures.Model("bert-tiny"), ModelHead.MaskedLM);
        var error = Assert.Throws<ArgumentException>(() => ChoiceScorer.Score(bert, Items));
        Assert.StartsWith("likelihood scoring needs a causal-LM model, not MaskedLM", error.Message);
    }
}
