using System.Text.Json.Nodes;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.LightPeft;
using SparseTune.Tuners.Lora;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static SparseTune.Tests.Support.LogitChecks;
using static TorchSharp.torch;

namespace SparseTune.Tests.Tuners;

/// <summary>
/// Light-PEFT on the three tiny fixtures: bert-tiny (2 layers, 4 heads, 96 neurons), gpt2-tiny (fused c_attn,
/// 4 heads, 192 neurons), llama-tiny (4 query heads over 2 key/value heads: groups of 2; 160 neurons).
/// </summary>
public sealed class LightPeftTests(ITestOutputHelper output)
{
    static TransformerModel Load(string fixture) =>
        fixture == "llama-tiny"
            ? PretrainedModel.Load(Fixtures.Model(fixture), ModelHead.SequenceClassification, ["a", "b", "c"])
            : PretrainedModel.Load(Fixtures.Model(fixture));

    static Tensor GateOff(long size, IEnumerable<int> off)
    {
        var values = Enumerable.Repeat(1f, (int)size).ToArray();
        foreach (int i in off) values[i] = 0f;
        return tensor(values);
    }

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void MasksAtOneAndFreshLoraChangeNothing(string fixture)
    {
        torch.random.manual_seed(3);
        using var model = Load(fixture);
        model.eval();
        using var before = Logits(model);
        using var tuner = new LightPeftTuner(new LightPeftOptions());
        tuner.Attach(model);
        // Every layer's gates are the tuner's masks, all ones; LoRA covers q, k, v, attention output, FFN in and out.
        for (int l = 0; l < model.Layers.Count; l++)
        {
            Assert.Same(tuner.HeadMasks[l], model.Layers[l].Attention.HeadGate);
            Assert.Same(tuner.NeuronMasks[l], model.Layers[l].FeedForward.NeuronGate);
        }
        int perLayer = fixture switch { "bert-tiny" => 6, "gpt2-tiny" => 4, _ => 7 };
        Assert.Equal(perLayer * model.Layers.Count, tuner.Lora.Modules.Count);
        using var after = Logits(model);
        double diff = MaxAbsDiff(before, after);
        output.WriteLine($"{fixture}: max |Δ logits| with masks at 1 = {diff:E2}");
        Assert.True(diff <= 1e-6, $"masks at 1 changed the logits by {diff:E2}");
    }

    [Fact]
    public void TheL1TermsGradientOnAMaskIsLambdaTimesSign()
    {
        torch.random.manual_seed(4);
        using var model = Load("bert-tiny");
        var options = new LightPeftOptions { MaskL1 = 1e-4 };
        using var tuner = new LightPeftTuner(options);
        tuner.Attach(model);
        using (no_grad())
            foreach (var m in tuner.HeadMasks.Concat(tuner.NeuronMasks))
            {
                using var values = rand(m.shape) * 2 - 1;   // mixed signs
                m.copy_(values);
            }
        var context = new TrainingStepContext(model, 0, 10);
        using (var loss = tuner.ExtraLoss(context)!)
        {
            double expected = 1e-4 * tuner.HeadMasks.Concat(tuner.NeuronMasks).Sum(m => { using var s = m.abs().sum(); return s.item<float>(); });
            Assert.Equal(expected, loss.item<float>(), 1e-6);
            loss.backward();
        }
        double worst = 0;
        foreach (var m in tuner.HeadMasks.Concat(tuner.NeuronMasks))
        {
            using var grad = m.grad!;
            using var want = m.detach().sign() * 1e-4;
            worst = Math.Max(worst, MaxAbsDiff(grad, want));
        }
        output.WriteLine($"max |∂L1/∂m − λ·sign(m)| = {worst:E2}");
        Assert.True(worst <= 1e-12, $"L1 gradient differs from λ·sign(m) by {worst:E2}");
    }

    [Fact]
    public void SelectionRemovesExactlyTheRequestedCounts()
    {
        // 16 heads at 1/3: ⌊16/3⌋ = 5, the five lowest raw values (negative ones count as low: no absolute value).
        float[] heads = [0.9f, -0.2f, 0.5f, 0.1f, 1.0f, 0.3f, 0.95f, 0.05f, 0.7f, 0.8f, 0.6f, 0.99f, 0.4f, 0.65f, 0.85f, 0.75f];
        Assert.Equal([1, 3, 5, 7, 12], LightPeftSelection.HeadsToRemove(heads, 1, 1.0 / 3));
        // Grouped-query attention, groups of 2: group scores 0.35, 0.2, 0.5, 0.4 → at 1/2 the two lowest groups go whole.
        float[] gqa = [0.2f, 0.5f, 0.1f, 0.3f, 0.9f, 0.1f, 0.4f, 0.4f];
        Assert.Equal([0, 1, 2, 3], LightPeftSelection.HeadsToRemove(gqa, 2, 0.5));
        Assert.Empty(LightPeftSelection.HeadsToRemove(gqa, 2, 0.2));   // ⌊0.2 · 4 groups⌋ = 0

        var random = new Random(1);
        float[][] neurons = [Enumerable.Range(0, 30).Select(_ => (float)random.NextDouble()).ToArray(), Enumerable.Range(0, 90).Select(_ => (float)random.NextDouble() + 0.3f).ToArray()];
        var perLayer = LightPeftSelection.NeuronsToRemovePerLayer(neurons, 1.0 / 3);
        Assert.Equal([10, 30], perLayer.Select(p => p.Length));
        for (int l = 0; l < 2; l++)
            Assert.True(perLayer[l].Max(i => neurons[l][i]) <= neurons[l].Where((_, i) => !perLayer[l].Contains(i)).Min());
        var global = LightPeftSelection.NeuronsToRemoveGlobally(neurons, 1.0 / 3);
        Assert.Equal(40, global.Sum(g => g.Length));
        float threshold = global.SelectMany((g, l) => g.Select(i => neurons[l][i])).Max();
        Assert.True(neurons.SelectMany((m, l) => m.Where((_, i) => !global[l].Contains(i))).Min() >= threshold);
        Assert.NotEqual(perLayer[0].Length, global[0].Length);   // the global ranking takes more from the lower-masked layer

        // 12 modules keep the top quarter: 3; 24 ranks of the kept modules keep the top half: 12.
        var modules = Enumerable.Range(0, 12).Select(i => ($"m{i}", (double)((i * 7) % 12))).ToList();
        var dropped = LightPeftSelection.ModulesToDrop(modules, 0.25);
        Assert.Equal(9, dropped.Count);
        Assert.Equal(["m10", "m3", "m5"], modules.Select(m => m.Item1).Except(dropped).Order());
        var ranks = LightPeftSelection.RanksToKeep([("a", [1, 9, 2, 8, 3, 7, 4, 6]), ("b", [0.5, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8]), ("c", [10, 11, 12, 13, 14, 15, 16, 17])], 0.5);
        Assert.Equal(12, ranks.Values.Sum(r => r.Length));
        Assert.Equal([1, 3, 5, 7], ranks["a"]);
        Assert.Empty(ranks["b"]);
        Assert.Equal(8, ranks["c"].Length);
    }

    /// <summary>
    /// The pruned model with the sliced LoRA is the same function as the unpruned model whose pruned heads and neurons
    /// are gated to zero (and the others to one: the learned mask values are not folded in), whose dropped LoRA modules
    /// and dropped ranks are zeroed.
    /// </summary>
    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void PrunedModelWithSlicedLoraEqualsGatedModelWithRanksRemoved(string fixture)
    {
        torch.random.manual_seed(5);
        using var model = Load(fixture);
        model.eval();
        using var tuner = new LightPeftTuner(new LightPeftOptions());
        tuner.Attach(model);
        using (no_grad())
        {
            foreach (var m in tuner.Lora.Modules)
            {
                using var b = randn(m.Adapter.LoraB.shape) * 0.2;
                m.Adapter.LoraB.copy_(b);
            }
            foreach (var m in tuner.HeadMasks.Concat(tuner.NeuronMasks))
            {
                using var v = rand(m.shape) + 0.5;   // learned-looking masks, which the pruning must not fold in
                m.copy_(v);
            }
        }
        var names = tuner.Lora.Modules.Select(m => m.Name).ToList();
        int group = model.Layers[0].Attention.GroupSize;
        var plan = new LightPeftPlan
        {
            RemovedHeads = [Enumerable.Range(group, group).ToArray(), []],
            RemovedNeurons = [[0, 5, 17], Enumerable.Range(10, 20).ToArray()],
            DroppedModules = [names[1], names[^2]],
            KeptRanks = names.Where((_, i) => i != 1 && i != names.Count - 2)
                .ToDictionary(n => n, n => n == names[0] ? [1, 4, 6] : n == names[^1] ? [7] : Enumerable.Range(0, 8).ToArray()),
        };

        using var ungated = Logits(model);
        var savedGates = model.Layers.Select(l => (l.Attention.HeadGate, l.FeedForward.NeuronGate)).ToList();
        var referenceGates = new List<Tensor>();
        for (int l = 0; l < model.Layers.Count; l++)
        {
            var view = model.Layers[l];
            var head = GateOff(view.Attention.NumHeads, plan.RemovedHeads[l]);
            var neuron = GateOff(view.FeedForward.IntermediateSize, plan.RemovedNeurons[l]);
            view.Attention.HeadGate = head;
            view.FeedForward.NeuronGate = neuron;
            referenceGates.AddRange([head, neuron]);
        }
        using (no_grad())
            foreach (var m in tuner.Lora.Modules)
            {
                if (plan.DroppedModules.Contains(m.Name)) { m.Adapter.LoraB.zero_(); continue; }
                foreach (int r in Enumerable.Range(0, m.Adapter.Rank).Except(plan.KeptRanks[m.Name]))
                    m.Adapter.LoraB[.., r] = 0f;
            }
        using var reference = Logits(model);
        for (int l = 0; l < model.Layers.Count; l++)
        {
            model.Layers[l].Attention.HeadGate = savedGates[l].HeadGate;
            model.Layers[l].FeedForward.NeuronGate = savedGates[l].NeuronGate;
        }
        foreach (var g in referenceGates) g.Dispose();

        tuner.ApplyPlan(plan);
        Assert.Empty(tuner.HeadMasks);
        Assert.All(model.Layers, l => Assert.Null(l.Attention.HeadGate));
        Assert.Equal(model.Layers[0].Attention.OriginalNumHeads - group, model.Layers[0].Attention.NumHeads);
        Assert.Equal(model.Layers[1].FeedForward.OriginalIntermediateSize - 20, model.Layers[1].FeedForward.IntermediateSize);
        Assert.Equal(names.Count - 2, tuner.Lora.Modules.Count);
        Assert.Equal(3, tuner.Lora.Modules[0].Adapter.Rank);
        Assert.Equal(1, tuner.Lora.Modules[^1].Adapter.Rank);
        using var pruned = Logits(model);
        double change = MaxAbsDiff(ungated, reference), diff = MaxAbsDiff(reference, pruned);
        output.WriteLine($"{fixture}: gating changed the logits by {change:E2}; pruned vs gated max |Δ logits| = {diff:E2}");
        Assert.True(change > 1e-3, "the gates and zeroed ranks must change the output, or the comparison proves nothing");
        Assert.True(diff <= 1e-5, $"pruned model differs from the gated one by {diff:E2}");
    }

    static TrainingOptions Training(string dir, int steps, int saveEvery = 0) => new()
    {
        MaxSteps = steps,
        LearningRate = 5e-3,
        OutputDirectory = dir,
        EvaluateBaseline = false,
        SaveEvery = saveEvery,
        LogEvery = 1,
    };

    /// <summary>12 steps, estimation 6 (ratio 0.5): crash after step 5 (checkpoint 4, before the pruning) or after step 7 (checkpoint 6, right after it).</summary>
    [Theory]
    [InlineData("bert-tiny", 5)]
    [InlineData("bert-tiny", 7)]
    [InlineData("llama-tiny", 7)]
    public void ResumeAcrossThePruningIsBitExact(string fixture, int crashAfter)
    {
        var options = new LightPeftOptions { EstimateRatio = 0.5 };
        var task = TaskKind.Classification;
        int vocab = fixture == "llama-tiny" ? 241 : 223;
        string full = Fixtures.TempDirectory("lightpeft-full"), part = Fixtures.TempDirectory("lightpeft-part");
        try
        {
            torch.random.manual_seed(1);
            double[] losses;
            using (var model = Load(fixture))
            using (var tuner = new LightPeftTuner(options))
            {
                losses = new Trainer(model, tuner, task, Training(full, 12)).Run(new SyntheticBatches(task, vocab, 32, 8))
                    .LossCurve.Select(l => l.Loss).ToArray();
                Assert.True(tuner.Pruned);
            }
            torch.random.manual_seed(1);
            using (var model = Load(fixture))
            using (var tuner = new LightPeftTuner(options))
            {
                var crashing = new Trainer(model, tuner, task, Training(part, 12, saveEvery: 2))
                {
                    Progress = new RecordingProgress(p => { if (p.Phase == "train" && p.Step == crashAfter) throw new OperationCanceledException(); }),
                };
                Assert.Throws<OperationCanceledException>(() => crashing.Run(new SyntheticBatches(task, vocab, 32, 8)));
            }
            torch.random.manual_seed(1);
            using (var model = Load(fixture))
            using (var tuner = new LightPeftTuner(options))
            {
                var resumed = new Trainer(model, tuner, task, Training(part, 12, saveEvery: 2) with { ResumeFrom = Path.Combine(part, "checkpoint") })
                    .Run(new SyntheticBatches(task, vocab, 32, 8)).LossCurve.Select(l => l.Loss).ToArray();
                output.WriteLine($"{fixture}, crash after {crashAfter}: {string.Join(", ", losses.Select(l => l.ToString("0.000000")))}");
                Assert.Equal(losses, resumed);
                Assert.True(tuner.Pruned);
            }
        }
        finally
        {
            Directory.Delete(full, true);
            Directory.Delete(part, true);
        }
    }

    [Fact]
    public void AFullRunPrunesTheDefaultSharesAndShipsAReloadableAdapter()
    {
        string dir = Fixtures.TempDirectory("lightpeft-run");
        try
        {
            torch.random.manual_seed(2);
            using var model = Load("bert-tiny");
            using var tuner = new LightPeftTuner(new LightPeftOptions());
            int foundationBefore = (int)model.ParameterCount();
            new Trainer(model, tuner, TaskKind.Classification, Training(dir, 24)).Run(new SyntheticBatches(TaskKind.Classification, 223, 32, 8));
            var estimate = tuner.Estimate!;
            Assert.Equal(6, estimate.EstimationSteps);   // min(800, 0.25 · 24)
            Assert.Equal(3, estimate.ScoredSteps);
            // 4 heads: ⌊4/3⌋ = 1 per layer; 2 × 96 neurons globally: 64; 12 modules keep 3; their 24 ranks keep 12.
            Assert.All(model.Layers, l => Assert.Equal(3, l.Attention.NumHeads));
            Assert.Equal(192 - 64, model.Layers.Sum(l => l.FeedForward.IntermediateSize));
            Assert.Equal(12, tuner.Lora.Modules.Sum(m => m.Adapter.Rank));
            Assert.True(tuner.Lora.Modules.Count <= 3);
            Assert.Equal(foundationBefore, estimate.FoundationParametersBefore);
            output.WriteLine($"foundation {estimate.FoundationParametersBefore:N0} → {estimate.FoundationParametersAfter:N0}; LoRA {estimate.LoraParametersBefore:N0} → {estimate.LoraParametersAfter:N0}; kept {string.Join(", ", tuner.Lora.Modules.Select(m => $"{m.Name} r={m.Adapter.Rank}"))}");
            Assert.Equal(12, estimate.ModuleScores.Count);
            Assert.All(estimate.ModuleScores.Values, s => Assert.True(s > 0 && double.IsFinite(s)));
            // report.json's method_report: what was kept per layer, the parameters and the FLOPs saved.
            var report = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(tuner.Report(model)))!;
            output.WriteLine(report.ToJsonString());
            Assert.Equal([3, 3], report["heads_kept"]!.AsArray().Select(n => n!.GetValue<int>()));
            Assert.Equal(128, report["neurons_kept"]!.AsArray().Sum(n => n!.GetValue<int>()));
            Assert.Equal(estimate.FoundationParametersAfter, report["foundation_parameters_after"]!.GetValue<long>());
            Assert.Equal(model.ParameterCount(), report["foundation_parameters_after"]!.GetValue<long>());
            Assert.Equal(tuner.Lora.Modules.Sum(m => m.Adapter.LoraA.numel() + m.Adapter.LoraB.numel()), report["lora_parameters_after"]!.GetValue<long>());
            double flops = report["inference_flops_relative"]!.GetValue<double>();
            Assert.InRange(flops, 0.5, 0.9);   // a quarter of the heads, a third of the FFN neurons
            Assert.True(report["estimation_seconds"]!.GetValue<double>() > 0);

            model.eval();
            using var tuned = Logits(model);
            var outputs = FineTuneJob.SaveOutputs(model, tuner, dir, Fixtures.Model("bert-tiny"));
            // adapter_config.json: the surviving modules by full name, their ranks in rank_pattern, alpha keeping the scale.
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(outputs["adapter"], "adapter_config.json")))!;
            Assert.Equal(tuner.Lora.Modules.Select(m => m.Name), config["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
            foreach (var m in tuner.Lora.Modules.Where(m => m.Adapter.Rank != 8))
            {
                Assert.Equal(m.Adapter.Rank, config["rank_pattern"]![m.Name]!.GetValue<int>());
                Assert.Equal(2.0 * m.Adapter.Rank, config["alpha_pattern"]![m.Name]!.GetValue<double>(), 1e-9);
            }
            // The base + light_peft.json (pruning replayed, adapter merged) and model/ both reproduce the tuned logits.
            using (var merged = MethodArtifacts.LoadWithArtifact(Fixtures.Model("bert-tiny"), dir, out _))
            {
                merged.eval();
                using var logits = Logits(merged);
                Assert.True(MaxAbsDiff(tuned, logits) <= 1e-5);
            }
            using (var reloaded = PretrainedModel.Load(outputs["model"]))
            {
                reloaded.eval();
                Assert.All(reloaded.Layers, l => Assert.Equal(3, l.Attention.NumHeads));
                using var logits = Logits(reloaded);
                Assert.True(MaxAbsDiff(tuned, logits) <= 1e-5);
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void TheEstimateStagePrunesNothingAndWritesItsFindings()
    {
        string dir = Fixtures.TempDirectory("lightpeft-estimate");
        try
        {
            torch.random.manual_seed(2);
            using var model = Load("gpt2-tiny");
            using var tuner = new LightPeftTuner(new LightPeftOptions { Stage = LightPeftStage.Estimate });
            new Trainer(model, tuner, TaskKind.CausalLM, Training(dir, 8)).Run(new SyntheticBatches(TaskKind.CausalLM, 211, 32, 8));
            Assert.False(tuner.Pruned);
            Assert.All(model.Layers, l => Assert.Equal(4, l.Attention.NumHeads));
            Assert.Equal(8, tuner.Lora.Modules.Count);
            model.eval();
            using var tuned = Logits(model);
            var outputs = FineTuneJob.SaveOutputs(model, tuner, dir, Fixtures.Model("gpt2-tiny"));
            var written = LightPeftEstimate.Load(outputs["light_peft_estimate"]);
            Assert.Equal(8, written.EstimationSteps);
            Assert.Equal(4, written.ScoredSteps);
            Assert.Equal(2, written.HeadMasks.Length);
            Assert.Equal(128, written.Plan.RemovedNeurons.Sum(n => n.Length));   // would remove ⌊384/3⌋
            // 8 modules: ⌊0.75 · 8⌋ = 6 dropped by score; the 2 kept have 16 ranks, 8 survive.
            Assert.Equal(8, written.Plan.DroppedModules.Length + written.Plan.KeptRanks.Count);
            Assert.True(written.Plan.DroppedModules.Length >= 6);
            Assert.Equal(8, written.Plan.KeptRanks.Values.Sum(r => r.Length));
            Assert.Empty(LightPeftReader.Instance.Locate(dir));   // no adapter for a pruned base: model/ is the output
            using var reloaded = PretrainedModel.Load(outputs["model"]);
            reloaded.eval();
            using var logits = Logits(reloaded);
            double diff = MaxAbsDiff(tuned, logits);
            output.WriteLine($"estimate stage: model/ (masks folded into the output projections) vs tuned: {diff:E2}");
            Assert.True(diff <= 1e-5);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void DroppedLoraModulesLeaveTheAdapterAndItsConfig()
    {
        string dir = Fixtures.TempDirectory("lora-drop");
        try
        {
            torch.random.manual_seed(6);
            using var model = Load("bert-tiny");
            model.eval();
            using var lora = new LoraTuner(new LoraOptions { TargetModules = ["query", "value"] });
            lora.Attach(model);
            using (no_grad())
                foreach (var m in lora.Modules) { using var b = randn(m.Adapter.LoraB.shape) * 0.2; m.Adapter.LoraB.copy_(b); }
            string dropped = lora.Modules[1].Name;
            var layer = lora.Modules[1].Layer;
            lora.DropModules([dropped]);
            Assert.Null(layer.Adapter);
            Assert.Equal(3, lora.Modules.Count);
            Assert.DoesNotContain(lora.TrainableParameters(), p => p.Name.StartsWith(dropped + ".", StringComparison.Ordinal));
            Assert.Throws<ArgumentException>(() => lora.DropModules([dropped]));
            using var tuned = Logits(model);
            lora.SaveAdapter(dir);
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
            Assert.Equal(lora.Modules.Select(m => m.Name), config["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
            using var fresh = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            fresh.eval();
            using var loaded = LoraTuner.LoadAdapter(fresh, dir);
            Assert.Equal(3, loaded.Modules.Count);
            using var logits = Logits(fresh);
            Assert.True(MaxAbsDiff(tuned, logits) <= 1e-6);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
