using System.Text.Json.Nodes;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Tests.Support;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.Models;

/// <summary>
/// LLaMA family against Hugging Face. The llama-tiny fixture (2 layers, hidden 64, 4 query heads over 2 key/value
/// heads, vocab 241, untied lm_head, LlamaForCausalLM) comes with reference.safetensors: input_ids and
/// attention_mask (2, 12), row 1 right-padded after 8 tokens; last_hidden_state (2, 12, 64), taken after
/// model.norm; logits (2, 12, 241).
/// </summary>
public sealed class LlamaTests(ITestOutputHelper output) : IDisposable
{
    static readonly string Fixture = Fixtures.Model("llama-tiny");
    readonly string temp = Fixtures.TempDirectory("llama");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    [Fact]
    public void LlamaTiny_MatchesHuggingFaceLogitsAndHiddenStates()
    {
        using var scope = NewDisposeScope();
        using TransformerModel model = PretrainedModel.Load(Fixture);
        model.eval();
        var (logitsError, hiddenError) = DecoderFixtures.ParityErrors(model, Fixture);
        output.WriteLine($"llama-tiny max |Δ| at real tokens: logits {logitsError:E3}, last_hidden_state {hiddenError:E3}");
        Assert.True(logitsError <= 1e-4, $"logits max abs error {logitsError}");
        Assert.True(hiddenError <= 1e-4, $"last_hidden_state max abs error {hiddenError}");
    }

    [Fact]
    public void LlamaTiny_ReferenceHiddenStateIsAfterFinalNorm()
    {
        // HF's logits are lm_head(norm(h)); if last_hidden_state is already norm(h) it reproduces them alone.
        using var scope = NewDisposeScope();
        var reference = SafeTensors.Load(Path.Combine(Fixture, "reference.safetensors"));
        var weights = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        Tensor logits = nn.functional.linear(reference["last_hidden_state"], weights["lm_head.weight"]);
        double error = (logits - reference["logits"]).abs().max().item<float>();
        output.WriteLine($"|last_hidden_state · lm_headᵀ - logits| max {error:E3}");
        Assert.True(error <= 1e-4, $"{error}");
    }

    [Fact]
    public void LlamaTiny_StateDictKeysAndShapesArePinned()
    {
        string[] expected =
        [
            "model.embed_tokens.weight [241, 64]",
            "model.layers.0.self_attn.q_proj.weight [64, 64]",
            "model.layers.0.self_attn.k_proj.weight [32, 64]",
            "model.layers.0.self_attn.v_proj.weight [32, 64]",
            "model.layers.0.self_attn.o_proj.weight [64, 64]",
            "model.layers.0.mlp.gate_proj.weight [160, 64]",
            "model.layers.0.mlp.up_proj.weight [160, 64]",
            "model.layers.0.mlp.down_proj.weight [64, 160]",
            "model.layers.0.input_layernorm.weight [64]",
            "model.layers.0.post_attention_layernorm.weight [64]",
            "model.layers.1.self_attn.q_proj.weight [64, 64]",
            "model.layers.1.self_attn.k_proj.weight [32, 64]",
            "model.layers.1.self_attn.v_proj.weight [32, 64]",
            "model.layers.1.self_attn.o_proj.weight [64, 64]",
            "model.layers.1.mlp.gate_proj.weight [160, 64]",
            "model.layers.1.mlp.up_proj.weight [160, 64]",
            "model.layers.1.mlp.down_proj.weight [64, 160]",
            "model.layers.1.input_layernorm.weight [64]",
            "model.layers.1.post_attention_layernorm.weight [64]",
            "model.norm.weight [64]",
            "lm_head.weight [241, 64]",
        ];
        using TransformerModel model = PretrainedModel.Create(ModelConfig.Load(Fixture), ModelHead.CausalLM);
        Assert.Equal(expected, DecoderFixtures.KeysAndShapes(model));
        Assert.Equal(["lm_head"], model.HeadModuleNames);
        Assert.Equal(model.state_dict().Keys, model.WeightTable.Entries.Select(e => e.ParameterName));
        Assert.DoesNotContain(model.WeightTable.Entries, e => e.Transposed);

        // A forward pass fills the rotary cache; it must stay out of the state dict.
        using (var scope = NewDisposeScope())
        using (ModelOutput _ = model.Forward(ones(1, 5, dtype: ScalarType.Int64)))
            Assert.Equal(expected, DecoderFixtures.KeysAndShapes(model));

        var attention = ((LlamaTransformer)model).Model.Layers[0].SelfAttn;
        Assert.Equal((4, 2, 16), (attention.NumHeads, attention.NumKeyValueHeads, attention.HeadDim));
    }

    [Fact]
    public void LlamaTiny_SaveThenLoadRoundTripsBitExactly() => DecoderFixtures.AssertRoundTrip(Fixture, temp, output);

    [Theory]
    [InlineData("missing", "model.layers.1.mlp.up_proj.weight")]
    [InlineData("extra", "model.layers.0.self_attn.extra.weight")]
    [InlineData("shape", "model.layers.0.self_attn.k_proj.weight")]
    public void LlamaTiny_CheckpointMismatchNamesTheKey(string kind, string key) =>
        DecoderFixtures.AssertMismatch(Fixture, temp, kind, key, output);

    [Fact]
    public void Qwen2Config_HasQkvBiasAndNoOutputBias()
    {
        using var scope = NewDisposeScope();
        string source = WriteConfig("qwen2-source", c => c["model_type"] = "qwen2");
        var config = (LlamaConfig)ModelConfig.Load(source);
        Assert.True(config.QkvBias);
        Assert.False(config.OutputBias);

        manual_seed(11);
        using TransformerModel created = PretrainedModel.Create(config, ModelHead.CausalLM);
        PretrainedModel.Save(created, source);
        using TransformerModel model = PretrainedModel.Load(source);
        Assert.IsType<LlamaTransformer>(model);
        Assert.Equal("qwen2", model.Config.ModelType);

        var keys = model.state_dict().Keys.ToHashSet();
        foreach (string proj in new[] { "q_proj", "k_proj", "v_proj" })
            Assert.Contains($"model.layers.0.self_attn.{proj}.bias", keys);
        Assert.DoesNotContain("model.layers.0.self_attn.o_proj.bias", keys);
        Assert.Equal("model.layers.0.self_attn.k_proj.bias [32]",
            DecoderFixtures.KeysAndShapes(model).Single(k => k.StartsWith("model.layers.0.self_attn.k_proj.bias")));
        Assert.Equal(21 + 2 * 3, keys.Count);

        var before = created.state_dict();
        foreach (var (name, tensor) in model.state_dict()) Assert.True(tensor.Equals(before[name]), name);
        using var noGrad = no_grad();
        Tensor ids = randint(0, 241, [2, 9]);
        using ModelOutput a = created.Forward(ids), b = model.Forward(ids);
        Assert.True(a.Logits.Equals(b.Logits));
        Assert.Equal([2, 9, 241], b.Logits.shape);
    }

    [Fact]
    public void Llama_TiedEmbeddingsHaveNoLmHeadAndIgnoreAStrayOne()
    {
        using var scope = NewDisposeScope();
        string dir = WriteConfig("tied", c => c["tie_word_embeddings"] = true);
        var tensors = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));   // still holds lm_head.weight
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), tensors);

        using TransformerModel model = PretrainedModel.Load(dir);
        Assert.DoesNotContain(model.state_dict().Keys, k => k.StartsWith("lm_head"));
        Assert.Empty(model.HeadModuleNames);
        using var noGrad = no_grad();
        Tensor ids = randint(0, 241, [1, 6]);
        using ModelOutput result = model.Forward(ids);
        Tensor expected = nn.functional.linear(result.LastHiddenState, tensors["model.embed_tokens.weight"]);
        Assert.True((result.Logits - expected).abs().max().item<float>() < 1e-5);
    }

    [Fact]
    public void Llama_ClassificationPoolsLastRealTokenAndIgnoresPadding()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        using TransformerModel model = PretrainedModel.Load(Fixture, ModelHead.SequenceClassification, ["a", "b"], out LoadReport report);
        Assert.Equal(["score.weight"], report.NewlyInitialised);
        Assert.Equal(["lm_head.weight"], report.DroppedKeys);
        Assert.Equal(["score"], model.HeadModuleNames);
        model.eval();
        DecoderFixtures.AssertClassifierIgnoresRightPadding(model, vocab: 241, classes: 2);
    }

    [Fact]
    public void Llama_LeftPaddingKeepsEveryOutputFinite()
    {
        // A left-padded query has no key to attend to; without care its NaN would leak into real tokens.
        using var scope = NewDisposeScope();
        using TransformerModel model = PretrainedModel.Load(Fixture);
        model.eval();
        using var noGrad = no_grad();
        Tensor ids = randint(1, 241, [2, 8]);
        Tensor mask = ones(2, 8, dtype: ScalarType.Int64);
        mask[0, TensorIndex.Slice(0, 3)] = 0;
        using ModelOutput result = model.Forward(ids, mask);
        Assert.True(result.Logits.isfinite().all().item<bool>());
        Assert.True(result.LastHiddenState.isfinite().all().item<bool>());
    }

    [Fact]
    public void Llama_GradientCheckpointingGivesTheSameGradients()
    {
        using TransformerModel model = PretrainedModel.Load(Fixture);
        DecoderFixtures.AssertCheckpointingKeepsGradients(model, vocab: 241, output);
    }

    [Fact]
    public void Llama_ForwardAndBackwardLeaveNoLiveTensors()
    {
        using TransformerModel model = PretrainedModel.Load(Fixture);
        DecoderFixtures.AssertNoTensorLeaks(model, vocab: 241);
    }

    /// <summary>The fixture's config.json, edited, in a new folder.</summary>
    string WriteConfig(string name, Action<JsonObject> edit)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixture, "config.json")))!.AsObject();
        edit(json);
        string dir = DecoderFixtures.Folder(temp, name);
        File.WriteAllText(Path.Combine(dir, "config.json"), json.ToJsonString());
        return dir;
    }
}
