using System.Text.RegularExpressions;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Tests.Support;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.Models;

/// <summary>
/// GPT-2 against Hugging Face. The gpt2-tiny fixture (2 layers, 4 heads, n_embd 48, vocab 211, GPT2LMHeadModel)
/// comes with reference.safetensors: input_ids and attention_mask (2, 12), row 1 right-padded after 8 tokens;
/// last_hidden_state (2, 12, 48), taken after ln_f; logits (2, 12, 211).
/// </summary>
public sealed class Gpt2Tests(ITestOutputHelper output) : IDisposable
{
    static readonly string Fixture = Fixtures.Model("gpt2-tiny");
    readonly string temp = Fixtures.TempDirectory("gpt2");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    [Fact]
    public void Gpt2Tiny_MatchesHuggingFaceLogitsAndHiddenStates()
    {
        using var scope = NewDisposeScope();
        using TransformerModel model = PretrainedModel.Load(Fixture);
        model.eval();
        var (logitsError, hiddenError) = DecoderFixtures.ParityErrors(model, Fixture);
        output.WriteLine($"gpt2-tiny max |Δ| at real tokens: logits {logitsError:E3}, last_hidden_state {hiddenError:E3}");
        Assert.True(logitsError <= 1e-4, $"logits max abs error {logitsError}");
        Assert.True(hiddenError <= 1e-4, $"last_hidden_state max abs error {hiddenError}");
    }

    [Fact]
    public void Gpt2Tiny_ReferenceHiddenStateIsAfterFinalLayerNorm()
    {
        // HF's logits are ln_f(h) · wteᵀ; if last_hidden_state is already ln_f(h) it reproduces them alone.
        using var scope = NewDisposeScope();
        var reference = SafeTensors.Load(Path.Combine(Fixture, "reference.safetensors"));
        var weights = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        Tensor logits = nn.functional.linear(reference["last_hidden_state"], weights["transformer.wte.weight"]);
        double error = (logits - reference["logits"]).abs().max().item<float>();
        output.WriteLine($"|last_hidden_state · wteᵀ - logits| max {error:E3}");
        Assert.True(error <= 1e-4, $"{error}");
    }

    [Fact]
    public void Gpt2Tiny_StateDictKeysAndShapesArePinned()
    {
        string[] expected =
        [
            "transformer.wte.weight [211, 48]",
            "transformer.wpe.weight [32, 48]",
            "transformer.h.0.ln_1.weight [48]",
            "transformer.h.0.ln_1.bias [48]",
            "transformer.h.0.attn.c_attn.weight [144, 48]",
            "transformer.h.0.attn.c_attn.bias [144]",
            "transformer.h.0.attn.c_proj.weight [48, 48]",
            "transformer.h.0.attn.c_proj.bias [48]",
            "transformer.h.0.ln_2.weight [48]",
            "transformer.h.0.ln_2.bias [48]",
            "transformer.h.0.mlp.c_fc.weight [192, 48]",
            "transformer.h.0.mlp.c_fc.bias [192]",
            "transformer.h.0.mlp.c_proj.weight [48, 192]",
            "transformer.h.0.mlp.c_proj.bias [48]",
            "transformer.h.1.ln_1.weight [48]",
            "transformer.h.1.ln_1.bias [48]",
            "transformer.h.1.attn.c_attn.weight [144, 48]",
            "transformer.h.1.attn.c_attn.bias [144]",
            "transformer.h.1.attn.c_proj.weight [48, 48]",
            "transformer.h.1.attn.c_proj.bias [48]",
            "transformer.h.1.ln_2.weight [48]",
            "transformer.h.1.ln_2.bias [48]",
            "transformer.h.1.mlp.c_fc.weight [192, 48]",
            "transformer.h.1.mlp.c_fc.bias [192]",
            "transformer.h.1.mlp.c_proj.weight [48, 192]",
            "transformer.h.1.mlp.c_proj.bias [48]",
            "transformer.ln_f.weight [48]",
            "transformer.ln_f.bias [48]",
        ];
        using TransformerModel model = PretrainedModel.Create(ModelConfig.Load(Fixture), ModelHead.CausalLM);
        Assert.Equal(expected, DecoderFixtures.KeysAndShapes(model));
        // The LM head is tied to wte: no parameter of its own, and wte counted once.
        Assert.Equal(28, model.parameters().Count());

        using TransformerModel classifier = PretrainedModel.Create(
            ModelConfig.Load(Fixture) with { Id2Label = new() { ["0"] = "neg", ["1"] = "pos" } }, ModelHead.SequenceClassification);
        Assert.Equal([.. expected, "score.weight [2, 48]"], DecoderFixtures.KeysAndShapes(classifier));
        Assert.Equal(["score"], classifier.HeadModuleNames);
        Assert.Empty(model.HeadModuleNames);
    }

    [Fact]
    public void Gpt2Tiny_WeightTableTransposesExactlyTheConv1DWeights()
    {
        using TransformerModel model = PretrainedModel.Create(ModelConfig.Load(Fixture), ModelHead.CausalLM);
        var transposed = model.WeightTable.Entries.Where(e => e.Transposed).Select(e => e.CheckpointName).ToList();
        Assert.Equal(8, transposed.Count);
        Assert.All(transposed, name => Assert.Matches(@"^transformer\.h\.\d\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$", name));
        Assert.Equal(model.state_dict().Keys.Order(), model.WeightTable.Entries.Select(e => e.ParameterName).Order());
    }

    [Fact]
    public void Gpt2Tiny_SaveThenLoadRoundTripsBitExactly() => DecoderFixtures.AssertRoundTrip(Fixture, temp, output);

    [Theory]
    [InlineData("missing", "transformer.h.1.mlp.c_fc.bias")]
    [InlineData("extra", "transformer.h.0.attn.c_extra.weight")]
    [InlineData("shape", "transformer.h.1.attn.c_attn.weight")]
    public void Gpt2Tiny_CheckpointMismatchNamesTheKey(string kind, string key) =>
        DecoderFixtures.AssertMismatch(Fixture, temp, kind, key, output);

    [Fact]
    public void Gpt2_LoadsBareGpt2ModelKeysAndIgnoresMaskBuffersAndTiedLmHead()
    {
        // GPT2Model files have no "transformer." prefix; older files carry h.N.attn.bias / masked_bias buffers
        // and a copy of the tied lm_head.
        using var scope = NewDisposeScope();
        var original = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        var bare = original.ToDictionary(kv => kv.Key["transformer.".Length..], kv => kv.Value);
        for (int i = 0; i < 2; i++)
        {
            bare[$"h.{i}.attn.bias"] = ones(32, 32).tril().view(1, 1, 32, 32);
            bare[$"h.{i}.attn.masked_bias"] = tensor(-1e4f);
        }
        bare["lm_head.weight"] = original["transformer.wte.weight"];
        string dir = DecoderFixtures.Folder(temp, "bare");
        File.Copy(Path.Combine(Fixture, "config.json"), Path.Combine(dir, "config.json"));
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), bare);

        using TransformerModel model = PretrainedModel.Load(dir);
        var state = model.state_dict();
        Assert.Equal(original.Count, state.Count);
        foreach (var (name, tensor) in original)
        {
            Tensor expected = model.WeightTable.Entries.Single(e => e.CheckpointName == name).Transposed ? tensor.t() : tensor;
            Assert.True(state[name].Equals(expected), name);
        }
    }

    [Fact]
    public void Gpt2_ClassificationPoolsLastRealTokenAndIgnoresPadding()
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        using TransformerModel model = PretrainedModel.Load(Fixture, ModelHead.SequenceClassification, ["neg", "pos", "neutral"], out LoadReport report);
        Assert.Equal(["score.weight"], report.NewlyInitialised);
        model.eval();
        DecoderFixtures.AssertClassifierIgnoresRightPadding(model, vocab: 211, classes: 3);
    }

    [Fact]
    public void Gpt2_DropoutOnlyInTrainingMode()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        using TransformerModel model = PretrainedModel.Load(Fixture);
        Tensor ids = randint(0, 211, [2, 10]);
        using var noGrad = no_grad();
        model.eval();
        using (ModelOutput a = model.Forward(ids), b = model.Forward(ids)) Assert.True(a.Logits.Equals(b.Logits));
        model.train();
        using (ModelOutput a = model.Forward(ids), b = model.Forward(ids)) Assert.False(a.Logits.Equals(b.Logits));
    }

    [Fact]
    public void Gpt2_GradientCheckpointingGivesTheSameGradientsWithDropout()
    {
        using TransformerModel model = PretrainedModel.Load(Fixture);
        DecoderFixtures.AssertCheckpointingKeepsGradients(model, vocab: 211, output);
    }

    [Fact]
    public void Gpt2_ForwardAndBackwardLeaveNoLiveTensors()
    {
        using TransformerModel model = PretrainedModel.Load(Fixture);
        DecoderFixtures.AssertNoTensorLeaks(model, vocab: 211);
    }

    [Fact]
    public void Gpt2_HeadCountIsMutableStateOfTheAttentionModule()
    {
        using TransformerModel model = PretrainedModel.Create(ModelConfig.Load(Fixture), ModelHead.CausalLM);
        var attention = ((Gpt2Transformer)model).Transformer.Blocks[0].Attn;
        Assert.Equal(4, attention.NumHeads);
        Assert.Equal(12, attention.HeadDim);
    }
}

/// <summary>Fixture access and checks shared by the decoder-family tests (GPT-2, LLaMA).</summary>
static class DecoderFixtures
{
    /// <summary>A new empty folder under <paramref name="root"/>.</summary>
    public static string Folder(string root, string name) => Directory.CreateDirectory(Path.Combine(root, name)).FullName;

    /// <summary>"key [d0, d1]" for every state_dict entry, in state_dict order.</summary>
    public static List<string> KeysAndShapes(nn.Module model) =>
        model.state_dict().Select(kv => $"{kv.Key} [{string.Join(", ", kv.Value.shape)}]").ToList();

    /// <summary>Max abs error of logits and last_hidden_state against reference.safetensors, at real tokens only.</summary>
    public static (double Logits, double Hidden) ParityErrors(TransformerModel model, string fixture)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var reference = SafeTensors.Load(Path.Combine(fixture, "reference.safetensors"));
        Tensor mask = reference["attention_mask"];
        using ModelOutput result = model.Forward(reference["input_ids"], mask);
        Tensor real = mask.to_type(ScalarType.Bool).unsqueeze(-1);                    // (B, T, 1)
        double MaxError(Tensor ours, Tensor theirs)
        {
            Assert.Equal(theirs.shape, ours.shape);
            Assert.True(ours.isfinite().all().item<bool>(), "non-finite output");
            return (ours - theirs).abs().masked_select(real.expand_as(ours)).max().item<float>();
        }
        return (MaxError(result.Logits, reference["logits"]), MaxError(result.LastHiddenState, reference["last_hidden_state"]));
    }

    /// <summary>Load → Save → Load gives identical tensors; the saved file has the original's keys.</summary>
    public static void AssertRoundTrip(string fixture, string temp, ITestOutputHelper output)
    {
        using var scope = NewDisposeScope();
        using TransformerModel model = PretrainedModel.Load(fixture);
        string dir = Folder(temp, "saved");
        PretrainedModel.Save(model, dir);
        using TransformerModel reloaded = PretrainedModel.Load(dir);

        var before = model.state_dict();
        var after = reloaded.state_dict();
        Assert.Equal(before.Keys, after.Keys);
        foreach (var (name, tensor) in before) Assert.True(tensor.Equals(after[name]), $"{name} changed in the round trip");

        var ignored = model.WeightTable.IgnoredKeyPatterns.Select(p => new Regex(p)).ToList();
        using var originalFile = SafeTensorsFile.Open(Path.Combine(fixture, "model.safetensors"));
        using var savedFile = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        var originalKeys = originalFile.Tensors.Select(t => t.Name).Where(k => !ignored.Any(r => r.IsMatch(k))).Order();
        var savedKeys = savedFile.Tensors.Select(t => t.Name).Order();
        Assert.Equal(originalKeys, savedKeys);
        // Shapes in the file are Hugging Face's (Conv1D weights back to (in, out)).
        foreach (SafeTensorInfo info in savedFile.Tensors) Assert.Equal(originalFile.Info(info.Name).Shape, info.Shape);
        output.WriteLine($"{savedFile.Tensors.Count} tensors round-tripped");
    }

    /// <summary>A fixture checkpoint with one key dropped, added or reshaped fails to load with an error naming it.</summary>
    public static void AssertMismatch(string fixture, string temp, string kind, string key, ITestOutputHelper output)
    {
        using var scope = NewDisposeScope();
        var tensors = SafeTensors.Load(Path.Combine(fixture, "model.safetensors"));
        switch (kind)
        {
            case "missing": Assert.True(tensors.Remove(key)); break;
            case "extra": tensors[key] = zeros(4, 4); break;
            case "shape":
                long[] shape = tensors[key].shape;
                tensors[key] = zeros(shape[0], shape[1] + 1);
                break;
        }
        string dir = Folder(temp, kind);
        File.Copy(Path.Combine(fixture, "config.json"), Path.Combine(dir, "config.json"));
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), tensors);

        var error = Assert.Throws<CheckpointMismatchException>(() => PretrainedModel.Load(dir).Dispose());
        output.WriteLine(error.Message);
        Assert.Contains(key, error.Message);
    }

    /// <summary>
    /// After a warm-up step (gradients allocated, caches filled), a padded forward + backward, with and
    /// without checkpointing, and an eval forward leave the thread's live tensor count unchanged.
    /// </summary>
    public static void AssertNoTensorLeaks(TransformerModel model, long vocab)
    {
        Tensor ids = randint(0, vocab, [2, 10]);
        Tensor mask = ones(2, 10, dtype: ScalarType.Int64);
        mask[1, TensorIndex.Slice(6)] = 0;
        void Step(bool checkpointing)
        {
            using var scope = NewDisposeScope();
            model.train();
            model.GradientCheckpointing = checkpointing;
            using (ModelOutput result = model.Forward(ids, mask)) result.Logits.square().mean().backward();
            model.eval();
            using (no_grad())
            using (ModelOutput result = model.Forward(ids, mask)) { }
        }
        try
        {
            Step(false);
            long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            Step(false);
            Step(true);
            Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        }
        finally
        {
            model.GradientCheckpointing = false;
            ids.Dispose();
            mask.Dispose();
        }
    }

    /// <summary>
    /// Training-mode gradients with activation checkpointing equal those without (dropout masks replay from the
    /// saved RNG state), on a right-padded batch.
    /// </summary>
    public static void AssertCheckpointingKeepsGradients(TransformerModel model, long vocab, ITestOutputHelper output)
    {
        using var scope = NewDisposeScope();
        manual_seed(21);
        Tensor ids = randint(0, vocab, [2, 10]);
        Tensor mask = ones(2, 10, dtype: ScalarType.Int64);
        mask[1, TensorIndex.Slice(6)] = 0;
        model.train();

        Dictionary<string, Tensor> Gradients(bool checkpointing)
        {
            model.GradientCheckpointing = checkpointing;
            model.zero_grad();
            manual_seed(99);
            using (ModelOutput result = model.Forward(ids, mask)) result.Logits.square().mean().backward();
            return model.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        }
        var plain = Gradients(false);
        var checkpointed = Gradients(true);
        model.GradientCheckpointing = false;
        double worst = plain.Max(kv => (kv.Value - checkpointed[kv.Key]).abs().max().item<float>());
        output.WriteLine($"max |Δgrad| with checkpointing: {worst:E3}");
        Assert.True(worst < 1e-6, $"{worst}");
    }

    /// <summary>
    /// Class logits come from each row's last real token: a row padded on the right gives the same logits as
    /// the same tokens alone.
    /// </summary>
    public static void AssertClassifierIgnoresRightPadding(TransformerModel model, long vocab, long classes)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor ids = randint(1, vocab, [2, 12]);
        Tensor mask = ones(2, 12, dtype: ScalarType.Int64);
        mask[1, TensorIndex.Slice(7)] = 0;   // row 1: 7 real tokens, 5 pads
        ids[1, TensorIndex.Slice(7)] = 0;

        using ModelOutput batch = model.Forward(ids, mask);
        Assert.Equal([2, classes], batch.Logits.shape);
        Assert.Equal([2, 12, model.Config.HiddenSize], batch.LastHiddenState.shape);
        using ModelOutput alone = model.Forward(ids[TensorIndex.Slice(1, 2), TensorIndex.Slice(0, 7)]);
        double error = (batch.Logits[1] - alone.Logits[0]).abs().max().item<float>();
        Assert.True(error < 1e-5, $"padded row differs from the unpadded sequence by {error}");
        using ModelOutput first = model.Forward(ids[TensorIndex.Slice(0, 1)]);
        Assert.True((batch.Logits[0] - first.Logits[0]).abs().max().item<float>() < 1e-5);
    }
}
