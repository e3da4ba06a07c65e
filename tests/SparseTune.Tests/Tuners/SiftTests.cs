using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tests.Support;
using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.Sift;
using Xunit;
using Xunit.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Tests.Tuners;

public class SiftTests(ITestOutputHelper output)
{
    static TrainingBatch FirstBatch(SyntheticBatches data) => data.Build(data.EpochBatches(0)[0]);

    [Fact]
    public void ValueGradientEqualsDenseGradientGatheredAtIndices()
    {
        torch.random.manual_seed(3);
        var data = new SyntheticBatches(TaskKind.Classification, 223, 8, 8);
        using var batch = FirstBatch(data);

        // Dense reference: every targeted weight requires grad; plain autograd.
        using var dense = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        dense.eval();
        foreach (var p in dense.parameters()) p.requires_grad = true;
        using (var o = dense.Forward(batch.InputIds, batch.AttentionMask)) Losses.Compute(TaskKind.Classification, o, batch.Labels).backward();

        using var sparse = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        sparse.eval();
        using var tuner = new SiftTuner(new SiftOptions { SparseRate = 0.05, Selection = SiftSelection.Random });
        tuner.Attach(sparse);
        tuner.Prepare(sparse, []);
        using (var o = sparse.Forward(batch.InputIds, batch.AttentionMask)) Losses.Compute(TaskKind.Classification, o, batch.Labels).backward();

        var denseGrads = dense.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!);
        Assert.Equal(12, tuner.Targets.Count); // 2 layers × (q, k, v, attn-out, intermediate, output)
        double worst = 0;
        foreach (var (name, layer, adapter) in tuner.Targets)
        {
            Assert.Null(layer.weight.grad); // no dense weight gradient is stored
            using var expected = denseGrads[name + ".weight"].view(-1).index_select(0, adapter.Indices);
            using var actual = adapter.Values.grad!;
            double relative = (actual - expected).abs().max().item<float>() / Math.Max(1e-12, expected.abs().max().item<float>());
            worst = Math.Max(worst, relative);
        }
        output.WriteLine($"max relative error {worst:E3}");
        Assert.True(worst <= 1e-6, $"value gradient differs from gathered dense gradient by {worst:E3} (relative)");
    }

    [Fact]
    public void GradientSelectionPicksTopKOfAccumulatedAbsoluteGradientComputedByHand()
    {
        // y = x Wᵀ with W (3×4); loss = Σ y ⊙ c, so ∂L/∂W = cᵀ x, summed over rows and batches.
        using var layer = new TunableLinear(4, 3, hasBias: false);
        var options = new SiftOptions { SparseRate = 0.25, SelectionBatches = 2 }; // k = ⌈0.25·12⌉ = 3
        var adapter = new SiftAdapter(layer, options.ComponentsFor(12), accumulateSelection: true);
        layer.Adapter = adapter;
        adapter.BeginSelection();
        float[][] xs = [[1, 0, 2, 0], [0, 3, 0, -1]];
        float[][] cs = [[1, -2, 0.5f], [0.5f, 1, -1]];
        var byHand = new double[12];
        for (int b = 0; b < 2; b++)
        {
            using var x = tensor(xs[b], [1, 4]);
            using var c = tensor(cs[b], [1, 3]);
            using var y = layer.forward(x);
            using var loss = (y * c).sum();
            loss.backward();
        }
        // |Σ_b c_bᵀ x_b| by hand.
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
                byHand[i * 4 + j] = Math.Abs(cs[0][i] * xs[0][j]) + Math.Abs(cs[1][i] * xs[1][j]);
        adapter.EndSelection(layer);
        // Scores: row0 = [1,1.5,2,0.5], row1 = [2,3,4,1], row2 = [0.5,3,1,1]. Top 3: index 6 (4), 5 (3), 9 (3).
        long[] expected = byHand.Select((v, i) => (v, i)).OrderByDescending(p => p.v).ThenBy(p => p.i).Take(3).Select(p => (long)p.i).Order().ToArray();
        Assert.Equal([5L, 6L, 9L], expected);
        Assert.Equal(expected, adapter.Indices.data<long>().ToArray());
        Assert.Equal(3, adapter.Values.numel());
    }

    [Fact]
    public void TrainingChangesExactlyKComponentsOfEachTargetedMatrix()
    {
        string output = Fixtures.TempDirectory("sift-k");
        try
        {
            using var baseModel = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            var before = baseModel.state_dict().ToDictionary(p => p.Key, p => p.Value.clone());
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            var options = new SiftOptions { SparseRate = 0.01 };
            using var tuner = new SiftTuner(options);
            var data = new SyntheticBatches(TaskKind.Classification, 223, 32, 8);
            var trainer = new Trainer(model, tuner, TaskKind.Classification, new TrainingOptions { MaxSteps = 16, LearningRate = 3e-3, OutputDirectory = output, EvaluateBaseline = false, WeightDecay = 0 });
            var result = trainer.Run(data);
            double early = result.LossCurve.Take(4).Average(l => l.Loss), late = result.LossCurve.TakeLast(4).Average(l => l.Loss);
            Assert.True(late < early, $"loss did not fall: {early} → {late}");

            var targeted = tuner.Targets.Select(t => t.Name + ".weight").ToHashSet();
            foreach (var (name, after) in model.state_dict())
            {
                using var changed = after.ne(before[name]);
                long count = changed.sum().item<long>();
                if (targeted.Contains(name))
                {
                    long k = (long)Math.Ceiling(0.01 * after.numel());
                    Assert.Equal(k, count); // each selected component moved; all others bit-identical
                    var adapter = tuner.Targets.Single(t => t.Name + ".weight" == name).Adapter;
                    using var changedAt = changed.view(-1).nonzero().view(-1);
                    Assert.Equal(adapter.Indices.data<long>().ToArray(), changedAt.data<long>().ToArray());
                }
                else if (!ModuleSelection.IsUnder(name, model.HeadModuleNames))
                    Assert.Equal(0, count);
            }
            // Gradient + optimizer bytes: k values and the head, never a dense matrix.
            long trainable = tuner.TrainableParameters().Sum(p => p.Parameter.numel());
            Assert.Equal(3 * 4 * trainable, result.GradOptimizerBytes);
        }
        finally { Directory.Delete(output, true); }
    }

    [Fact]
    public void CheckpointedAndPlainRunsGiveTheSameLosses()
    {
        double[] Losses(bool checkpointing)
        {
            string output = Fixtures.TempDirectory("sift-ckpt");
            try
            {
                using var model = PretrainedModel.Load(Fixtures.Model("gpt2-tiny"));
                using var tuner = new SiftTuner(new SiftOptions { SparseRate = 0.05 });
                var data = new SyntheticBatches(TaskKind.CausalLM, 211, 24, 4);
                var trainer = new Trainer(model, tuner, TaskKind.CausalLM, new TrainingOptions { MaxSteps = 10, LearningRate = 3e-2, OutputDirectory = output, EvaluateBaseline = false, WarmupRatio = 0, GradientCheckpointing = checkpointing });
                return trainer.Run(data).LossCurve.Select(l => l.Loss).ToArray();
            }
            finally { Directory.Delete(output, true); }
        }
        var plain = Losses(false);
        var checkpointed = Losses(true);
        output.WriteLine($"plain {string.Join(", ", plain)}; checkpointed {string.Join(", ", checkpointed)}");
        Assert.Equal(plain.Length, checkpointed.Length);
        for (int i = 0; i < plain.Length; i++) Assert.True(Math.Abs(plain[i] - checkpointed[i]) <= 1e-5, $"step {i + 1}: {plain[i]} vs {checkpointed[i]}");
        Assert.True(plain[^3..].Average() < plain[..3].Average(), "the SIFT LM run did not learn");
    }

    [Fact]
    public void SparseDeltaAppliedToTheBaseReproducesTheTunedModel()
    {
        string output = Fixtures.TempDirectory("sift-delta");
        try
        {
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            using var tuner = new SiftTuner(new SiftOptions { SparseRate = 0.02 });
            var data = new SyntheticBatches(TaskKind.Classification, 223, 16, 8);
            new Trainer(model, tuner, TaskKind.Classification, new TrainingOptions { MaxSteps = 3, LearningRate = 1e-2, OutputDirectory = output, EvaluateBaseline = false }).Run(data);
            tuner.SaveArtifacts(model, output);

            using var rebuilt = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            SparseMatrixFile.Apply(rebuilt, Path.Combine(output, SiftTuner.DeltaFileName));
            var tuned = model.state_dict();
            foreach (var (name, value) in rebuilt.state_dict())
                Assert.True(value.allclose(tuned[name], rtol: 0, atol: 1e-6), $"{name} differs after applying the delta");
        }
        finally { Directory.Delete(output, true); }
    }

    [Fact]
    public void MergingADeltaTrainedWithNewLabelsRebuildsThatHead()
    {
        string output = Fixtures.TempDirectory("sift-labels"), merged = Fixtures.TempDirectory("sift-merged");
        try
        {
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"), ModelHead.SequenceClassification, ["x", "y"]);
            using var tuner = new SiftTuner(new SiftOptions { SparseRate = 0.02 });
            var data = new SyntheticBatches(TaskKind.Classification, 223, 16, 8, classes: 2);
            new Trainer(model, tuner, TaskKind.Classification, new TrainingOptions { MaxSteps = 2, LearningRate = 1e-2, OutputDirectory = output, EvaluateBaseline = false }).Run(data);
            tuner.SaveArtifacts(model, output);
            string delta = Path.Combine(output, SiftTuner.DeltaFileName);
            Assert.Equal(["x", "y"], MethodArtifacts.RecordedLabels(delta));

            MethodArtifacts.MergeToCheckpoint(Fixtures.Model("bert-tiny"), delta, merged);
            using var rebuilt = PretrainedModel.Load(merged);
            Assert.Equal("x", rebuilt.Config.Id2Label!["0"]);
            Assert.Equal(2, rebuilt.Config.NumLabels);
            var tuned = model.state_dict();
            foreach (var (name, value) in rebuilt.state_dict())
                Assert.True(value.allclose(tuned[name], rtol: 0, atol: 1e-6), $"{name} differs after merging");
        }
        finally { Directory.Delete(output, true); Directory.Delete(merged, true); }
    }
}
