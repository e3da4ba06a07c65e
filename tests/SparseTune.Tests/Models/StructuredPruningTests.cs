using System.Text.Json.Nodes;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tests.Support;
using SparseTune.Tuners.Lora;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.Models;

/// <summary>
/// Structured pruning on the three families' tiny fixtures: GPT-2 (fused c_attn), BERT, LLaMA with grouped-query
/// attention (llama-tiny: 4 query heads over 2 key/value heads, so groups of 2). The reference for a pruned model is
/// the unpruned model with the same units gated to zero: the two must be the same function.
/// </summary>
public sealed class StructuredPruningTests(ITestOutputHelper output) : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("pruning");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    // ---- helpers ------------------------------------------------------------------------------------------------

    static TransformerModel LoadEval(string fixture)
    {
        TransformerModel model = PretrainedModel.Load(Fixtures.Model(fixture));
        model.eval();
        return model;
    }

    /// <summary>A fixed (2, 7) batch of ids below every fixture's vocabulary size.</summary>
    static Tensor Ids() => tensor(new long[] { 5, 9, 17, 4, 30, 8, 12, 7, 3, 21, 6, 11, 19, 10 }, [2, 7]);

    /// <summary>The logits and the last hidden state, flattened into one vector, detached.</summary>
    static Tensor Outputs(TransformerModel model)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using Tensor ids = Ids();
        using ModelOutput o = model.Forward(ids);
        return cat([o.Logits.flatten(), o.LastHiddenState.flatten()]).MoveToOuterDisposeScope();
    }

    static double MaxAbsDiff(Tensor a, Tensor b)
    {
        Assert.Equal(a.shape, b.shape);
        using Tensor d = (a - b).abs().max();
        return d.item<float>();
    }

    /// <summary>A gate of ones with zeros at <paramref name="off"/>.</summary>
    static Tensor GateOff(long size, IEnumerable<int> off)
    {
        Tensor gate = ones(size);
        foreach (int i in off) gate[i] = 0f;
        return gate;
    }

    /// <summary>
    /// Gates the given heads and neurons to zero, computes the outputs, prunes the same units (the gates are
    /// sliced along) and computes them again. Returns the max abs difference; also checks that the zero gates
    /// did change the output, so the comparison is not trivially equal.
    /// </summary>
    double GatedVersusPruned(TransformerModel model, Dictionary<int, int[]> heads, Dictionary<int, int[]> neurons)
    {
        using Tensor ungated = Outputs(model);
        foreach (var (layer, h) in heads) model.Layers[layer].Attention.HeadGate = GateOff(model.Layers[layer].Attention.NumHeads, h);
        foreach (var (layer, n) in neurons) model.Layers[layer].FeedForward.NeuronGate = GateOff(model.Layers[layer].FeedForward.IntermediateSize, n);
        using Tensor gated = Outputs(model);
        Assert.True(MaxAbsDiff(gated, ungated) > 1e-3, "zero gates must change the output");

        foreach (var (layer, h) in heads) model.PruneHeads(layer, h);
        foreach (var (layer, n) in neurons) model.PruneNeurons(layer, n);
        using Tensor pruned = Outputs(model);

        foreach (TransformerLayerView view in model.Layers)
        {
            // The gates were sliced to the surviving units, all ones.
            if (view.Attention.HeadGate is { } hg) { Assert.Equal([(long)view.Attention.NumHeads], hg.shape); Assert.True(hg.eq(1).all().item<bool>()); }
            if (view.FeedForward.NeuronGate is { } ng) { Assert.Equal([(long)view.FeedForward.IntermediateSize], ng.shape); Assert.True(ng.eq(1).all().item<bool>()); }
            view.Attention.HeadGate = null;
            view.FeedForward.NeuronGate = null;
        }
        using Tensor prunedUngated = Outputs(model);
        Assert.True(MaxAbsDiff(pruned, prunedUngated) <= 1e-6);
        return MaxAbsDiff(pruned, gated);
    }

    static string ConfigJson(string directory, string key) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(directory, "config.json")))![key]?.ToJsonString() ?? "(absent)";

    /// <summary>Saves, reloads, and returns the max abs difference of the outputs.</summary>
    double SaveReloadDifference(TransformerModel model, string name, out string directory)
    {
        directory = Path.Combine(temp, name);
        PretrainedModel.Save(model, directory);
        using TransformerModel reloaded = PretrainedModel.Load(directory);
        reloaded.eval();
        Assert.Equal(DecoderFixtures.KeysAndShapes(model), DecoderFixtures.KeysAndShapes(reloaded));
        using Tensor before = Outputs(model);
        using Tensor after = Outputs(reloaded);
        return MaxAbsDiff(before, after);
    }

    /// <summary>An adapter that cannot follow a resize (the interface's defaults).</summary>
    sealed class FixedAdapter : ILinearAdapter
    {
        public Tensor Forward(TunableLinear layer, Tensor x) => nn.functional.linear(x, layer.weight, layer.bias);
        public Tensor DeltaWeight(TunableLinear layer) => zeros_like(layer.weight);
        public IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() => [];
        public void Dispose() { }
    }

    static LoraAdapter AttachLora(TunableLinear layer)
    {
        var adapter = new LoraAdapter(layer, rank: 4, alpha: 8, dropout: 0);
        using (no_grad()) nn.init.normal_(adapter.LoraB, 0, 0.3);
        layer.Adapter = adapter;
        return adapter;
    }

    // ---- pruning is gating to zero --------------------------------------------------------------------------------

    [Fact]
    public void Gpt2_PruningHeadsAndNeuronsEqualsZeroGates()
    {
        using TransformerModel model = LoadEval("gpt2-tiny");
        double diff = GatedVersusPruned(model, new() { [0] = [1, 3], [1] = [2] }, new() { [0] = [0, 5, 17, 100, 191], [1] = [3] });
        output.WriteLine($"gpt2-tiny gated vs pruned: max |Δ| {diff:E3}");
        Assert.True(diff <= 1e-5, $"{diff}");
        var attention = model.Layers[0].Attention;
        Assert.Equal((2, 2), (attention.NumHeads, attention.NumKeyValueHeads));
        Assert.Equal([72L, 48L], attention.FusedQkv!.Layer.weight.shape);   // 3 blocks × 2 heads × 12
        Assert.Equal([48L, 24L], attention.Output.Layer.weight.shape);
        Assert.Equal([187L, 48L], model.Layers[0].FeedForward.Inputs[0].Layer.weight.shape);
        Assert.Equal([48L, 187L], model.Layers[0].FeedForward.Output.Layer.weight.shape);
    }

    [Fact]
    public void Bert_PruningHeadsAndNeuronsEqualsZeroGates()
    {
        using TransformerModel model = LoadEval("bert-tiny");
        double diff = GatedVersusPruned(model, new() { [0] = [2], [1] = [0, 1, 3] }, new() { [0] = [4, 50, 95], [1] = [0] });
        output.WriteLine($"bert-tiny gated vs pruned: max |Δ| {diff:E3}");
        Assert.True(diff <= 1e-5, $"{diff}");
        Assert.Equal([12L, 48L], model.state_dict()["bert.encoder.layer.1.attention.self.key.weight"].shape);
        Assert.Equal([12L], model.state_dict()["bert.encoder.layer.1.attention.self.value.bias"].shape);
        Assert.Equal([48L, 93L], model.state_dict()["bert.encoder.layer.0.output.dense.weight"].shape);
    }

    [Fact]
    public void LlamaGqa_PruningKeyValueGroupsAndNeuronsEqualsZeroGates()
    {
        using TransformerModel model = LoadEval("llama-tiny");
        Assert.Equal(2, model.Layers[0].Attention.GroupSize);
        double diff = GatedVersusPruned(model, new() { [0] = [0, 1], [1] = [2, 3] }, new() { [0] = [7, 8, 159], [1] = [1] });
        output.WriteLine($"llama-tiny (GQA 4/2) gated vs pruned: max |Δ| {diff:E3}");
        Assert.True(diff <= 1e-5, $"{diff}");
        var attention = model.Layers[0].Attention;
        Assert.Equal((2, 1, 2), (attention.NumHeads, attention.NumKeyValueHeads, attention.GroupSize));
        Assert.Equal([32L, 64L], attention.Query!.Layer.weight.shape);
        Assert.Equal([16L, 64L], attention.Key!.Layer.weight.shape);
        Assert.Equal([16L, 64L], attention.Value!.Layer.weight.shape);
        Assert.Equal([64L, 32L], attention.Output.Layer.weight.shape);
        Assert.Equal([2, 3], attention.PresentHeads);
        Assert.Equal([157L, 64L], model.Layers[0].FeedForward.Inputs[1].Layer.weight.shape);   // up_proj
    }

    [Fact]
    public void LlamaWithoutGrouping_RemovesSingleHeads()
    {
        // n_kv == nh: every head is its own key/value group.
        ModelConfig config = ModelConfig.Parse("""
            {"model_type": "llama", "vocab_size": 40, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1,
             "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 16, "attention_bias": true}
            """);
        manual_seed(3);
        using TransformerModel model = PretrainedModel.Create(config, ModelHead.CausalLM);
        model.eval();
        double diff = GatedVersusPruned(model, new() { [0] = [1] }, new());
        output.WriteLine($"llama (4/4 heads, attention_bias) gated vs pruned: max |Δ| {diff:E3}");
        Assert.True(diff <= 1e-5, $"{diff}");
        Assert.Equal((3, 3), (model.Layers[0].Attention.NumHeads, model.Layers[0].Attention.NumKeyValueHeads));
        Assert.Equal([24L], model.Layers[0].Attention.Key!.Layer.bias!.shape);
    }

    // ---- save and reload ----------------------------------------------------------------------------------------

    [Fact]
    public void Bert_HeadPrunedConfigCarriesHuggingFacePrunedHeadsAndReloads()
    {
        using TransformerModel model = LoadEval("bert-tiny");
        model.PruneHeads(0, [1]);      // original head 1
        model.PruneHeads(0, [2]);      // current 2 = original 3
        model.PruneHeads(1, [0, 2]);
        Assert.Equal([0, 2], model.Layers[0].Attention.PresentHeads);
        double diff = SaveReloadDifference(model, "bert", out string dir);
        output.WriteLine($"bert-tiny head-pruned save → load: max |Δ| {diff:E3}");
        Assert.True(diff <= 1e-5, $"{diff}");
        Assert.Equal("""{"0":[1,3],"1":[0,2]}""", ConfigJson(dir, "pruned_heads"));
        Assert.Equal("(absent)", ConfigJson(dir, "sparsetune_intermediate_sizes"));
        Assert.Equal("(absent)", ConfigJson(dir, "sparsetune_pruned_heads"));
    }

    [Fact]
    public void Gpt2_HeadAndNeuronPrunedConfigRecordsBothAndReloads()
    {
        using TransformerModel model = LoadEval("gpt2-tiny");
        model.PruneHeads(1, [3]);
        model.PruneHeads(1, [0]);
        model.PruneNeurons(0, Enumerable.Range(0, 50).ToArray());
        double diff = SaveReloadDifference(model, "gpt2", out string dir);
        output.WriteLine($"gpt2-tiny pruned save → load: max |Δ| {diff:E3}");
        Assert.True(diff <= 1e-5, $"{diff}");
        Assert.Equal("""{"1":[0,3]}""", ConfigJson(dir, "pruned_heads"));
        Assert.Equal("[142,192]", ConfigJson(dir, "sparsetune_intermediate_sizes"));
    }

    [Fact]
    public void LlamaGqa_PrunedConfigUsesSparseTuneKeysAndReloads()
    {
        using TransformerModel model = LoadEval("llama-tiny");
        model.PruneHeads(1, [0, 1]);
        model.PruneNeurons(1, [0, 1, 2, 3]);
        double diff = SaveReloadDifference(model, "llama", out string dir);
        output.WriteLine($"llama-tiny pruned save → load: max |Δ| {diff:E3}");
        Assert.True(diff <= 1e-5, $"{diff}");
        Assert.Equal("""{"1":[0,1]}""", ConfigJson(dir, "sparsetune_pruned_heads"));
        Assert.Equal("(absent)", ConfigJson(dir, "pruned_heads"));
        Assert.Equal("[160,156]", ConfigJson(dir, "sparsetune_intermediate_sizes"));
    }

    [Fact]
    public void Unpruned_SavedConfigHasNoPruningKeys()
    {
        using TransformerModel model = LoadEval("bert-tiny");
        model.PruneHeads(0, []);   // an empty request changes nothing
        PretrainedModel.Save(model, Path.Combine(temp, "plain"));
        string text = File.ReadAllText(Path.Combine(temp, "plain", "config.json"));
        Assert.DoesNotContain("pruned_heads", text);
        Assert.DoesNotContain("sparsetune_", text);
    }

    [Fact]
    public void RecordedPruningThatDoesNotFitIsAConfigError()
    {
        string dir = Directory.CreateDirectory(Path.Combine(temp, "bad")).FullName;
        JsonNode config = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Model("bert-tiny"), "config.json")))!;
        config["pruned_heads"] = JsonNode.Parse("""{"1": [0, 7]}""");
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var e = Assert.Throws<ModelConfigException>(() => PretrainedModel.Create(ModelConfig.Load(dir), ModelHead.SequenceClassification));
        output.WriteLine(e.Message);
        Assert.Contains("layer 1: head 7 out of range", e.Message);
    }

    // ---- invalid requests ---------------------------------------------------------------------------------------

    [Theory]
    [InlineData("heads", 2, new[] { 0 }, "layer 2 does not exist")]
    [InlineData("heads", 0, new[] { 4 }, "layer 0: head 4 out of range")]
    [InlineData("heads", 1, new[] { -1, 2 }, "layer 1: head -1 out of range")]
    [InlineData("heads", 0, new[] { 1, 1 }, "layer 0: head 1 listed more than once")]
    [InlineData("heads", 1, new[] { 0, 1, 2, 3 }, "layer 1: removing all 4 heads")]
    [InlineData("neurons", 0, new[] { 96 }, "layer 0: neuron 96 out of range")]
    [InlineData("neurons", 1, new[] { 3, 3 }, "layer 1: neuron 3 listed more than once")]
    public void Bert_InvalidRequestsThrowAndLeaveTheModelUntouched(string what, int layer, int[] units, string message)
    {
        using TransformerModel model = LoadEval("bert-tiny");
        AssertRefusedWithoutChange(model, () =>
        {
            if (what == "heads") model.PruneHeads(layer, units); else model.PruneNeurons(layer, units);
        }, message);
    }

    [Fact]
    public void LlamaGqa_PartialGroupIsRefused()
    {
        using TransformerModel model = LoadEval("llama-tiny");
        AssertRefusedWithoutChange(model, () => model.PruneHeads(0, [1, 2, 3]),
            "layer 0: removing heads [1, 2, 3] breaks grouped-query attention: key/value head 0 serves query heads [0, 1]");
    }

    [Fact]
    public void AdapterThatCannotFollowIsRefusedBeforeAnyLayerChanges()
    {
        using TransformerModel model = LoadEval("bert-tiny");
        var view = model.Layers[0].Attention;
        LoraAdapter lora = AttachLora(view.Query!.Layer);      // could follow, and comes first
        view.Value!.Layer.Adapter = new FixedAdapter();       // cannot
        AssertRefusedWithoutChange(model, () => model.PruneHeads(0, [1]),
            "layer 0: cannot prune: bert.encoder.layer.0.attention.self.value carries a FixedAdapter, which cannot follow a resize");
        Assert.Equal([48L, 4L], lora.LoraB.shape);
        // The interface's own default refuses too, naming the adapter type.
        using Tensor rows = arange(0, 12);
        var direct = Assert.Throws<NotSupportedException>(() => view.Value.Layer.KeepRows(rows));
        Assert.Contains("FixedAdapter", direct.Message);
        Assert.Equal([48L, 48L], view.Value.Layer.weight.shape);
    }

    void AssertRefusedWithoutChange(TransformerModel model, Action request, string message)
    {
        var shapes = DecoderFixtures.KeysAndShapes(model);
        string config = model.Config.ToJson();
        using Tensor before = Outputs(model);
        var e = Assert.Throws<ArgumentException>(request);
        output.WriteLine(e.Message);
        Assert.Contains(message, e.Message);
        Assert.Equal(shapes, DecoderFixtures.KeysAndShapes(model));
        Assert.Equal(config, model.Config.ToJson());
        using Tensor after = Outputs(model);
        Assert.Equal(0.0, MaxAbsDiff(before, after));
    }

    // ---- adapters follow ----------------------------------------------------------------------------------------

    [Fact]
    public void Bert_LoraOnQueryAndValueFollowsHeadPruning()
    {
        using TransformerModel model = LoadEval("bert-tiny");
        manual_seed(5);
        var view = model.Layers[0].Attention;
        LoraAdapter q = AttachLora(view.Query!.Layer), v = AttachLora(view.Value!.Layer), o = AttachLora(view.Output.Layer);
        double diff = GatedVersusPruned(model, new() { [0] = [2] }, new());
        output.WriteLine($"bert-tiny + LoRA on query/value/output.dense, gated vs pruned: max |Δ| {diff:E3}");
        Assert.True(diff <= 1e-5, $"{diff}");
        Assert.Equal([36L, 4L], q.LoraB.shape);
        Assert.Equal([4L, 48L], q.LoraA.shape);
        Assert.Equal([36L, 4L], v.LoraB.shape);
        Assert.Equal([4L, 36L], o.LoraA.shape);   // the output projection lost input columns
        Assert.Equal([48L, 4L], o.LoraB.shape);
    }

    [Fact]
    public void Gpt2_LoraOnFusedQkvFollowsHeadPruning()
    {
        using TransformerModel model = LoadEval("gpt2-tiny");
        manual_seed(6);
        var view = model.Layers[1].Attention;
        LoraAdapter qkv = AttachLora(view.FusedQkv!.Layer);
        LoraAdapter fc = AttachLora(model.Layers[1].FeedForward.Inputs[0].Layer);
        double diff = GatedVersusPruned(model, new() { [1] = [0] }, new() { [1] = [9, 10] });
        output.WriteLine($"gpt2-tiny + LoRA on c_attn and c_fc, gated vs pruned: max |Δ| {diff:E3}");
        Assert.True(diff <= 1e-5, $"{diff}");
        Assert.Equal([108L, 4L], qkv.LoraB.shape);
        Assert.Equal([190L, 4L], fc.LoraB.shape);
    }

    [Fact]
    public void LoraKeepRanksEqualsZeroingTheDroppedRanks()
    {
        manual_seed(7);
        using var layer = new TunableLinear(6, 5);
        using var adapter = new LoraAdapter(layer, rank: 4, alpha: 8, dropout: 0);
        layer.Adapter = adapter;
        using (no_grad()) nn.init.normal_(adapter.LoraB);
        using Tensor x = randn(3, 6);
        using Tensor full = layer.call(x).detach();
        using (no_grad()) { adapter.LoraB[.., 1].zero_(); adapter.LoraB[.., 3].zero_(); }
        using Tensor zeroed = layer.call(x).detach();
        Assert.True(MaxAbsDiff(full, zeroed) > 1e-3);

        using Tensor ranks = tensor(new long[] { 0, 2 });
        adapter.KeepRanks(ranks);
        using Tensor kept = layer.call(x).detach();
        double diff = MaxAbsDiff(kept, zeroed);
        output.WriteLine($"LoRA KeepRanks([0, 2]) vs ranks 1, 3 zeroed: max |Δ| {diff:E3}");
        Assert.True(diff <= 1e-5, $"{diff}");
        Assert.Equal(2, adapter.Rank);
        Assert.Equal(2.0, adapter.Scaling);   // alpha / original rank, unchanged
        Assert.Equal([2L, 6L], adapter.LoraA.shape);
        Assert.Equal([5L, 2L], adapter.LoraB.shape);
        Assert.Throws<ArgumentException>(() => adapter.KeepRanks(tensor(new long[] { 2 })));
    }

    // ---- bookkeeping --------------------------------------------------------------------------------------------

    [Fact]
    public void ParameterCountsDropByExactlyThePrunedShapes()
    {
        using TransformerModel bert = LoadEval("bert-tiny");
        long C = 48, hs = 12;
        long before = bert.ParameterCount();
        bert.PruneHeads(0, [3]);
        // q, k, v lose hs rows of C weights and hs bias entries each; attention.output.dense loses hs columns.
        Assert.Equal(4 * hs * C + 3 * hs, before - bert.ParameterCount());
        before = bert.ParameterCount();
        bert.PruneNeurons(1, [0, 1, 2]);
        // intermediate.dense loses a row of C and a bias entry, output.dense a column of C, per neuron.
        Assert.Equal(3 * (2 * C + 1), before - bert.ParameterCount());

        using TransformerModel llama = LoadEval("llama-tiny");
        long lc = 64, lhs = 16;
        before = llama.ParameterCount();
        llama.PruneHeads(0, [2, 3]);
        // Two query heads (q rows, o_proj columns) and one key/value head (k and v rows); no biases.
        Assert.Equal(2 * 2 * lhs * lc + 2 * lhs * lc, before - llama.ParameterCount());
    }

    [Fact]
    public void LayerViewsNameTheLinearsAndLocateHeadRows()
    {
        using TransformerModel gpt2 = LoadEval("gpt2-tiny");
        AttentionView a = gpt2.Layers[1].Attention;
        Assert.True(a.IsFused);
        Assert.Equal("transformer.h.1.attn.c_attn", a.ProjectionOf(QkvPart.Key).Name);
        Assert.Equal("transformer.h.1.attn.c_proj", a.Output.Name);
        Assert.Equal(["transformer.h.1.mlp.c_fc"], gpt2.Layers[1].FeedForward.Inputs.Select(l => l.Name));
        Assert.Equal("transformer.h.1.mlp.c_proj", gpt2.Layers[1].FeedForward.Output.Name);
        Assert.Equal(Enumerable.Range(12, 12).Select(i => (long)i), a.HeadRows(QkvPart.Query, 1));
        Assert.Equal(Enumerable.Range(48 + 12, 12).Select(i => (long)i), a.HeadRows(QkvPart.Key, 1));
        Assert.Equal(Enumerable.Range(96 + 36, 12).Select(i => (long)i), a.HeadRows(QkvPart.Value, 3));
        Assert.Equal(Enumerable.Range(24, 12).Select(i => (long)i), a.OutputColumns(2));
        gpt2.PruneHeads(1, [0]);
        Assert.Equal(Enumerable.Range(36, 12).Select(i => (long)i), a.HeadRows(QkvPart.Key, 0));   // blocks are 36 rows now
        Assert.Equal([1, 2, 3], a.PresentHeads);

        using TransformerModel bert = LoadEval("bert-tiny");
        Assert.Equal("bert.encoder.layer.1.attention.self.query", bert.Layers[1].Attention.Query!.Name);
        Assert.Equal("bert.encoder.layer.1.attention.output.dense", bert.Layers[1].Attention.Output.Name);
        Assert.Equal("bert.encoder.layer.1.intermediate.dense", bert.Layers[1].FeedForward.Inputs[0].Name);
        Assert.Equal("bert.encoder.layer.1.output.dense", bert.Layers[1].FeedForward.Output.Name);

        using TransformerModel llama = LoadEval("llama-tiny");
        AttentionView l = llama.Layers[0].Attention;
        Assert.Equal(["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"], llama.Layers[0].FeedForward.Inputs.Select(x => x.Name));
        Assert.Equal(1, l.KeyValueHeadOf(3));
        Assert.Equal(Enumerable.Range(48, 16).Select(i => (long)i), l.HeadRows(QkvPart.Query, 3));
        Assert.Equal(Enumerable.Range(16, 16).Select(i => (long)i), l.HeadRows(QkvPart.Value, 3));   // kv head 1
        Assert.Throws<ArgumentOutOfRangeException>(() => l.HeadRows(QkvPart.Query, 4));
    }

    [Fact]
    public void GatesStayOutOfTheStateDictAndCheckTheirShape()
    {
        using TransformerModel model = LoadEval("llama-tiny");
        var keys = DecoderFixtures.KeysAndShapes(model);
        int parameters = model.parameters().Count();
        using var headGate = new Parameter(ones(4));
        using var neuronGate = new Parameter(ones(160));
        model.Layers[0].Attention.HeadGate = headGate;
        model.Layers[0].FeedForward.NeuronGate = neuronGate;
        Assert.Equal(keys, DecoderFixtures.KeysAndShapes(model));
        Assert.Equal(parameters, model.parameters().Count());
        var e = Assert.Throws<ArgumentException>(() => model.Layers[1].Attention.HeadGate = ones(3));
        Assert.Contains("must have shape [4]", e.Message);

        // Pruning replaces a Parameter gate by a new one that remembers where it came from and still trains.
        model.PruneHeads(0, [0, 1]);
        var sliced = Assert.IsType<Parameter>(model.Layers[0].Attention.HeadGate);
        Assert.True(sliced.requires_grad);
        Assert.True(ParameterLineage.TryGetOrigin(sliced, out var origin));
        Assert.Same(headGate, origin.Source);
        Assert.Equal([2L, 3L], origin.Kept!.data<long>().ToArray());
    }
}
