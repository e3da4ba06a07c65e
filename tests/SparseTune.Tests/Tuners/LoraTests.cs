using System.Text.Json.Nodes;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tests.Support;
using SparseTune.Tuners;
using SparseTune.Tuners.Lora;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.Tuners;

public class LoraTests(ITestOutputHelper output)
{
    // ---- helpers ----------------------------------------------------------------------------------------------

    /// <summary>A fixture family ("bert-tiny", …) or a model folder, in eval mode.</summary>
    static TransformerModel LoadEval(string familyOrFolder)
    {
        var model = PretrainedModel.Load(Directory.Exists(familyOrFolder) ? familyOrFolder : Fixtures.Model(familyOrFolder));
        model.eval();
        return model;
    }

    /// <summary>A fixed (2, 7) batch of token ids below the family's vocabulary size.</summary>
    static Tensor Ids(TransformerModel model)
    {
        var random = new Random(11);
        var ids = Enumerable.Range(0, 14).Select(_ => (long)(3 + random.Next(model.Config.VocabSize - 3))).ToArray();
        return tensor(ids, [2, 7]);
    }

    static Tensor Logits(TransformerModel model, Tensor ids)
    {
        using var _ = no_grad();
        using var o = model.Forward(ids);
        return o.Logits.detach().clone();
    }

    static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var d = (a - b).abs().max();
        return d.item<float>();
    }

    /// <summary>Gives every lora_B (and so B·A) non-zero values, as after some training.</summary>
    static void RandomiseB(LoraTuner tuner)
    {
        using var _ = no_grad();
        foreach (var m in tuner.Modules) nn.init.normal_(m.Adapter.LoraB, 0, 0.2);
    }

    /// <summary>A (2, 7) batch of ids below every fixture's vocabulary size, for tests that outlive their model.</summary>
    static Tensor FixedIds() => tensor(new long[] { 5, 9, 17, 4, 30, 8, 12, 7, 3, 21, 6, 11, 19, 10 }, [2, 7]);

    /// <summary>
    /// A tuner attached to <paramref name="model"/> as if trained: random B, so the adapters change the output,
    /// and every trainable tensor that is not an adapter (the saved head) changed by <paramref name="trainHead"/>.
    /// </summary>
    static LoraTuner AttachAsTrained(TransformerModel model, LoraOptions options, Action<Tensor> trainHead, IReadOnlyList<string>? trainedModules = null)
    {
        var tuner = (LoraTuner)new LoraMethod().CreateTuner(options, new TunerContext { TrainedModules = trainedModules });
        tuner.Attach(model);
        RandomiseB(tuner);
        using var _ = no_grad();
        foreach (var (_, p) in tuner.TrainableParameters().Where(t => !t.Name.Contains(".lora_"))) trainHead(p);
        return tuner;
    }

    // ---- targets ----------------------------------------------------------------------------------------------

    [Theory]
    [InlineData("bert", "query,value")]
    [InlineData("roberta", "query,value")]
    [InlineData("gpt2", "c_attn")]
    [InlineData("llama", "q_proj,v_proj")]
    [InlineData("mistral", "q_proj,v_proj")]
    [InlineData("qwen2", "q_proj,v_proj")]
    public void DefaultTargetModulesArePeftsPerFamilyDefaults(string modelType, string expected) =>
        Assert.Equal(expected.Split(','), LoraOptions.DefaultTargetModules(modelType));

    [Theory]
    [InlineData("bert-tiny", "bert.encoder.layer.0.attention.self.query,bert.encoder.layer.0.attention.self.value,bert.encoder.layer.1.attention.self.query,bert.encoder.layer.1.attention.self.value")]
    [InlineData("gpt2-tiny", "transformer.h.0.attn.c_attn,transformer.h.1.attn.c_attn")]
    [InlineData("llama-tiny", "model.layers.0.self_attn.q_proj,model.layers.0.self_attn.v_proj,model.layers.1.self_attn.q_proj,model.layers.1.self_attn.v_proj")]
    public void DefaultOptionsAdaptTheAttentionProjectionsOfEveryLayer(string family, string expected)
    {
        using var model = LoadEval(family);
        using var tuner = new LoraTuner(new LoraOptions());
        tuner.Attach(model);
        Assert.Equal(expected.Split(','), tuner.Modules.Select(m => m.Name));
        Assert.All(tuner.Modules, m => Assert.Same(m.Adapter, m.Layer.Adapter));
    }

    [Fact]
    public void TargetMatchingNothingIsRejectedListingTheLinearLayerNames()
    {
        using var model = LoadEval("bert-tiny");
        using var tuner = new LoraTuner(new LoraOptions { TargetModules = ["query", "q_proj"] });
        var e = Assert.Throws<ArgumentException>(() => tuner.Attach(model));
        Assert.Contains("q_proj", e.Message);
        Assert.Contains("query", e.Message);
        Assert.Contains("value", e.Message);
        Assert.All(model.NamedLinears(), l => Assert.Null(l.Layer.Adapter)); // nothing half-attached
    }

    [Fact]
    public void AllLinearTargetsEveryLinearExceptTheHead()
    {
        using var model = LoadEval("bert-tiny");
        using var tuner = new LoraTuner(new LoraOptions { TargetModules = [LoraOptions.AllLinear] });
        tuner.Attach(model);
        var names = tuner.Modules.Select(m => m.Name).ToList();
        var expected = model.NamedLinears().Select(l => l.Name)
            .Where(n => !model.HeadModuleNames.Any(h => n == h || n.StartsWith(h + ".", StringComparison.Ordinal))).ToList();
        Assert.Equal(expected, names);
        Assert.DoesNotContain(names, n => n.StartsWith("classifier", StringComparison.Ordinal));
        // q, k, v, attention output, intermediate, output in each of the 2 layers.
        Assert.Equal(12, names.Count(n => n.StartsWith("bert.encoder.layer.", StringComparison.Ordinal)));
    }

    [Fact]
    public void InvalidOptionsAreRejectedTogether()
    {
        var e = Assert.Throws<ArgumentException>(() => new LoraTuner(new LoraOptions { Rank = 0, Dropout = 1, Alpha = -1 }));
        Assert.Contains("rank", e.Message);
        Assert.Contains("alpha", e.Message);
        Assert.Contains("dropout", e.Message);
    }

    // ---- adapter arithmetic -----------------------------------------------------------------------------------

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void FreshAdapterLeavesTheBaseModelsOutputUnchanged(string family)
    {
        random.manual_seed(1);
        using var model = LoadEval(family);
        using var ids = Ids(model);
        using var before = Logits(model, ids);
        using var tuner = new LoraTuner(new LoraOptions());
        tuner.Attach(model);
        Assert.All(tuner.Modules, m => Assert.Equal(0, m.Adapter.LoraB.abs().sum().item<float>()));
        using var after = Logits(model, ids);
        Assert.True(before.Equals(after), "B = 0 must give the base model's logits exactly");
    }

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void MergedForwardEqualsUnmergedAndUnmergeRestoresWeights(string family)
    {
        random.manual_seed(2);
        using var model = LoadEval(family);
        using var ids = Ids(model);
        using var baseLogits = Logits(model, ids);
        using var tuner = new LoraTuner(new LoraOptions());
        tuner.Attach(model);
        RandomiseB(tuner);
        var original = tuner.Modules.ToDictionary(m => m.Name, m => m.Layer.weight.detach().clone());

        using var unmerged = Logits(model, ids);
        Assert.True(MaxAbsDiff(unmerged, baseLogits) > 1e-3, "a non-zero B must change the output");
        tuner.Merge();
        Assert.All(tuner.Modules, m => Assert.True(m.Adapter.Merged));
        using var merged = Logits(model, ids);
        double mergeError = MaxAbsDiff(merged, unmerged);
        output.WriteLine($"{family}: |merged − unmerged| = {mergeError:E3}");
        Assert.True(mergeError <= 1e-5, $"merged forward differs by {mergeError:E3}");

        // The merged weight is W + B·A·alpha/r exactly as DeltaWeight reports it.
        var first = tuner.Modules[0];
        using (var delta = first.Adapter.DeltaWeight(first.Layer))
        using (var expected = original[first.Name] + delta)
            Assert.True(MaxAbsDiff(first.Layer.weight, expected) == 0);

        tuner.Unmerge();
        foreach (var m in tuner.Modules)
        {
            double restore = MaxAbsDiff(m.Layer.weight, original[m.Name]);
            Assert.True(restore <= 1e-6, $"{m.Name}: unmerge leaves W off by {restore:E3}");
        }
        using var again = Logits(model, ids);
        Assert.True(MaxAbsDiff(again, unmerged) <= 1e-5);
        foreach (var t in original.Values) t.Dispose();
    }

    [Fact]
    public void DeltaWeightIsScaledBTimesA()
    {
        random.manual_seed(3);
        using var layer = new TunableLinear(5, 4);
        using var adapter = new LoraAdapter(layer, rank: 2, alpha: 6, dropout: 0);
        using (no_grad()) nn.init.normal_(adapter.LoraB);
        Assert.Equal([2L, 5L], adapter.LoraA.shape);
        Assert.Equal([4L, 2L], adapter.LoraB.shape);
        Assert.Equal(3.0, adapter.Scaling);
        using var delta = adapter.DeltaWeight(layer);
        using var expected = adapter.LoraB.detach().matmul(adapter.LoraA.detach()) * 3.0;
        Assert.True(MaxAbsDiff(delta, expected) <= 1e-6);
        Assert.False(delta.requires_grad);
    }

    [Fact]
    public void AdapterGradientsMatchTheLowRankChainRule()
    {
        // y = x Wᵀ + b + s·(x Aᵀ) Bᵀ, L = Σ y ⊙ g  ⇒  ∂L/∂B = s·gᵀ (x Aᵀ),  ∂L/∂A = s·(g B)ᵀ x.
        random.manual_seed(14);
        using var layer = new TunableLinear(6, 5);
        foreach (var p in layer.parameters()) p.requires_grad = false;
        var adapter = new LoraAdapter(layer, rank: 3, alpha: 6, dropout: 0);
        layer.Adapter = adapter;
        using (no_grad()) nn.init.normal_(adapter.LoraB);
        using var x = randn(4, 6);
        using var g = randn(4, 5);
        using (var y = layer.forward(x))
        using (var loss = (y * g).sum())
            loss.backward();
        using var xa = x.matmul(adapter.LoraA.detach().t());
        using var expectedB = g.t().matmul(xa) * adapter.Scaling;
        using var gb = g.matmul(adapter.LoraB.detach());
        using var expectedA = gb.t().matmul(x) * adapter.Scaling;
        Assert.True(MaxAbsDiff(adapter.LoraB.grad!, expectedB) <= 1e-5);
        Assert.True(MaxAbsDiff(adapter.LoraA.grad!, expectedA) <= 1e-5);
        Assert.Null(layer.weight.grad);
    }

    [Fact]
    public void DropoutActsOnTheAdapterInputInTrainingModeOnly()
    {
        random.manual_seed(4);
        using var layer = new TunableLinear(16, 8);
        var adapter = new LoraAdapter(layer, rank: 4, alpha: 8, dropout: 0.5);
        layer.Adapter = adapter;
        using (no_grad()) nn.init.normal_(adapter.LoraB);
        using var x = randn(3, 16);

        layer.eval();
        using (var a = layer.forward(x))
        using (var b = layer.forward(x))
        using (var plain = nn.functional.linear(x, layer.weight, layer.bias))
        using (var lowRank = nn.functional.linear(nn.functional.linear(x, adapter.LoraA), adapter.LoraB) * adapter.Scaling)
        {
            Assert.True(a.Equals(b));
            Assert.True(MaxAbsDiff(a, plain + lowRank) <= 1e-5);
        }

        layer.train();
        using var c = layer.forward(x);
        using var d = layer.forward(x);
        Assert.False(c.Equals(d), "training-mode dropout must vary between calls");
    }

    // ---- what trains ------------------------------------------------------------------------------------------

    [Fact]
    public void TrainableCountForBertTinyIsAdaptersPlusTheHead()
    {
        using var model = LoadEval("bert-tiny");
        using var tuner = new LoraTuner(new LoraOptions());
        tuner.Attach(model);

        // BertForSequenceClassification's head is pooler + classifier (logits = classifier(tanh(pooler(h[CLS])))).
        Assert.Equal(["bert.pooler", "classifier"], model.HeadModuleNames);
        Assert.Equal(["bert.pooler", "classifier"], tuner.SavedModuleNames);
        // LoRA: 2 layers × {query, value} × (A: 8×48 + B: 48×8) = 4 × 768 = 3072.
        const long lora = 2 * 2 * (8 * 48 + 48 * 8);
        const long pooler = 48 * 48 + 48;          // 2352
        const long classifier = 48 * 3 + 3;        // 147 (3 labels)
        const long head = pooler + classifier;
        // Base: embeddings (223 + 32 + 2)×48 + LN 96; per layer 4×(48²+48) + LN 96 + (48×96+96) + (96×48+48) + LN 96.
        const long embeddings = (223 + 32 + 2) * 48 + 2 * 48;
        const long perLayer = 4 * (48 * 48 + 48) + 2 * 48 + (48 * 96 + 96) + (96 * 48 + 48) + 2 * 48;
        const long baseTotal = embeddings + 2 * perLayer + pooler + classifier;   // 52,851
        Assert.Equal(3072 + 2352 + 147, lora + head);
        Assert.Equal(52851, baseTotal);
        Assert.Equal(baseTotal, model.ParameterCount());

        var trainable = tuner.TrainableParameters().ToList();
        Assert.Equal(lora + head, trainable.Sum(t => t.Parameter.numel()));
        var (count, all) = tuner.CountParameters();
        Assert.Equal(lora + head, count);
        Assert.Equal(baseTotal + lora, all);
        Assert.Contains(("bert.encoder.layer.0.attention.self.query.lora_A.weight"), trainable.Select(t => t.Name));
        Assert.Contains(("bert.encoder.layer.1.attention.self.value.lora_B.weight"), trainable.Select(t => t.Name));
        Assert.Contains("classifier.weight", trainable.Select(t => t.Name));
        Assert.Contains("classifier.bias", trainable.Select(t => t.Name));
        Assert.Contains("bert.pooler.dense.weight", trainable.Select(t => t.Name));

        string summary = tuner.TrainableParametersSummary();
        output.WriteLine(summary);
        // 5571 / 55923 = 9.9619 %
        Assert.Equal("trainable params: 5,571 || all params: 55,923 || trainable%: 9.9619", summary);
    }

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void FrozenBaseParametersGetNoGradient(string family)
    {
        random.manual_seed(5);
        using var model = LoadEval(family);
        model.train();
        using var tuner = new LoraTuner(new LoraOptions());
        tuner.Attach(model);
        RandomiseB(tuner);
        using var ids = Ids(model);
        using (var o = model.Forward(ids))
        using (var loss = o.Logits.pow(2).mean())
            loss.backward();

        var trainable = tuner.TrainableParameters().Select(t => t.Parameter.Handle).ToHashSet();
        foreach (var (name, p) in model.named_parameters())
        {
            if (trainable.Contains(p.Handle))
            {
                Assert.True(p.requires_grad, $"{name} should train");
                Assert.NotNull(p.grad);
            }
            else
            {
                Assert.False(p.requires_grad, $"{name} should be frozen");
                Assert.Null(p.grad);
            }
        }
        foreach (var m in tuner.Modules)
        {
            Assert.NotNull(m.Adapter.LoraA.grad);
            Assert.NotNull(m.Adapter.LoraB.grad);
            Assert.True(m.Adapter.LoraB.grad!.abs().sum().item<float>() > 0, $"{m.Name}.lora_B gets no gradient");
        }
    }

    // ---- PEFT files -------------------------------------------------------------------------------------------

    [Fact]
    public void Gpt2AdapterFileUsesPeftKeysShapesAndConfig()
    {
        random.manual_seed(6);
        string dir = Fixtures.TempDirectory("lora-gpt2");
        try
        {
            using var model = LoadEval("gpt2-tiny");
            using var tuner = (LoraTuner)new LoraMethod().CreateTuner(new LoraOptions(), new TunerContext { BaseModelPath = "sshleifer/tiny-gpt2" });
            tuner.Attach(model);
            tuner.SaveArtifacts(model, dir);

            using var file = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
            var shapes = file.Tensors.ToDictionary(t => t.Name, t => t.Shape);
            var expected = new Dictionary<string, long[]>
            {
                ["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"] = [8, 48],
                ["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"] = [144, 8],
                ["base_model.model.transformer.h.1.attn.c_attn.lora_A.weight"] = [8, 48],
                ["base_model.model.transformer.h.1.attn.c_attn.lora_B.weight"] = [144, 8],
            };
            Assert.Empty(model.HeadModuleNames); // GPT-2 ties lm_head to wte: nothing trains in full
            Assert.Equal(expected.Keys.Order(), shapes.Keys.Order());
            foreach (var (key, shape) in expected) Assert.Equal(shape, shapes[key]);
            Assert.All(file.Tensors, t => Assert.Equal(SafeTensorsDType.F32, t.DType));
            Assert.Equal("pt", file.Metadata["format"]);

            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
            Assert.Equal("LORA", config["peft_type"]!.GetValue<string>());
            Assert.Equal("CAUSAL_LM", config["task_type"]!.GetValue<string>());
            Assert.Equal(8, config["r"]!.GetValue<int>());
            Assert.Equal(16, config["lora_alpha"]!.GetValue<int>());
            Assert.Equal(0.05, config["lora_dropout"]!.GetValue<double>());
            Assert.Equal(["c_attn"], config["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
            Assert.Null(config["modules_to_save"]);
            Assert.True(config["fan_in_fan_out"]!.GetValue<bool>());   // HF GPT-2 layers are Conv1D
            Assert.Equal("none", config["bias"]!.GetValue<string>());
            Assert.Equal("sshleifer/tiny-gpt2", config["base_model_name_or_path"]!.GetValue<string>());
            Assert.True(config["inference_mode"]!.GetValue<bool>());
            Assert.True(config["init_lora_weights"]!.GetValue<bool>());
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void BertAdapterFileSavesTheClassifierAsModulesToSave()
    {
        random.manual_seed(7);
        string dir = Fixtures.TempDirectory("lora-bert");
        try
        {
            using var model = LoadEval("bert-tiny");
            using var tuner = new LoraTuner(new LoraOptions());
            tuner.Attach(model);
            tuner.SaveAdapter(dir);

            using var file = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors"));
            var shapes = file.Tensors.ToDictionary(t => t.Name, t => t.Shape);
            Assert.Equal([8L, 48L], shapes["base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight"]);
            Assert.Equal([48L, 8L], shapes["base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight"]);
            Assert.Equal([3L, 48L], shapes["base_model.model.classifier.weight"]);
            Assert.Equal([3L], shapes["base_model.model.classifier.bias"]);
            int loraKeys = shapes.Keys.Count(k => k.Contains(".lora_"));
            Assert.Equal(8, loraKeys);
            var headKeys = shapes.Keys.Where(k => !k.Contains(".lora_")).ToList();
            Assert.Equal([48L, 48L], shapes["base_model.model.bert.pooler.dense.weight"]);
            Assert.Equal([48L], shapes["base_model.model.bert.pooler.dense.bias"]);
            Assert.Equal(4, headKeys.Count);

            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
            Assert.Equal("SEQ_CLS", config["task_type"]!.GetValue<string>());
            Assert.False(config["fan_in_fan_out"]!.GetValue<bool>());
            Assert.Equal(["query", "value"], config["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
            Assert.Equal(["bert.pooler", "classifier"], config["modules_to_save"]!.AsArray().Select(n => n!.GetValue<string>()));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void SavedAdapterReloadsToIdenticalOutputs(string family)
    {
        random.manual_seed(8);
        string dir = Fixtures.TempDirectory("lora-reload");
        try
        {
            using var ids = FixedIds();
            Tensor expected;
            using (var model = LoadEval(family))
            {
                using var tuner = AttachAsTrained(model, new LoraOptions(), head => head.add_(0.1));
                expected = Logits(model, ids);
                tuner.SaveArtifacts(model, dir);
            }
            using (expected)
            using (var fresh = LoadEval(family))
            {
                using var loaded = LoraTuner.LoadAdapter(fresh, dir);
                Assert.Equal(8, loaded.Options.Rank);
                Assert.Equal(16.0, loaded.Options.Alpha);
                using var actual = Logits(fresh, ids);
                Assert.True(expected.Equals(actual), $"reloaded adapter differs by {MaxAbsDiff(expected, actual):E3}");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void PeftStyleClassifierOnlyAdapterLoadsWithImplicitModulesToSave()
    {
        // PEFT's own SEQ_CLS adapters save only the classifier (modules_to_save defaults to classifier/score).
        random.manual_seed(13);
        string dir = Fixtures.TempDirectory("lora-peft-cls");
        try
        {
            using var ids = FixedIds();
            Tensor expected;
            using (var model = LoadEval("bert-tiny"))
            {
                using var tuner = AttachAsTrained(model, new LoraOptions(), head => head.add_(0.3), trainedModules: ["classifier"]);
                Assert.Equal(["classifier"], tuner.SavedModuleNames);
                expected = Logits(model, ids);
                tuner.SaveAdapter(dir);
            }
            string configPath = Path.Combine(dir, "adapter_config.json");
            var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
            config["modules_to_save"] = null;
            File.WriteAllText(configPath, config.ToJsonString());

            using (expected)
            using (var fresh = LoadEval("bert-tiny"))
            {
                using var loaded = LoraTuner.LoadAdapter(fresh, dir);
                Assert.Equal(["classifier"], loaded.SavedModuleNames);
                Assert.DoesNotContain(loaded.TrainableParameters(), t => t.Name.StartsWith("bert.pooler."));
                using var actual = Logits(fresh, ids);
                Assert.True(expected.Equals(actual));
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void LoadAdapterNamesMissingUnexpectedAndMisshapenKeys()
    {
        random.manual_seed(9);
        string dir = Fixtures.TempDirectory("lora-bad");
        try
        {
            using (var model = LoadEval("bert-tiny"))
            {
                using var tuner = new LoraTuner(new LoraOptions());
                tuner.Attach(model);
                tuner.SaveAdapter(dir);
            }
            string weights = Path.Combine(dir, "adapter_model.safetensors");
            var tensors = SafeTensors.Load(weights);
            string dropped = "base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight";
            string reshaped = "base_model.model.bert.encoder.layer.1.attention.self.value.lora_A.weight";
            tensors[dropped].Dispose();
            tensors.Remove(dropped);
            tensors[reshaped] = zeros(4, 48);
            tensors["base_model.model.bert.embeddings.word_embeddings.weight"] = zeros(2, 2);
            SafeTensors.Save(weights, tensors);
            foreach (var t in tensors.Values) t.Dispose();

            using var fresh = LoadEval("bert-tiny");
            var e = Assert.Throws<InvalidDataException>(() => LoraTuner.LoadAdapter(fresh, dir));
            output.WriteLine(e.Message);
            Assert.Contains($"missing key {dropped}", e.Message);
            Assert.Contains($"{reshaped} is [4, 48], expected [8, 48]", e.Message);
            Assert.Contains("unexpected key base_model.model.bert.embeddings.word_embeddings.weight", e.Message);
            Assert.All(fresh.NamedLinears(), l => Assert.Null(l.Layer.Adapter));
        }
        finally { Directory.Delete(dir, true); }
    }

    // ---- merging into a plain checkpoint ----------------------------------------------------------------------

    [Fact]
    public void MergeAndDetachLeavesAPlainModelWithTheMergedOutputs()
    {
        random.manual_seed(10);
        using var model = LoadEval("llama-tiny");
        using var ids = Ids(model);
        using var tuner = new LoraTuner(new LoraOptions());
        tuner.Attach(model);
        RandomiseB(tuner);
        using var adapted = Logits(model, ids);
        tuner.MergeAndDetach();
        Assert.Empty(tuner.Modules);
        Assert.All(model.NamedLinears(), l => Assert.Null(l.Layer.Adapter));
        using var plain = Logits(model, ids);
        Assert.True(MaxAbsDiff(plain, adapted) <= 1e-5);
        Assert.Throws<InvalidOperationException>(() => tuner.SaveAdapter(Path.Combine(Path.GetTempPath(), "never-written")));
    }

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void MergeToCheckpointWritesAPlainModelWithTheMergedOutputs(string family)
    {
        random.manual_seed(12);
        string adapterDir = Fixtures.TempDirectory("lora-adapter");
        string mergedDir = Path.Combine(Fixtures.TempDirectory("lora-merged"), "out");
        try
        {
            using var ids = FixedIds();
            Tensor expected;
            using (var model = LoadEval(family))
            {
                using var tuner = AttachAsTrained(model, new LoraOptions(), head => head.mul_(-1.5));
                tuner.SaveArtifacts(model, adapterDir);
                tuner.Merge();
                expected = Logits(model, ids);
            }
            using (expected)
            {
                MethodArtifacts.MergeToCheckpoint(Fixtures.Model(family), adapterDir, mergedDir);
                Assert.True(File.Exists(Path.Combine(mergedDir, "config.json")));
                using var merged = LoadEval(mergedDir);   // strict load: no lora_ keys, every weight present
                Assert.Equal(family.Split('-')[0] == "bert" ? ModelHead.SequenceClassification : ModelHead.CausalLM, merged.Head);
                using var actual = Logits(merged, ids);
                double error = MaxAbsDiff(actual, expected);
                output.WriteLine($"{family}: |merged checkpoint − merged in memory| = {error:E3}");
                Assert.True(error <= 1e-5, $"merged checkpoint differs by {error:E3}");
                using var baseModel = LoadEval(family);
                using var baseLogits = Logits(baseModel, ids);
                Assert.True(MaxAbsDiff(baseLogits, actual) > 1e-3, "the merged checkpoint must differ from the base");
            }
        }
        finally
        {
            Directory.Delete(adapterDir, true);
            Directory.Delete(Path.GetDirectoryName(mergedDir)!, true);
        }
    }

    [Fact]
    public void MergeToCheckpointRefusesToOverwriteItsInputs()
    {
        string adapterDir = Fixtures.TempDirectory("lora-self");
        try
        {
            Assert.Throws<ArgumentException>(() => MethodArtifacts.MergeToCheckpoint(Fixtures.Model("gpt2-tiny"), adapterDir, adapterDir));
        }
        finally { Directory.Delete(adapterDir, true); }
    }

    // ---- rank dropping ----------------------------------------------------------------------------------------

    [Fact]
    public void AdapterWithDroppedRanksSavesRankAndAlphaPatternsAndReloadsToTheSameLogits()
    {
        random.manual_seed(11);
        string dir = Fixtures.TempDirectory("lora-ranks");
        try
        {
            using var ids = FixedIds();
            Tensor expected;
            string shrunk;
            using (var model = LoadEval("bert-tiny"))
            {
                using var tuner = AttachAsTrained(model, new LoraOptions { Rank = 8, Alpha = 16 }, head => head.add_(0.2));
                var first = tuner.Modules[0];
                shrunk = first.Name;
                using (var keep = tensor(new long[] { 1, 4, 6 })) first.Adapter.KeepRanks(keep);
                Assert.Equal(3, first.Adapter.Rank);
                Assert.Equal(2.0, first.Adapter.Scaling);   // alpha / original r, so the kept ranks compute what they did
                expected = Logits(model, ids);
                tuner.SaveAdapter(dir);
            }
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!.AsObject();
            Assert.Equal(8, config["r"]!.GetValue<int>());
            Assert.Equal(3, config["rank_pattern"]![shrunk]!.GetValue<int>());
            Assert.Equal(6.0, config["alpha_pattern"]![shrunk]!.GetValue<double>());   // Scaling · r' = 2 · 3
            Assert.Single(config["rank_pattern"]!.AsObject());

            using (expected)
            using (var reloaded = LoadEval("bert-tiny"))
            {
                using var tuner = LoraTuner.LoadAdapter(reloaded, dir);
                Assert.Equal(3, tuner.Modules.Single(m => m.Name == shrunk).Adapter.Rank);
                Assert.All(tuner.Modules.Where(m => m.Name != shrunk), m => Assert.Equal(8, m.Adapter.Rank));
                using var actual = Logits(reloaded, ids);
                double error = MaxAbsDiff(actual, expected);
                output.WriteLine($"rank-dropped adapter reloaded: max |Δ| {error:E3}");
                Assert.True(error <= 1e-6, $"{error}");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void RankPatternKeysMatchAsPeftDoes()
    {
        var config = new PeftLoraConfig { R = 8, LoraAlpha = 16, RankPattern = new Dictionary<string, int> { ["layer.1.attention.self.query"] = 2 }, AlphaPattern = new Dictionary<string, double> { ["value"] = 4 } };
        Assert.Equal((2, 16.0), config.For("bert.encoder.layer.1.attention.self.query"));
        Assert.Equal((8, 16.0), config.For("bert.encoder.layer.11.attention.self.query"));   // "layer.1." must not match "layer.11."
        Assert.Equal((8, 4.0), config.For("bert.encoder.layer.0.attention.self.value"));
        Assert.Equal((8, 16.0), config.For("bert.encoder.layer.0.attention.self.query"));
    }
}
