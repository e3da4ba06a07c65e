using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Training;
using SparseTune.Tuners.Lora;
using TorchSharp;
using Parameter = TorchSharp.Modules.Parameter;
using AdamW = SparseTune.Training.AdamW;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.TrainingLoop;

/// <summary>
/// AdamW built after structured pruning inherits the moments of the optimizer it replaces, cut the way the
/// parameters were cut (through <see cref="SparseTune.Nn.ParameterLineage"/>).
/// </summary>
public sealed class AdamWInheritanceTests(ITestOutputHelper output)
{
    static double MaxAbsDiff(Tensor a, Tensor b)
    {
        Assert.Equal(a.shape, b.shape);
        using Tensor d = (a - b).abs().max();
        return d.item<float>();
    }

    /// <summary>bert-tiny with LoRA on layer 0's query, trained <paramref name="steps"/> AdamW steps on a toy loss.</summary>
    static (TransformerModel Model, LoraAdapter Lora, AdamW Optimizer) TrainedLora(int steps)
    {
        manual_seed(9);
        TransformerModel model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        model.eval();
        foreach (var p in model.parameters()) p.requires_grad = false;
        var query = model.Layers[0].Attention.Query!.Layer;
        var lora = new LoraAdapter(query, rank: 4, alpha: 8, dropout: 0);
        query.Adapter = lora;
        var optimizer = new AdamW(lora.TrainableParameters(), new AdamWOptions(WeightDecay: 0.01), _ => false);
        using Tensor ids = tensor(new long[] { 5, 9, 17, 4, 30, 8, 12, 7, 3, 21, 6, 11, 19, 10 }, [2, 7]);
        for (int step = 0; step < steps; step++)
        {
            using var scope = NewDisposeScope();
            using ModelOutput o = model.Forward(ids);
            o.LastHiddenState.pow(2).mean().backward();
            optimizer.Step(1e-2);
            optimizer.ZeroGrad();
        }
        return (model, lora, optimizer);
    }

    [Fact]
    public void PrunedLoraFactorInheritsItsMomentsSlicedOnTheKeptRows()
    {
        var (model, lora, old) = TrainedLora(steps: 2);
        using var _ = model;
        using var __ = old;
        Parameter oldA = lora.LoraA, oldB = lora.LoraB;
        var (oldAvgB, oldSqB) = old.MomentsOf(oldB)!.Value;
        var (oldAvgA, oldSqA) = old.MomentsOf(oldA)!.Value;
        Assert.True(oldAvgB.abs().max().item<float>() > 0, "two steps must leave non-zero moments on B");

        model.PruneHeads(0, [1]);   // query rows 12 … 23 go, so lora_B loses them
        Assert.NotSame(oldB, lora.LoraB);
        Assert.Same(oldA, lora.LoraA);
        using var extra = new Parameter(ones(3));   // never seen by the old optimizer
        using var inherited = new AdamW([.. lora.TrainableParameters(), ("extra", extra)], new AdamWOptions(WeightDecay: 0.01), _ => false, inheritFrom: old);

        Assert.Equal(2, inherited.StepCount);
        using Tensor keptRows = cat([arange(0, 12), arange(24, 48)]);
        var (avgB, sqB) = inherited.MomentsOf(lora.LoraB)!.Value;
        double diffAvg = MaxAbsDiff(avgB, oldAvgB.index_select(0, keptRows));
        double diffSq = MaxAbsDiff(sqB, oldSqB.index_select(0, keptRows));
        output.WriteLine($"inherited lora_B exp_avg vs old[kept rows]: {diffAvg}, exp_avg_sq: {diffSq}");
        Assert.Equal(0.0, diffAvg);
        Assert.Equal(0.0, diffSq);
        Assert.Equal([36L, 4L], avgB.shape);

        var (avgA, sqA) = inherited.MomentsOf(lora.LoraA)!.Value;   // same object: same moments, copied
        Assert.Equal(0.0, MaxAbsDiff(avgA, oldAvgA));
        Assert.Equal(0.0, MaxAbsDiff(sqA, oldSqA));
        // A copy (its own storage), so disposing the old optimizer is safe.
        Assert.NotEqual(oldAvgA.storage<float>().data_ptr(), avgA.storage<float>().data_ptr());

        var (avgExtra, sqExtra) = inherited.MomentsOf(extra)!.Value;
        Assert.Equal(0f, avgExtra.abs().sum().item<float>());
        Assert.Equal(0f, sqExtra.abs().sum().item<float>());
    }

    [Fact]
    public void MomentsFollowSeveralCutsAndRankDrops()
    {
        var (model, lora, old) = TrainedLora(steps: 2);
        using var _ = model;
        using var __ = old;
        var (oldAvgB, _) = old.MomentsOf(lora.LoraB)!.Value;
        var (oldAvgA, _) = old.MomentsOf(lora.LoraA)!.Value;

        model.PruneHeads(0, [0]);          // original head 0 gone: rows 12 … 47 stay
        model.PruneHeads(0, [1]);          // current head 1 = original head 2: rows 12 … 23 and 36 … 47 stay
        using (Tensor ranks = tensor(new long[] { 3, 1 })) lora.KeepRanks(ranks);
        using var inherited = new AdamW(lora.TrainableParameters(), new AdamWOptions(), _ => false, inheritFrom: old);

        using Tensor rows = cat([arange(12, 24), arange(36, 48)]);
        using Tensor ranksKept = tensor(new long[] { 3, 1 });
        using Tensor expectedB = oldAvgB.index_select(0, rows).index_select(1, ranksKept);
        using Tensor expectedA = oldAvgA.index_select(0, ranksKept);
        double diffB = MaxAbsDiff(inherited.MomentsOf(lora.LoraB)!.Value.ExpAvg, expectedB);
        double diffA = MaxAbsDiff(inherited.MomentsOf(lora.LoraA)!.Value.ExpAvg, expectedA);
        output.WriteLine($"after two head cuts and a rank drop: lora_B exp_avg {diffB}, lora_A exp_avg {diffA}");
        Assert.Equal(0.0, diffB);
        Assert.Equal(0.0, diffA);

        // The inherited optimizer keeps training the pruned adapter.
        using Tensor ids = tensor(new long[] { 5, 9, 17, 4, 30, 8, 12 }, [1, 7]);
        using (var scope = NewDisposeScope())
        {
            using ModelOutput o = model.Forward(ids);
            o.LastHiddenState.pow(2).mean().backward();
        }
        inherited.Step(1e-2);
        Assert.Equal(3, inherited.StepCount);
    }
}
