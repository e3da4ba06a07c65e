using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tests.Support;
using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.Masking;
using SparseTune.Tuners.Pst;
using Xunit;
using Xunit.Abstractions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Tests.Tuners;

public class PstTests(ITestOutputHelper output)
{
    static float[] Flat(Tensor t) => t.detach().to_type(ScalarType.Float32).reshape(-1).data<float>().ToArray();

    static void AssertClose(float[] expected, Tensor actual, double tolerance, string what)
    {
        float[] got = Flat(actual);
        Assert.Equal(expected.Length, got.Length);
        for (int i = 0; i < got.Length; i++)
            Assert.True(Math.Abs(got[i] - expected[i]) <= tolerance, $"{what}[{i}]: expected {expected[i]}, got {got[i]}");
    }

    static void Set(Tensor target, float[] values)
    {
        using var _ = no_grad();
        using var source = tensor(values, target.shape);
        target.copy_(source);
    }

    /// <summary>Autograd through the original's formulas, with the reusable straight-through mask: the reference for the fused layer.</summary>
    static Tensor ReferenceForward(TunableLinear layer, PstAdapter adapter, Tensor x, Tensor keep)
    {
        Tensor effective = layer.weight + adapter.U.matmul(adapter.V) * adapter.UpdateScale;
        Tensor score = effective.abs() + adapter.A.matmul(adapter.B) * adapter.LowRankScoreScale
            + (adapter.R.unsqueeze(1) + adapter.C.unsqueeze(0)) * adapter.StructuredScoreScale;
        Tensor mask = StraightThroughMask.apply(score, keep);
        return F.linear(x, effective * mask, layer.bias);
    }

    [Fact]
    public void GradientsOfATwoByThreeLayerEqualTheHandComputedStraightThroughValues()
    {
        // W' = W + U·V = [[0.7, −0.9, −0.2], [−0.4, 0.75, −0.4]]
        // S  = |W'| + A·B + R·1ᵀ + 1·Cᵀ = [[0.9, 1.1, 0.5], [0.4, 0.45, 0.7]] → at s = 0.5 (prune 3) M = [[1, 1, 0], [0, 0, 1]]
        using var layer = new TunableLinear(3, 2, hasBias: true);
        Set(layer.weight, [0.5f, -1.0f, 0.2f, -0.3f, 0.8f, -0.6f]);
        Set(layer.bias!, [0.1f, -0.1f]);
        using var adapter = new PstAdapter(layer, new PstOptions { UpdateRank = 1, ImportanceRank = 1, InitialSparsity = 0.5, FinalSparsity = 0.5 });
        layer.Adapter = adapter;
        Set(adapter.U, [1.0f, -0.5f]);
        Set(adapter.V, [0.2f, 0.1f, -0.4f]);
        Set(adapter.A, [0.5f, 1.0f]);
        Set(adapter.B, [0.2f, -0.4f, 0.6f]);
        Set(adapter.R, [0.1f, -0.2f]);
        Set(adapter.C, [0.0f, 0.3f, -0.1f]);
        adapter.InvalidateMask();

        using (var score = adapter.Score(layer)) AssertClose([0.9f, 1.1f, 0.5f, 0.4f, 0.45f, 0.7f], score, 1e-6, "S");
        Assert.Equal(new float[] { 1, 1, 0, 0, 0, 1 }, Flat(adapter.Mask(layer)));

        // L = Σ y ⊙ c with x = [1, 2, −1], c = [0.5, −1.5]: G = cᵀx = [[0.5, 1, −0.5], [−1.5, −3, 1.5]].
        using var x = tensor(new float[] { 1, 2, -1 }, [1, 3]).requires_grad_(true);
        using var c = tensor(new float[] { 0.5f, -1.5f }, [1, 2]);
        using var y = layer.forward(x);
        AssertClose([0.7f * 1 - 0.9f * 2 + 0.1f, -0.4f * -1 - 0.1f], y, 1e-6, "y");  // (W' ⊙ M) x + b
        using (var loss = (y * c).sum()) loss.backward();

        // ∂L/∂S = G ⊙ W' = [[0.35, −0.9, 0.1], [0.6, −2.25, −0.6]]
        // ∂L/∂W' = G ⊙ M + ∂L/∂S ⊙ sign(W') = [[0.85, 1.9, −0.1], [−0.6, −2.25, 2.1]]
        AssertClose([0.40f, -1.185f], adapter.U.grad!, 1e-6, "∂L/∂U");          // ∂L/∂W' Vᵀ
        AssertClose([1.15f, 3.025f, -1.15f], adapter.V.grad!, 1e-6, "∂L/∂V");   // Uᵀ ∂L/∂W'
        AssertClose([0.49f, 0.66f], adapter.A.grad!, 1e-6, "∂L/∂A");            // ∂L/∂S Bᵀ
        AssertClose([0.775f, -2.7f, -0.55f], adapter.B.grad!, 1e-6, "∂L/∂B");   // Aᵀ ∂L/∂S
        AssertClose([-0.45f, -2.25f], adapter.R.grad!, 1e-6, "∂L/∂R");          // row sums of ∂L/∂S
        AssertClose([0.95f, -3.15f, -0.5f], adapter.C.grad!, 1e-6, "∂L/∂C");    // column sums of ∂L/∂S
        AssertClose([0.35f, -0.45f, 0.6f], x.grad!, 1e-6, "∂L/∂x");             // c (W' ⊙ M)
        Assert.Null(layer.weight.grad);
        Assert.Null(layer.bias!.grad);
    }

    [Fact]
    public void FusedLayerMatchesAutogradThroughTheOriginalFormulas()
    {
        torch.random.manual_seed(5);
        using var layer = new TunableLinear(7, 9);
        var options = new PstOptions { UpdateRank = 2, ImportanceRank = 3, UpdateScale = 0.7, LowRankScoreScale = 1.3, StructuredScoreScale = 0.3, InitialSparsity = 0.6, FinalSparsity = 0.6 };
        using var adapter = new PstAdapter(layer, options);
        layer.Adapter = adapter;
        using (no_grad())
            foreach (var (_, p) in adapter.TrainableParameters()) p.normal_(0, 0.3);   // every term non-zero
        adapter.InvalidateMask();
        using var x = randn(2, 4, 7);
        using var c = randn(2, 4, 9);

        Dictionary<string, float[]> Gradients(Func<Tensor, Tensor> forward, out float[] inputGrad, out float[] value)
        {
            using var input = x.clone().requires_grad_(true);
            foreach (var (_, p) in adapter.TrainableParameters()) p.grad = null;
            using var y = forward(input);
            value = Flat(y);
            using (var loss = (y * c).sum()) loss.backward();
            inputGrad = Flat(input.grad!);
            return adapter.TrainableParameters().ToDictionary(p => p.Name, p => Flat(p.Parameter.grad!));
        }

        var keep = adapter.Mask(layer);
        Assert.Equal(TopKMask.KeepCount(63, 0.6), keep.sum().item<long>());
        var fused = Gradients(input => layer.forward(input), out var fusedInput, out var fusedValue);
        var reference = Gradients(input => { using var scope = NewDisposeScope(); return ReferenceForward(layer, adapter, input, keep).MoveToOuterDisposeScope(); }, out var refInput, out var refValue);

        double worst = 0;
        void Compare(string what, float[] a, float[] b)
        {
            double scale = Math.Max(1e-6, b.Max(Math.Abs));
            double error = a.Zip(b, (p, q) => Math.Abs(p - q)).Max() / scale;
            worst = Math.Max(worst, error);
            Assert.True(error <= 1e-5, $"{what}: relative error {error:E2}");
        }
        Compare("y", fusedValue, refValue);
        Compare("∂L/∂x", fusedInput, refInput);
        foreach (var name in reference.Keys) Compare("∂L/∂" + name, fused[name], reference[name]);
        output.WriteLine($"max relative difference fused vs autograd: {worst:E2}");
    }

    /// <summary>Forwards every hook to a PST tuner and, after each training forward, checks the masks that forward used.</summary>
    sealed class MaskProbe(PstTuner inner, ITestOutputHelper output) : Tuner
    {
        public readonly List<(int Step, double Sparsity)> Seen = [];
        public override string Name => inner.Name;
        public override object Options => inner.Options;
        public override bool ModifiesBaseWeights => inner.ModifiesBaseWeights;
        public override void Attach(TransformerModel model) => inner.Attach(model);
        public override IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() => inner.TrainableParameters();
        public override void BeforeStep(TrainingStepContext context) => inner.BeforeStep(context);
        public override bool AfterOptimizerStep(TrainingStepContext context) => inner.AfterOptimizerStep(context);
        public override void Finish(TransformerModel model) => inner.Finish(model);

        // Runs between the forward and backward of each micro-batch: the cached masks are the ones just used.
        public override Tensor? ExtraLoss(TrainingStepContext context)
        {
            double expected = inner.Options.Schedule(context.TotalSteps).At(context.Step);
            Assert.Equal(expected, inner.CurrentSparsity);
            foreach (var m in inner.Modules)
            {
                long kept = m.Adapter.Mask(m.Layer).sum().item<long>();
                Assert.Equal(TopKMask.KeepCount(m.Layer.weight.numel(), expected), kept);
            }
            Seen.Add((context.Step, expected));
            output.WriteLine($"step {context.Step}: s = {expected:0.0000}, query keeps {inner.Modules[0].Adapter.Mask(inner.Modules[0].Layer).sum().item<long>()} of 2304");
            return null;
        }
    }

    [Fact]
    public void MaskDensityFollowsTheScheduleAtEveryStepOfATrainingRun()
    {
        string dir = Fixtures.TempDirectory("pst-density");
        try
        {
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            var options = new PstOptions { InitialSparsity = 0.1, FinalSparsity = 0.7, WarmupRatio = 0.2, CooldownRatio = 0.2 };
            using var tuner = new PstTuner(options);
            var probe = new MaskProbe(tuner, output);
            var data = new SyntheticBatches(TaskKind.Classification, 223, 16, 4);
            new Trainer(model, probe, TaskKind.Classification, new TrainingOptions { MaxSteps = 10, GradientAccumulation = 2, LearningRate = 1e-2, OutputDirectory = dir, EvaluateBaseline = false }).Run(data);

            // Two micro-batches per step; warm-up 2 steps at 0.1, the cubic over steps 3…8, then 0.7.
            Assert.Equal(20, probe.Seen.Count);
            Assert.All(probe.Seen.Where(s => s.Step <= 2), s => Assert.Equal(0.1, s.Sparsity));
            Assert.Equal(0.7 - 0.6 * Math.Pow(1 - 1.0 / 6, 3), probe.Seen.First(s => s.Step == 3).Sparsity, 12);
            Assert.Equal(0.7, probe.Seen.Last().Sparsity);
            var distinct = probe.Seen.Select(s => s.Sparsity).Distinct().ToList();
            Assert.Equal(distinct.Order(), distinct);   // never decreases
            Assert.True(distinct.Count >= 6, $"only {distinct.Count} sparsity levels seen");
            Assert.True(tuner.Finished);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void FinishMergesTheUpdateAndLeavesExactlyTheFinalSparsityInAPlainModel()
    {
        torch.random.manual_seed(3);
        using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        using var baseModel = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        var options = new PstOptions { FinalSparsity = 0.8 };
        using var tuner = new PstTuner(options);
        tuner.Attach(model);
        using (no_grad())
            foreach (var m in tuner.Modules)
                foreach (var (_, p) in m.Adapter.TrainableParameters()) p.normal_(0, 0.05);   // as if trained
        tuner.SetSparsity(options.FinalSparsity);
        model.eval();
        var data = new SyntheticBatches(TaskKind.Classification, 223, 8, 8);
        using var batch = data.Build(data.EpochBatches(0)[0]);
        using var before = model.Forward(batch.InputIds, batch.AttentionMask);
        // What Finish must produce, from the adapter's own pieces: (W + U·V) ⊙ M.
        var expected = tuner.Modules.ToDictionary(m => m.Name, m =>
        {
            using var _ = no_grad();
            using var keep = m.Adapter.KeepMask(m.Layer, options.FinalSparsity);
            return (m.Layer.weight + m.Adapter.U.matmul(m.Adapter.V)) * keep;
        });

        tuner.Finish(model);

        Assert.Equal(12, tuner.Modules.Count);
        foreach (var m in tuner.Modules)
        {
            Assert.Null(m.Layer.Adapter);
            long numel = m.Layer.weight.numel();
            Assert.Equal(TopKMask.PruneCount(numel, 0.8), MaskedWeights.CountZeros(m.Layer.weight));
            Assert.True(m.Layer.weight.allclose(expected[m.Name], rtol: 0, atol: 1e-6), $"{m.Name}: W ≠ (W + UV) ⊙ M");
        }
        using var after = model.Forward(batch.InputIds, batch.AttentionMask);
        Assert.True(after.Logits.allclose(before.Logits, rtol: 0, atol: 1e-5), "the plain pruned model computes differently from the masked adapters");
        // Only the targeted weights changed; the state dict is still the Hugging Face one.
        var baseState = baseModel.state_dict();
        var targeted = tuner.Modules.Select(m => m.Name + ".weight").ToHashSet();
        foreach (var (name, value) in model.state_dict())
            if (!targeted.Contains(name)) Assert.True(value.allclose(baseState[name], rtol: 0, atol: 0), $"{name} changed");
        Assert.Equal(baseState.Keys.Order(), model.state_dict().Keys.Order());
        foreach (var t in expected.Values) t.Dispose();
    }

    [Fact]
    public void AFusedQkvLayerComputesAsThreeSeparatePstLayersEachWithItsOwnFactors()
    {
        // The original's GPT-2 has q, k and v as separate nn.Linear layers, each a SparseLinear with its own U, V, A, B, R, C
        // and its own top-k; the fused (3m, in) c_attn must compute exactly that: outputs and every factor's gradient.
        torch.random.manual_seed(11);
        const int inFeatures = 5, rows = 4;
        var options = new PstOptions { UpdateRank = 2, ImportanceRank = 2, InitialSparsity = 0.5, FinalSparsity = 0.5, StructuredScoreScale = 0.5 };
        using var fused = new TunableLinear(inFeatures, 3 * rows);
        using var fusedAdapter = new PstAdapter(fused, options, ["q", "k", "v"]);
        fused.Adapter = fusedAdapter;
        Assert.Equal(["q", "k", "v"], fusedAdapter.Groups.Select(g => g.Name));
        Assert.Equal(3 * PstAdapter.ParameterCount(rows, inFeatures, 2, 2), fusedAdapter.TrainableParameters().Sum(p => p.Parameter.numel()));
        Assert.Equal(PstAdapter.ParameterCount(3 * rows, inFeatures, 2, 2, groups: 3), fusedAdapter.TrainableParameters().Sum(p => p.Parameter.numel()));
        Assert.Contains(fusedAdapter.TrainableParameters(), p => p.Name == "k.mask_scores_C");
        using (no_grad())
            foreach (var (_, p) in fusedAdapter.TrainableParameters()) p.normal_(0, 0.4);   // every block different, every term non-zero
        fusedAdapter.InvalidateMask();

        var separate = new List<(TunableLinear Layer, PstAdapter Adapter)>();
        for (int g = 0; g < 3; g++)
        {
            var layer = new TunableLinear(inFeatures, rows);
            using (no_grad())
            {
                layer.weight.copy_(fused.weight.narrow(0, g * rows, rows));
                layer.bias!.copy_(fused.bias!.narrow(0, g * rows, rows));
            }
            var adapter = new PstAdapter(layer, options);
            layer.Adapter = adapter;
            using (no_grad())
                foreach (var (own, from) in adapter.Groups[0].TrainableParameters().Zip(fusedAdapter.Groups[g].TrainableParameters()))
                    own.Parameter.copy_(from.Parameter);
            adapter.InvalidateMask();
            separate.Add((layer, adapter));
        }

        using var x = randn(3, inFeatures);
        using var c = randn(3, 3 * rows);
        using (var y = fused.forward(x))
        {
            using var expected = cat(separate.Select(s => s.Layer.forward(x)).ToList(), 1);
            Assert.True(y.allclose(expected, rtol: 0, atol: 1e-6), "the fused layer differs from three separate PST layers");
            using var loss = (y * c).sum();
            loss.backward();
        }
        for (int g = 0; g < 3; g++)
        {
            var (layer, adapter) = separate[g];
            using (var y = layer.forward(x))
            using (var loss = (y * c.narrow(1, g * rows, rows)).sum())
                loss.backward();
            using var ownMask = adapter.Mask(layer).to_type(ScalarType.Int32);
            using var fusedBlock = fusedAdapter.Mask(fused).narrow(0, g * rows, rows).to_type(ScalarType.Int32);
            Assert.True(ownMask.equal(fusedBlock).all().item<bool>(), $"block {g}: the mask differs from the separate layer's");
            foreach (var (own, from) in adapter.Groups[0].TrainableParameters().Zip(fusedAdapter.Groups[g].TrainableParameters()))
                Assert.True(from.Parameter.grad!.allclose(own.Parameter.grad!, rtol: 1e-5, atol: 1e-6), $"{from.Name}: gradient differs from the separate layer's");
        }
        foreach (var (layer, adapter) in separate) { layer.Adapter = null; adapter.Dispose(); layer.Dispose(); }
    }

    [Fact]
    public void TrainableParametersAreTheSmallFactorsNotAScoreMatrix()
    {
        using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        using var tuner = new PstTuner(new PstOptions());
        tuner.Attach(model);
        var trainable = tuner.TrainableParameters().ToList();
        // bert-tiny: hidden 48, intermediate 96, 2 layers; per matrix (out + in)·(r + r' + 1) = (out + in)·17.
        // q, k, v, attention.output: 4 × 96·17; intermediate (96, 48) and output (48, 96): 2 × 144·17 → 11,424 per layer.
        long pst = trainable.Where(t => !ModuleSelection.IsUnder(t.Name, model.HeadModuleNames)).Sum(t => t.Parameter.numel());
        Assert.Equal(2 * (4 * 96 * 17 + 2 * 144 * 17), pst);
        Assert.Equal(22_848, pst);
        // The head trains in full: pooler 48·48 + 48, classifier 48·3 + 3.
        Assert.Equal(2_499, trainable.Sum(t => t.Parameter.numel()) - pst);
        Assert.Equal(6 * 12 + 4, trainable.Count);
        Assert.All(trainable, t => Assert.True(t.Parameter.requires_grad, t.Name));
        Assert.Contains(trainable, t => t.Name == "bert.encoder.layer.0.attention.self.query.mask_scores_A");
        Assert.Equal(trainable.Sum(t => t.Parameter.numel()), model.parameters().Where(p => p.requires_grad).Sum(p => p.numel()) + pst);

        // Movement pruning would train one score per weight: 36,864 here. Tiny 48-wide matrices make rank 8 look big (62%);
        // at BERT-base's shapes (768/3072, 12 layers) the same ranks are 3.3% of the score matrices.
        long scores = tuner.Modules.Sum(m => m.Layer.weight.numel());
        Assert.Equal(36_864, scores);
        Assert.True(pst < scores);
        long baseLayer = 4 * PstAdapter.ParameterCount(768, 768, 8, 8) + PstAdapter.ParameterCount(3072, 768, 8, 8) + PstAdapter.ParameterCount(768, 3072, 8, 8);
        long baseScores = 4 * 768 * 768 + 2 * 768 * 3072;
        output.WriteLine($"bert-tiny: {pst} PST vs {scores} scores; BERT-base: {12 * baseLayer:N0} vs {12 * baseScores:N0} ({100.0 * baseLayer / baseScores:0.00}%)");
        Assert.Equal(2_820_096, 12 * baseLayer);
        Assert.True(baseLayer < 0.04 * baseScores);
        foreach (var m in tuner.Modules)
            Assert.Equal(PstAdapter.ParameterCount(m.Layer.OutFeatures, m.Layer.InFeatures, 8, 8), m.Adapter.TrainableParameters().Sum(p => p.Parameter.numel()));
    }

    [Fact]
    public void ShortRunLowersTheLossOnBertTiny()
    {
        string dir = Fixtures.TempDirectory("pst-loss");
        try
        {
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            using var tuner = new PstTuner(new PstOptions { FinalSparsity = 0.5 });
            var data = new SyntheticBatches(TaskKind.Classification, 223, 32, 8);
            var result = new Trainer(model, tuner, TaskKind.Classification, new TrainingOptions { MaxSteps = 24, LearningRate = 1e-2, WeightDecay = 0, OutputDirectory = dir, EvaluateBaseline = false }).Run(data);
            double early = result.LossCurve.Take(4).Average(l => l.Loss), late = result.LossCurve.TakeLast(4).Average(l => l.Loss);
            output.WriteLine($"loss {early:0.0000} → {late:0.0000}; {tuner.Summary()}");
            Assert.True(late < early - 0.05, $"loss did not fall: {early} → {late}");
            Assert.Equal(22_848 + 2_499, result.TrainableParameters);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void RegistryRunOnGpt2PrunesEachProjectionAndTheSparseFileRebuildsTheModel()
    {
        string dir = Fixtures.TempDirectory("pst-gpt2");
        try
        {
            using var model = PretrainedModel.Load(Fixtures.Model("gpt2-tiny"));
            using var tuner = MethodRegistry.CreateTuner("pst");
            var pst = Assert.IsType<PstTuner>(tuner);
            Assert.Equal(new PstOptions(), pst.Options);
            var data = new SyntheticBatches(TaskKind.CausalLM, 211, 16, 4);
            var result = new Trainer(model, tuner, TaskKind.CausalLM, new TrainingOptions { MaxSteps = 6, LearningRate = 1e-2, OutputDirectory = dir, EvaluateBaseline = false }).Run(data);
            Assert.True(result.LossCurve.All(l => double.IsFinite(l.Loss)));
            Assert.True(tuner.ModifiesBaseWeights);
            Assert.Empty(model.HeadModuleNames);   // causal LM: nothing but the PST tensors trains

            // Default sparsity 0.9, per matrix, and per q / k / v block of the fused c_attn.
            Assert.Equal(["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"], pst.Modules.Take(4).Select(m => m.Name[(m.Name.IndexOf('.', "transformer.h.".Length) + 1)..]));
            foreach (var m in pst.Modules)
            {
                var weight = m.Layer.weight;
                if (m.Name.EndsWith("c_attn"))
                {
                    Assert.Equal(3, m.Adapter.MaskGroups);
                    Assert.Equal(["q", "k", "v"], m.Adapter.Groups.Select(g => g.Name));
                    Assert.Equal(PstAdapter.ParameterCount(weight.shape[0], weight.shape[1], 8, 8, groups: 3), m.Adapter.TrainableParameters().Sum(p => p.Parameter.numel()));
                    long width = weight.shape[0] / 3;
                    for (int block = 0; block < 3; block++)
                        Assert.Equal(TopKMask.PruneCount(width * weight.shape[1], 0.9), MaskedWeights.CountZeros(weight.narrow(0, block * width, width)));
                }
                else Assert.Equal(TopKMask.PruneCount(weight.numel(), 0.9), MaskedWeights.CountZeros(weight));
            }

            tuner.SaveArtifacts(model, dir);
            using var rebuilt = PretrainedModel.Load(Fixtures.Model("gpt2-tiny"));
            SparseMatrixFile.Apply(rebuilt, Path.Combine(dir, PstTuner.SparseWeightsFileName));
            var tuned = model.state_dict();
            foreach (var (name, value) in rebuilt.state_dict())
                Assert.True(value.allclose(tuned[name], rtol: 0, atol: 0), $"{name} differs after applying {PstTuner.SparseWeightsFileName}");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void LlamaLayersWithoutBiasTrainAndPruneToTheFinalSparsity()
    {
        string dir = Fixtures.TempDirectory("pst-llama");
        try
        {
            using var model = PretrainedModel.Load(Fixtures.Model("llama-tiny"));
            using var tuner = new PstTuner(new PstOptions { FinalSparsity = 0.75 });
            var data = new SyntheticBatches(TaskKind.CausalLM, model.Config.VocabSize, 8, 4);
            var result = new Trainer(model, tuner, TaskKind.CausalLM, new TrainingOptions { MaxSteps = 3, LearningRate = 1e-2, OutputDirectory = dir, EvaluateBaseline = false }).Run(data);
            Assert.True(result.LossCurve.All(l => double.IsFinite(l.Loss)));
            Assert.Equal(7 * model.NamedLinears().Count(l => l.Name.EndsWith("q_proj")), tuner.Modules.Count);   // q, k, v, o, gate, up, down
            Assert.All(tuner.Modules, m =>
            {
                Assert.Null(m.Layer.bias);
                Assert.Null(m.Layer.Adapter);
                Assert.Equal(TopKMask.PruneCount(m.Layer.weight.numel(), 0.75), MaskedWeights.CountZeros(m.Layer.weight));
            });
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void ResumedRunMatchesTheUninterruptedRun()
    {
        var options = new TrainingOptions { MaxSteps = 8, LearningRate = 5e-3, EvaluateBaseline = false, GradientAccumulation = 2, SaveEvery = 3 };
        var pst = new PstOptions { FinalSparsity = 0.5, WarmupRatio = 0.1, CooldownRatio = 0.1 };
        string full = Fixtures.TempDirectory("pst-resume-full"), interrupted = Fixtures.TempDirectory("pst-resume-part");
        double[] Run(TrainingOptions o, IProgress<TrainingProgress>? progress = null)
        {
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            using var tuner = new PstTuner(pst);
            var data = new SyntheticBatches(TaskKind.Classification, 223, 32, 4);
            return new Trainer(model, tuner, TaskKind.Classification, o) { Progress = progress }.Run(data).LossCurve.Select(l => l.Loss).ToArray();
        }
        try
        {
            double[] reference = Run(options with { OutputDirectory = full });
            Assert.Throws<OperationCanceledException>(() => Run(options with { OutputDirectory = interrupted }, new CrashAtStep(7)));
            double[] resumed = Run(options with { OutputDirectory = interrupted, ResumeFrom = Path.Combine(interrupted, "checkpoint") });
            output.WriteLine($"reference {string.Join(", ", reference)}\nresumed   {string.Join(", ", resumed)}");
            Assert.Equal(reference[6..], resumed[6..]);
        }
        finally { Directory.Delete(full, true); Directory.Delete(interrupted, true); }
    }

    [Fact]
    public void OptionsReportEveryProblemAtOnce()
    {
        var bad = new PstOptions { FinalSparsity = 1.2, InitialSparsity = -0.1, UpdateRank = 0, ImportanceRank = 0, WarmupRatio = 0.8, CooldownRatio = 0.5, LowRankScoreScale = double.NaN };
        var problems = bad.Problems();
        output.WriteLine(string.Join("\n", problems));
        Assert.Equal(6, problems.Count);
        Assert.Throws<ArgumentException>(() => MethodRegistry.CreateTuner("pst", bad));
        Assert.Empty(new PstOptions().Problems());
    }
}
