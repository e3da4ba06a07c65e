using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tests.Support;
using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.Dsee;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static SparseTune.Tests.Support.LogitChecks;
using static TorchSharp.torch;

namespace SparseTune.Tests.Tuners;

public class DseeTests(ITestOutputHelper output)
{
    // ---- helpers ----------------------------------------------------------------------------------------------

    static TransformerModel LoadEval(string family)
    {
        var model = PretrainedModel.Load(Fixtures.Model(family));
        model.eval();
        return model;
    }

    static DseeTuner Attach(TransformerModel model, DseeOptions options)
    {
        var tuner = (DseeTuner)MethodRegistry.CreateTuner("dsee", options);
        tuner.Attach(model);
        tuner.ChooseSupports();
        return tuner;
    }

    /// <summary>Gives B and S non-zero values, as after some training.</summary>
    static void AsIfTrained(DseeTuner tuner, int seed = 3)
    {
        using var generator = new Generator((ulong)seed);
        using var _ = no_grad();
        foreach (var m in tuner.Modules)
            foreach (var b in m.Adapter.Blocks)
            {
                using var bValues = randn(b.B.shape, generator: generator) * 0.2;
                b.B.copy_(bValues);
                using var sValues = randn(b.Values.shape, generator: generator) * 0.2;
                b.Values.copy_(sValues);
            }
    }

    /// <summary>Pool 1 (key, attention output, FFN) and pool 2 (query, value) weights, as views into the model.</summary>
    static (List<Tensor> Backbone, List<Tensor> QueryValue) Pools(TransformerModel model)
    {
        var backbone = new List<Tensor>();
        var queryValue = new List<Tensor>();
        foreach (var view in model.Layers)
        {
            var a = view.Attention;
            if (a.FusedQkv is { } fused)
            {
                long w = fused.Layer.OutFeatures / 3;
                queryValue.Add(fused.Layer.weight.narrow(0, 0, w));
                backbone.Add(fused.Layer.weight.narrow(0, w, w));
                queryValue.Add(fused.Layer.weight.narrow(0, 2 * w, w));
            }
            else
            {
                queryValue.Add(a.Query!.Layer.weight);
                backbone.Add(a.Key!.Layer.weight);
                queryValue.Add(a.Value!.Layer.weight);
            }
            backbone.Add(a.Output.Layer.weight);
            backbone.AddRange(view.FeedForward.Linears.Select(l => (Tensor)l.Layer.weight));
        }
        return (backbone, queryValue);
    }

    static long Zeros(IEnumerable<Tensor> weights) => weights.Sum(w => { using var z = w.eq(0).sum(); return z.item<long>(); });

    // ---- the update ---------------------------------------------------------------------------------------------

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void AnUntrainedUpdateLeavesTheLogitsBitIdentical(string family)
    {
        using var model = LoadEval(family);
        using var ids = FixedIds();
        using var before = Logits(model, ids);
        using var tuner = Attach(model, new DseeOptions());
        Assert.All(tuner.Modules, m => Assert.NotNull(m.Layer.Adapter));
        Assert.All(tuner.Modules.SelectMany(m => m.Adapter.Blocks), b => Assert.Equal(16, b.Support.Count));
        using var after = Logits(model, ids);
        Assert.Equal(0.0, MaxAbsDiff(before, after));
    }

    [Theory]
    [InlineData("bert-tiny", 8707)]    // 4 matrices 48×48: 16·(48 + 48) + 16 = 1552 each; the head: classifier 48·3 + 3, pooler 48·48 + 48
    [InlineData("gpt2-tiny", 6208)]    // c_attn's q and v blocks, 48×48 each, 2 layers; the LM head is tied and frozen
    [InlineData("llama-tiny", 7232)]   // q_proj 64→64: 2064, v_proj 64→32 (2 kv heads): 1552; 2 layers
    public void TheTrainableCountIsRankTimesInPlusOutPlusNPerMatrixPlusTheHead(string family, long expected)
    {
        using var model = LoadEval(family);
        using var tuner = Attach(model, new DseeOptions());
        long formula = tuner.Modules.SelectMany(m => m.Adapter.Blocks).Sum(b => 16 * (b.InFeatures + b.Rows) + 16)
            + model.HeadModuleNames.Where(_ => model.Head == ModelHead.SequenceClassification)
                .Sum(h => model.named_parameters().Where(p => p.name.StartsWith(h + ".", StringComparison.Ordinal)).Sum(p => p.parameter.numel()));
        output.WriteLine($"{family}: trainable {tuner.TrainableCount()}, formula {formula}, all {model.ParameterCount()}");
        Assert.Equal(expected, formula);
        Assert.Equal(expected, tuner.TrainableCount());
        Assert.Equal(expected, model.parameters().Where(p => p.requires_grad).Sum(p => p.numel()) + tuner.Modules.Sum(m => m.Adapter.TrainableParameters().Sum(p => p.Parameter.numel())));
    }

    [Fact]
    public void TheScaleAppliesToBothPartsAndSTrainsOnlyOnItsSupport()
    {
        // W (2, 3); r = 1, alpha = 4 → scaling 4. A = [1, 0, 2], B = [0.5, −1]ᵀ, Ω = {(0, 1), (1, 2)}, S there = [0.25, −0.5].
        // ΔW = 4·(B·A + S) = 4·[[0.5, 0.25, 1], [−1, 0, −2.5]] = [[2, 1, 4], [−4, 0, −10]].
        using var layer = new TunableLinear(3, 2, hasBias: true);
        using var adapter = new DseeAdapter(layer, [(QkvPart.Query, 0, 2)], rank: 1, alpha: 4, sparseEntries: 2);
        layer.Adapter = adapter;
        var block = adapter.Blocks[0];
        block.SetSupport([1, 5]);
        using (no_grad())
        {
            using var a = tensor(new float[] { 1, 0, 2 }, [1, 3]);
            block.A.copy_(a);
            using var b = tensor(new float[] { 0.5f, -1 }, [2, 1]);
            block.B.copy_(b);
            using var s = tensor(new float[] { 0.25f, -0.5f });
            block.Values.copy_(s);
        }
        using var delta = adapter.DeltaWeight(layer);
        Assert.Equal(new float[] { 2, 1, 4, -4, 0, -10 }, delta.data<float>().ToArray());

        // x = [1, 2, 3]: ΔW·x = [16, −34]; L = y·[1, 2] → ∂L/∂s = 4·[1·x₁, 2·x₂] = [8, 24].
        using var x = tensor(new float[] { 1, 2, 3 }, [1, 3]);
        using var c = tensor(new float[] { 1, 2 }, [1, 2]);
        using var y = layer.forward(x);
        using var plain = nn.functional.linear(x, layer.weight, layer.bias);
        using var added = (y - plain).detach();
        Assert.Equal(new float[] { 16, -34 }, added.data<float>().ToArray());
        using (var loss = (y * c).sum()) loss.backward();
        Assert.Equal(new float[] { 8, 24 }, block.Values.grad!.data<float>().ToArray());
        Assert.Equal([2L], block.Values.grad!.shape);   // gradients exist for the N support entries only
    }

    [Fact]
    public void AfterTrainingTheSparsePartIsZeroOutsideItsNEntries()
    {
        string dir = Fixtures.TempDirectory("dsee-support");
        try
        {
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            using var tuner = (DseeTuner)MethodRegistry.CreateTuner("dsee", new DseeOptions { Prune = DseePruning.None });
            new Trainer(model, tuner, TaskKind.Classification, new TrainingOptions { MaxSteps = 6, LearningRate = 5e-3, OutputDirectory = dir, EvaluateBaseline = false })
                .Run(new SyntheticBatches(TaskKind.Classification, 223, 32, 8));
            foreach (var m in tuner.Modules)
            {
                var block = m.Adapter.Blocks.Single();
                using var scope = NewDisposeScope();
                Tensor sparse = m.Adapter.DeltaWeight(m.Layer) - block.B.detach().matmul(block.A.detach()) * m.Adapter.Scaling;
                Tensor outside = sparse.reshape(-1).clone();
                outside.index_fill_(0, tensor(block.Support.ToArray()), 0);
                double onSupport = sparse.reshape(-1).index_select(0, tensor(block.Support.ToArray())).abs().min().item<float>();
                output.WriteLine($"{m.Name}: |Ω| = {block.Support.Count}, max |S| outside Ω = {outside.abs().max().item<float>():E2}, min |S| on Ω = {onSupport:E2}");
                Assert.Equal(16, block.Support.Count);
                Assert.True(outside.abs().max().item<float>() <= 1e-6, "S must be zero outside Ω");
                Assert.True(onSupport > 0, "every S value on Ω trained");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    // ---- the decomposition ------------------------------------------------------------------------------------

    /// <summary>W = L + S₀ (200×150): L of rank 2 with entries of size ≈ 0.1, S₀ sixty spikes of size 1–2.</summary>
    static (Tensor W, long[] Planted, Tensor Sizes) LowRankPlusSpikes()
    {
        using var generator = new Generator(17);
        Tensor low = randn(200, 2, generator: generator).matmul(randn(2, 150, generator: generator)) * (0.1 / Math.Sqrt(2));
        long[] planted = randperm(200 * 150, generator: generator).narrow(0, 0, 60).sort().Values.data<long>().ToArray();
        Tensor sizes = (rand(60, generator: generator) + 1) * (randint(0, 2, [60], generator: generator) * 2 - 1);
        Tensor spikes = zeros(200 * 150);
        spikes.index_copy_(0, tensor(planted), sizes);
        return (low + spikes.view(200, 150), planted, sizes);
    }

    [Fact]
    public void TheDecompositionRecoversPlantedSpikesOfALowRankMatrix()
    {
        using var scope = NewDisposeScope();
        var (w, planted, sizes) = LowRankPlusSpikes();
        using var start = new Generator(0);
        var (u, v, s) = GreBsmo.Decompose(w, rounds: 2, threshold: 0.01, start);   // fit rank 6 (1, then + 5)
        long[] support = GreBsmo.Support(s, 60).data<long>().ToArray();
        double recovered = (s.reshape(-1).index_select(0, tensor(planted)) - sizes).abs().max().item<float>();
        double residual = (w - u.matmul(v) - s).abs().max().item<float>();
        output.WriteLine($"2 rounds: fit rank {v.shape[0]}, |S| ≠ 0 at {s.ne(0).sum().item<long>()} of {s.numel()}, top-60 of |S| = the 60 spikes: {support.SequenceEqual(planted)}; max |S − S₀| on the spikes {recovered:E2}; max |W − UV − S| {residual:E2} (below the 0.01 threshold)");
        Assert.Equal(planted, support);
        Assert.Equal(support, GreBsmo.Support(s, 60, fallback: w).data<long>().ToArray());   // S has enough non-zeros: |W| plays no part
        // The values are partly absorbed by the rank-6 fit (|S − S₀| up to ≈ 1), but every spike keeps its sign.
        Assert.Equal(sizes.sign().data<float>().ToArray(), s.reshape(-1).index_select(0, tensor(planted)).sign().data<float>().ToArray());
        Assert.True(residual < 0.01 + 1e-6);

        // As the rank grows by 5 per round the fit starts to absorb spikes (each is a rank-1 matrix), but the largest
        // entries of S stay planted ones: N = 12 out of 60 for 1 to 6 rounds (fit ranks 1 to 26).
        foreach (int rounds in new[] { 1, 3, 6 })
        {
            using var again = new Generator(0);
            var (_, vr, sr) = GreBsmo.Decompose(w, rounds, 0.01, again);
            long[] top = GreBsmo.Support(sr, 12).data<long>().ToArray();
            output.WriteLine($"{rounds} rounds: fit rank {vr.shape[0]}, top-12 of |S| among the spikes: {top.Intersect(planted).Count()}/12, top-60: {GreBsmo.Support(sr, 60).data<long>().ToArray().Intersect(planted).Count()}/60");
            Assert.Subset(planted.ToHashSet(), top.ToHashSet());
        }
    }

    [Fact]
    public void TheSupportTakesSsNonZerosFirstThenTheLargestWeights()
    {
        // S non-zero at 1, 4, 7 (3 < N = 5): Ω = those, then the two largest |W| among the other entries (0 and 6).
        using var s = tensor(new float[] { 0, 0.5f, 0, 0, -2, 0, 0, 0.1f, 0 }, [3, 3]);
        using var w = tensor(new float[] { -9, 1, 3, 0, 1, 2, 8, 1, -1 }, [3, 3]);
        using var support = GreBsmo.Support(s, 5, fallback: w);
        Assert.Equal(new long[] { 0, 1, 4, 6, 7 }, support.data<long>().ToArray());
        using var top3 = GreBsmo.Support(s, 3, fallback: w);
        Assert.Equal(new long[] { 1, 4, 7 }, top3.data<long>().ToArray());
    }

    [Fact]
    public void AFitOfFullRankLeavesNoSparsePart()
    {
        // The original's loop keeps growing the rank: once it reaches min(out, in) (48 after 10 rounds here), U·V is W
        // and S = 0, so on small matrices the default 100 rounds leave Ω to top-k's order among zeros.
        using var scope = NewDisposeScope();
        using var model = LoadEval("bert-tiny");
        using var start = new Generator(0);
        var (_, v, s) = GreBsmo.Decompose(model.Layers[0].Attention.Query!.Layer.weight, 100, 0.01, start);
        output.WriteLine($"bert-tiny query 48×48, 100 rounds: fit rank {v.shape[0]}, |S| ≠ 0 at {s.ne(0).sum().item<long>()} entries");
        Assert.Equal(48, v.shape[0]);
        Assert.Equal(0, s.ne(0).sum().item<long>());
    }

    [Fact]
    public void SupportsAreSeededAndTheAblationsDiffer()
    {
        using var model = LoadEval("bert-tiny");
        IReadOnlyList<long> SupportWith(DseeOptions options)
        {
            using var again = LoadEval("bert-tiny");
            using var tuner = Attach(again, options);
            return tuner.Modules[0].Adapter.Blocks[0].Support.ToArray();
        }
        var decomposition = SupportWith(new DseeOptions());
        Assert.Equal(decomposition, SupportWith(new DseeOptions()));
        var magnitude = SupportWith(new DseeOptions { Support = DseeSupport.Magnitude });
        var random = SupportWith(new DseeOptions { Support = DseeSupport.Random });
        Assert.Equal(random, SupportWith(new DseeOptions { Support = DseeSupport.Random }));
        Assert.NotEqual(random, SupportWith(new DseeOptions { Support = DseeSupport.Random, SupportSeed = 1 }));
        // Magnitude: exactly the 16 largest |W| of the first query matrix.
        using var q = model.Layers[0].Attention.Query!.Layer.weight.detach().abs().reshape(-1);
        using var top = q.topk(16).indexes.sort().Values;
        Assert.Equal(top.data<long>().ToArray(), magnitude);
        output.WriteLine($"decomposition Ω {string.Join(",", decomposition)}; magnitude Ω {string.Join(",", magnitude)}; shared {decomposition.Intersect(magnitude).Count()}");
        // On 48×48 the decomposition's fit reaches full rank and S = 0 (AFitOfFullRankLeavesNoSparsePart): Ω falls back to |W|.
        Assert.Equal(magnitude, decomposition);
    }

    // ---- pruning ------------------------------------------------------------------------------------------------

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void UnstructuredPruningZeroesExactlyEachPoolsShareAndKeepsTheUpdate(string family)
    {
        using var model = LoadEval(family);
        using var tuner = Attach(model, new DseeOptions { BackboneSparsity = 0.3, QueryValueSparsity = 0.1 });
        AsIfTrained(tuner);
        var (backbone, queryValue) = Pools(model);
        long n1 = backbone.Sum(w => w.numel()), n2 = queryValue.Sum(w => w.numel());
        Assert.Equal(0, Zeros(backbone) + Zeros(queryValue));
        var deltas = tuner.Modules.Select(m => m.Adapter.DeltaWeight(m.Layer)).ToList();

        tuner.PruneUnstructured();

        long z1 = Zeros(backbone), z2 = Zeros(queryValue);
        output.WriteLine($"{family}: pool 1 {z1} zeros of {n1} (⌊0.3·n⌋ = {(long)Math.Floor(0.3 * n1)}), pool 2 {z2} of {n2} (⌊0.1·n⌋ = {(long)Math.Floor(0.1 * n2)})");
        Assert.Equal((long)Math.Floor(0.3 * n1 + 1e-6), z1);
        Assert.Equal((long)Math.Floor(0.1 * n2 + 1e-6), z2);
        // Pool 2 ranks by |ΔW|: every pruned entry's |ΔW| is at most every kept one's (across all q and v blocks).
        using (var scope = NewDisposeScope())
        {
            var pruned = new List<Tensor>();
            var kept = new List<Tensor>();
            foreach (var m in tuner.Modules)
                foreach (var b in m.Adapter.Blocks)
                {
                    Tensor d = b.Delta(m.Adapter.Scaling).abs().reshape(-1);
                    Tensor zero = m.Layer.weight.narrow(0, b.RowStart, b.Rows).reshape(-1).eq(0);
                    pruned.Add(d.masked_select(zero));
                    kept.Add(d.masked_select(zero.logical_not()));
                }
            Assert.True(cat(pruned, 0).max().item<float>() <= cat(kept, 0).min().item<float>());
        }
        // Only W changed: the update is the same as before pruning.
        for (int i = 0; i < deltas.Count; i++)
        {
            using var now = tuner.Modules[i].Adapter.DeltaWeight(tuner.Modules[i].Layer);
            Assert.Equal(0.0, MaxAbsDiff(deltas[i], now));
            deltas[i].Dispose();
        }
    }

    [Fact]
    public void PrunedEntriesArePackedOneBitEach()
    {
        // Zeros at flat 0, 2, 8, 14 of a 3×5 weight: byte 0 = 2⁰ + 2² = 5, byte 1 = 2⁰ + 2⁶ = 65 (entries 8 … 15).
        using var weight = tensor(new float[] { 0, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, -0f }, [3, 5]);
        using var packed = DseeUpdate.PackZeros(weight);
        Assert.Equal(new byte[] { 5, 65 }, packed.data<byte>().ToArray());
        using var mask = DseeUpdate.Unpack(packed, 15);
        using var expected = weight.reshape(-1).eq(0);
        Assert.Equal(expected.data<bool>().ToArray(), mask.data<bool>().ToArray());
    }

    [Theory]
    [InlineData("bert-tiny", 3)]
    [InlineData("gpt2-tiny", 3)]
    [InlineData("llama-tiny", 2)]   // grouped-query attention: one whole group of 2 query heads goes
    public void HeadPruningRemovesTheLowestHeadsLikeZeroGatesAndShipsThatModel(string family, int headsLeft)
    {
        string dir = Fixtures.TempDirectory("dsee-heads");
        try
        {
            using var model = LoadEval(family);
            using var tuner = Attach(model, new DseeOptions { Prune = DseePruning.Heads });
            AsIfTrained(tuner);
            using var ids = FixedIds();

            // The expected heads, from Σ|ΔW rows| by hand; then the same heads gated to zero.
            var expected = new Dictionary<int, int[]>();
            foreach (var view in model.Layers)
            {
                var a = view.Attention;
                using var dq = a.ProjectionOf(QkvPart.Query).Layer.Adapter!.DeltaWeight(a.ProjectionOf(QkvPart.Query).Layer);
                using var dv = a.ProjectionOf(QkvPart.Value).Layer.Adapter!.DeltaWeight(a.ProjectionOf(QkvPart.Value).Layer);
                float[] q = dq.abs().sum(1).data<float>().ToArray(), v = dv.abs().sum(1).data<float>().ToArray();
                double[] groupScore = Enumerable.Range(0, a.NumKeyValueHeads).Select(g =>
                    Enumerable.Range(g * a.GroupSize, a.GroupSize).Sum(h => a.HeadRows(QkvPart.Query, h).Sum(r => (double)q[r]))
                    + a.HeadRows(QkvPart.Value, g * a.GroupSize).Sum(r => (double)v[r])).ToArray();
                int lowest = Array.IndexOf(groupScore, groupScore.Min());
                expected[view.Index] = Enumerable.Range(lowest * a.GroupSize, a.GroupSize).ToArray();
                output.WriteLine($"{family} layer {view.Index}: group scores {string.Join(", ", groupScore.Select(s => s.ToString("0.000")))} → remove heads {string.Join(",", expected[view.Index])}");
                using var gate = ones(a.NumHeads);
                foreach (int h in expected[view.Index]) gate[h] = 0;
                a.HeadGate = gate.clone();
            }
            using var gated = Logits(model, ids);
            foreach (var view in model.Layers) { view.Attention.HeadGate!.Dispose(); view.Attention.HeadGate = null; }

            tuner.PruneHeads();

            Assert.All(model.Layers, view => Assert.Equal(headsLeft, view.Attention.NumHeads));
            Assert.Equal(expected.Keys, tuner.RemovedHeads.Keys);
            foreach (var (layer, heads) in expected) Assert.Equal(heads, tuner.RemovedHeads[layer]);
            using var pruned = Logits(model, ids);
            double gatedVersusPruned = MaxAbsDiff(gated, pruned);

            tuner.Finish(model);
            // The report: the removed heads per layer, and fewer forward FLOPs (a quarter of the attention's share).
            var report = (DseeReport)tuner.Report(model)!;
            output.WriteLine($"{family}: inference FLOPs relative {report.InferenceFlopsRelativeUpdateSeparate:0.0000} (update separate), {report.InferenceFlopsRelativeMerged:0.0000} merged");
            Assert.Equal(expected.Keys.Select(k => k.ToString()), report.HeadsRemoved.Keys);
            Assert.All(expected, e => Assert.Equal(e.Value, report.HeadsRemoved[e.Key.ToString()]));
            Assert.InRange(report.InferenceFlopsRelativeMerged, 0.5, 0.999);
            Assert.True(report.InferenceFlopsRelativeUpdateSeparate > report.InferenceFlopsRelativeMerged, "the separate low-rank path costs FLOPs of its own");
            Assert.Null(report.BackboneSparsity);
            using var finished = Logits(model, ids);
            var outputs = FineTuneJob.SaveOutputs(model, tuner, dir, Fixtures.Model(family));
            using var reloaded = PretrainedModel.Load(outputs["model"]);
            reloaded.eval();
            using var reloadedLogits = Logits(reloaded, ids);
            using var fromBase = MethodArtifacts.LoadWithArtifact(Fixtures.Model(family), outputs["dsee_update"], out _);
            fromBase.eval();
            using var fromBaseLogits = Logits(fromBase, ids);
            output.WriteLine($"{family}: |gated − pruned| {gatedVersusPruned:E2}, |pruned − merged| {MaxAbsDiff(pruned, finished):E2}, |merged − model/ reloaded| {MaxAbsDiff(finished, reloadedLogits):E2}, |merged − base + dsee_update| {MaxAbsDiff(finished, fromBaseLogits):E2}");
            Assert.True(gatedVersusPruned <= 1e-5);
            Assert.True(MaxAbsDiff(pruned, finished) <= 1e-5);
            Assert.Equal(0.0, MaxAbsDiff(finished, reloadedLogits));
            Assert.Equal(0.0, MaxAbsDiff(finished, fromBaseLogits));
            Assert.All(reloaded.Layers, view => Assert.Equal(headsLeft, view.Attention.NumHeads));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void AHeadPrunedRunResumesBitExactly()
    {
        string full = Fixtures.TempDirectory("dsee-heads-full"), part = Fixtures.TempDirectory("dsee-heads-part");
        try
        {
            var options = new DseeOptions { Prune = DseePruning.Heads };
            TrainingOptions Training(string dir) => new() { MaxSteps = 12, LearningRate = 5e-3, OutputDirectory = dir, EvaluateBaseline = false, SaveEvery = 3, LogEvery = 1 };
            var data = new SyntheticBatches(TaskKind.CausalLM, 211, 32, 8);
            double[] losses;
            using (var model = PretrainedModel.Load(Fixtures.Model("gpt2-tiny")))
            using (var tuner = MethodRegistry.CreateTuner("dsee", options))
                losses = new Trainer(model, tuner, TaskKind.CausalLM, Training(full)).Run(data).LossCurve.Select(l => l.Loss).ToArray();
            using (var model = PretrainedModel.Load(Fixtures.Model("gpt2-tiny")))
            using (var tuner = MethodRegistry.CreateTuner("dsee", options))
            {
                var crashing = new Trainer(model, tuner, TaskKind.CausalLM, Training(part)) { Progress = new CrashAtStep(10) };
                Assert.Throws<OperationCanceledException>(() => crashing.Run(data));
            }
            using (var model = PretrainedModel.Load(Fixtures.Model("gpt2-tiny")))
            using (var tuner = (DseeTuner)MethodRegistry.CreateTuner("dsee", options))
            {
                var resumed = new Trainer(model, tuner, TaskKind.CausalLM, Training(part) with { ResumeFrom = Path.Combine(part, "checkpoint") }).Run(data);
                output.WriteLine($"losses {string.Join(", ", losses.Select(l => l.ToString("0.0000")))}; heads after resume {string.Join(",", model.Layers.Select(l => l.Attention.NumHeads))}");
                Assert.Equal(losses, resumed.LossCurve.Select(l => l.Loss).ToArray());
                Assert.All(model.Layers, view => Assert.Equal(3, view.Attention.NumHeads));
            }
        }
        finally
        {
            Directory.Delete(full, true);
            Directory.Delete(part, true);
        }
    }

    [Fact]
    public void RetuneEpochsPruneAfterThePlannedEpochsThenRestartTheScheduleAndTheReportGivesEachPoolsSparsity()
    {
        string dir = Fixtures.TempDirectory("dsee-retune");
        try
        {
            var data = new SyntheticBatches(TaskKind.CausalLM, 211, 16, 4);
            int stepsPerEpoch = data.EpochBatches(0).Count;
            var lrs = new List<double>();
            using var model = PretrainedModel.Load(Fixtures.Model("gpt2-tiny"));
            using var tuner = (DseeTuner)MethodRegistry.CreateTuner("dsee", new DseeOptions { RetuneEpochs = 1, BackboneSparsity = 0.3, QueryValueSparsity = 0.1 });
            var prunedAfter = new List<int>();
            var result = new Trainer(model, tuner, TaskKind.CausalLM, new TrainingOptions { Epochs = 2, LearningRate = 1e-3, WarmupRatio = 0, OutputDirectory = dir, EvaluateBaseline = false })
            {
                Progress = new RecordingProgress(p => { if (p.Phase == "train") { lrs.Add(p.LearningRate); if (tuner.Pruned && prunedAfter.Count == 0) prunedAfter.Add(p.Step); } }),
            }.Run(data);
            output.WriteLine($"{stepsPerEpoch} steps per epoch; learning rates {string.Join(", ", lrs.Select(l => l.ToString("0.000000")))}");

            Assert.Equal(3 * stepsPerEpoch, result.Steps);                       // 2 epochs tune + 1 re-tunes
            Assert.Equal(2 * stepsPerEpoch, prunedAfter.Single());                // pruned right after the planned run
            Assert.Equal(lrs[0], lrs[2 * stepsPerEpoch]);                         // a fresh schedule for the re-tuning
            Assert.True(lrs[2 * stepsPerEpoch - 1] < lrs[0]);

            tuner.Finish(model);
            var report = (DseeReport)tuner.Report(model)!;
            var (backbone, queryValue) = Pools(model);
            long n1 = backbone.Sum(w => w.numel()), n2 = queryValue.Sum(w => w.numel());
            output.WriteLine($"sparsity {report.BackboneSparsity:0.000000} / {report.QueryValueSparsity:0.000000}; FLOPs {report.InferenceFlopsRelativeUpdateSeparate:0.0000} separate, {report.InferenceFlopsRelativeMerged:0.0000} merged");
            Assert.Equal(Math.Floor(0.3 * n1 + 1e-6) / n1, report.BackboneSparsity!.Value, 12);
            Assert.Equal(Math.Floor(0.1 * n2 + 1e-6) / n2, report.QueryValueSparsity!.Value, 12);
            Assert.Equal(stepsPerEpoch, report.RetuneSteps);
            Assert.True(report.InferenceFlopsRelativeMerged < 1 && report.InferenceFlopsRelativeMerged > 0.6);
        }
        finally { Directory.Delete(dir, true); }
    }

    // ---- options ------------------------------------------------------------------------------------------------

    [Fact]
    public void OptionsReportEveryProblemAndFlagsBindOntoTheRecord()
    {
        Assert.Empty(new DseeOptions().Problems());
        var bad = new DseeOptions
        {
            Rank = 0, Alpha = 0, SparseEntries = -1, DecompositionRounds = 0, DecompositionThreshold = -1,
            PruneAt = 1, BackboneSparsity = 1, QueryValueSparsity = -0.1, HeadShare = 0,
        };
        var problems = MethodRegistry.Get("dsee").Problems(bad);
        output.WriteLine(string.Join("\n", problems));
        Assert.Equal(9, problems.Count);
        Assert.All(problems, p => Assert.StartsWith("dsee: ", p));
        Assert.Throws<ArgumentException>(() => MethodRegistry.CreateTuner("dsee", bad));

        var method = MethodRegistry.Get("dsee");
        IMethodOptions bound = method.DefaultOptions;
        foreach (var (flag, text) in new[] { ("--prune", "heads"), ("--support", "random"), ("--num-sparse", "64"), ("--prune-at", "0.5"), ("--qv-prune-score", "weightplusupdate") })
            bound = method.Flags.Single(f => f.Name == flag).Apply(bound, text);
        Assert.Equal(new DseeOptions { Prune = DseePruning.Heads, Support = DseeSupport.Random, SparseEntries = 64, PruneAt = 0.5, QueryValueScore = DseeUpdateScore.WeightPlusUpdate }, bound);
        Assert.Equal(8, new DseeOptions().PruneStep(24));   // a third of the steps, as the RTE scripts' 5 + 10 epochs
    }
}
