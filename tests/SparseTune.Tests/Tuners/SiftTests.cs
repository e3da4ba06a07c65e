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

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void GradientSelectionPicksTopKOfAccumulatedAbsoluteGradientComputedByHand(int selectionBatches)
    {
        // y = x Wᵀ with W (3×4); loss = Σ y ⊙ c, so ∂L/∂W = cᵀ x, summed over rows and batches.
        using var layer = new TunableLinear(4, 3, hasBias: false);
        var options = new SiftOptions { SparseRate = 0.2, SelectionBatches = selectionBatches }; // k = ⌊0.2·12⌋ + 1 = 3
        var adapter = new SiftAdapter(layer, options.ComponentsFor(12));
        layer.Adapter = adapter;
        adapter.BeginSelection(selectionBatches);
        float[][] xs = [[1, 0, 2, 0], [0, 3, 0, -1]];
        float[][] cs = [[1, -2, 0.5f], [0.5f, 1, -1]];
        var byHand = new double[12];
        for (int b = 0; b < selectionBatches; b++)
        {
            Assert.True(adapter.Selecting);
            using var x = tensor(xs[b], [1, 4]);
            using var c = tensor(cs[b], [1, 3]);
            using var y = layer.forward(x);
            using var loss = (y * c).sum();
            loss.backward();
            Assert.Null(adapter.Values.grad); // a selection batch trains nothing
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 4; j++)
                    byHand[i * 4 + j] += Math.Abs(cs[b][i] * xs[b][j]);
        }
        Assert.False(adapter.Selecting); // the last selection batch chose
        long[] expected = byHand.Select((v, i) => (v, i)).OrderByDescending(p => p.v).ThenBy(p => p.i).Take(3).Select(p => (long)p.i).Order().ToArray();
        // Two batches: row0 = [1,1.5,2,0.5], row1 = [2,3,4,1], row2 = [0.5,3,1,1] → 5, 6, 9. One: |c0ᵀx0| → 2, 6, 0 or 8 (ties broken by topk).
        if (selectionBatches == 2) Assert.Equal([5L, 6L, 9L], expected);
        var chosen = adapter.Indices.data<long>().ToArray();
        Assert.Equal(3, chosen.Length);
        Assert.Equal(3, adapter.Values.numel());
        double threshold = byHand.OrderDescending().ElementAt(2);
        Assert.All(chosen, i => Assert.True(byHand[i] >= threshold, $"index {i} scored {byHand[i]} below the top-3 threshold {threshold}"));
        if (selectionBatches == 2) Assert.Equal(expected, chosen);
    }

    [Theory]
    [InlineData(0.01, 12_800L, 129L)]   // x·n whole: ⌈x·n⌉ would give 128
    [InlineData(0.01, 1_000L, 11L)]
    [InlineData(0.01, 50L, 1L)]
    [InlineData(0.25, 12L, 4L)]
    [InlineData(1.0, 12L, 12L)]          // never more than n
    public void ComponentCountIsTheOriginalsFloorPlusOne(double rate, long numel, long expected) =>
        Assert.Equal(expected, new SiftOptions { SparseRate = rate }.ComponentsFor(numel));

    /// <summary>A batch source that records every batch it builds (by its first example).</summary>
    sealed class RecordingBatches(SyntheticBatches inner) : IBatchSource
    {
        public List<int[]> Built { get; } = [];
        public IReadOnlyList<int[]> EpochBatches(int epoch) => inner.EpochBatches(epoch);
        public TrainingBatch Build(int[] indices)
        {
            Built.Add(indices);
            return inner.Build(indices);
        }
    }

    [Fact]
    public void SelectionBatchIsSpentOnChoosingAndNotTrainedOnAgain()
    {
        string output = Fixtures.TempDirectory("sift-selection");
        try
        {
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"), ModelHead.SequenceClassification, ["a", "b", "c"]);
            var before = model.state_dict().ToDictionary(p => p.Key, p => p.Value.clone());
            using var tuner = new SiftTuner(new SiftOptions { SparseRate = 0.02 });
            var data = new RecordingBatches(new SyntheticBatches(TaskKind.Classification, 223, 32, 8, classes: 3));
            new Trainer(model, tuner, TaskKind.Classification, new TrainingOptions { MaxSteps = 1, LearningRate = 1e-2, OutputDirectory = output, EvaluateBaseline = false, WarmupRatio = 0 }).Run(data);

            // One step = one batch, built once: the selection batch is the first training step, as in the original.
            Assert.Single(data.Built);
            Assert.Equal(data.EpochBatches(0)[0], data.Built[0]);
            // That step chose the components and moved none of them; the new head (trained in full) learnt from it.
            foreach (var t in tuner.Targets)
            {
                Assert.Equal(t.Adapter.Components, t.Adapter.Indices.numel());
                Assert.Equal(0, Moved(t.Name + ".weight"));
                Assert.Equal(0, Moved(t.Name + ".bias"));
            }
            Assert.True(Moved("classifier.weight") > 0, "the head did not train on the selection step");

            long Moved(string name)
            {
                using var changed = model.state_dict()[name].ne(before[name]).sum();
                return changed.item<long>();
            }
        }
        finally { Directory.Delete(output, true); }
    }

    [Fact]
    public void TargetedBiasesTuneSparselyByDefaultAndFreezeOnRequest()
    {
        foreach (bool freeze in new[] { false, true })
        {
            string output = Fixtures.TempDirectory("sift-bias");
            try
            {
                using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
                var before = model.state_dict().ToDictionary(p => p.Key, p => p.Value.clone());
                var options = new SiftOptions { SparseRate = 0.05, FreezeBiases = freeze };
                using var tuner = new SiftTuner(options);
                var data = new SyntheticBatches(TaskKind.Classification, 223, 32, 8);
                new Trainer(model, tuner, TaskKind.Classification, new TrainingOptions { MaxSteps = 4, LearningRate = 1e-2, OutputDirectory = output, EvaluateBaseline = false, WeightDecay = 0 }).Run(data);
                foreach (var t in tuner.Targets)
                {
                    var bias = model.state_dict()[t.Name + ".bias"];
                    using var changed = bias.ne(before[t.Name + ".bias"]);
                    long expected = freeze ? 0 : options.ComponentsFor(bias.numel());   // e.g. ⌊0.05·32⌋ + 1 = 2
                    Assert.Equal(expected, changed.sum().item<long>());
                    Assert.Equal(expected, t.Adapter.BiasComponents);
                    if (!freeze)
                    {
                        using var changedAt = changed.nonzero().view(-1);
                        Assert.Equal(t.Adapter.BiasIndices.data<long>().ToArray(), changedAt.data<long>().ToArray());
                    }
                }
                bool listed = tuner.TrainableParameters().Any(p => p.Name.EndsWith(".bias.sift_values", StringComparison.Ordinal));
                Assert.Equal(!freeze, listed);
            }
            finally { Directory.Delete(output, true); }
        }
    }

    [Fact]
    public void WeightSparsityCountsAnUpdateAlreadyInTheWeightOnce()
    {
        using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        using var tuner = new SiftTuner(new SiftOptions { SparseRate = 0.05, Selection = SiftSelection.Random });
        tuner.Attach(model);
        tuner.Prepare(model, []);
        // Training moved W[i] from −1 to 0 at the first selected index of every targeted matrix: W holds the update.
        using (no_grad())
        {
            foreach (var t in tuner.Targets)
            {
                long i = t.Adapter.Indices.data<long>()[0];
                t.Layer.weight.view(-1)[i] = 0f;
                t.Adapter.BaseValues[0] = -1f;
            }
        }
        long zeros = 0, total = 0;
        foreach (var (_, layer) in ModuleSelection.BlockLinears(model))
        {
            using var isZero = layer.weight.eq(0);
            zeros += isZero.sum().item<long>();
            total += layer.weight.numel();
        }
        Assert.True(zeros >= tuner.Targets.Count);
        Assert.Equal((double)zeros / total, FineTuneJob.WeightSparsity(model), 12);
    }

    [Fact]
    public void ALanguageModelTrainsNoDenseModuleByDefault()
    {
        // llama-tiny has an untied lm_head: the original's instruction-tuning script trains no exception module.
        using var model = PretrainedModel.Load(Fixtures.Model("llama-tiny"));
        Assert.Contains(model.named_parameters(), p => p.name == "lm_head.weight");
        using var tuner = new SiftTuner(new SiftOptions());
        tuner.Attach(model);
        var trainable = tuner.TrainableParameters().ToList();
        Assert.All(trainable, p => Assert.EndsWith("sift_values", p.Name));
        Assert.False(model.named_parameters().Single(p => p.name == "lm_head.weight").parameter.requires_grad);
    }

    [Fact]
    public void APretrainedBertPoolerStaysFrozenAFreshOneTrains()
    {
        using var pretrained = PretrainedModel.Load(Fixtures.Model("bert-tiny"));   // its checkpoint has pooler and classifier
        Assert.Equal(["classifier"], ModuleSelection.ResolveTrainedModules(pretrained, null, freezePretrainedHeadParts: true));
        Assert.Equal(["bert.pooler", "classifier"], ModuleSelection.ResolveTrainedModules(pretrained, null));   // other methods: the whole head
        using var fresh = PretrainedModel.Create(pretrained.Config, ModelHead.SequenceClassification);   // nothing loaded
        Assert.Equal(["bert.pooler", "classifier"], ModuleSelection.ResolveTrainedModules(fresh, null, freezePretrainedHeadParts: true));
        using (var freshTuner = new SiftTuner(new SiftOptions()))
        {
            freshTuner.Attach(fresh);
            Assert.Contains(freshTuner.TrainableParameters(), p => p.Name == "bert.pooler.dense.weight");
        }
        using var tuner = new SiftTuner(new SiftOptions());
        tuner.Attach(pretrained);
        Assert.DoesNotContain(tuner.TrainableParameters(), p => p.Name.StartsWith("bert.pooler", StringComparison.Ordinal));
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
                    long k = (long)Math.Floor(0.01 * after.numel()) + 1;
                    Assert.Equal(k, count); // each selected component moved; all others bit-identical
                    var adapter = tuner.Targets.Single(t => t.Name + ".weight" == name).Adapter;
                    using var changedAt = changed.view(-1).nonzero().view(-1);
                    Assert.Equal(adapter.Indices.data<long>().ToArray(), changedAt.data<long>().ToArray());
                }
                else if (targeted.Contains(name[..^".bias".Length] + ".weight") && name.EndsWith(".bias", StringComparison.Ordinal))
                    Assert.Equal(options.ComponentsFor(after.numel()), count); // the targeted layer's bias, sparsely
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
