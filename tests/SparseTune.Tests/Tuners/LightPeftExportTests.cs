using System.Text.Json.Nodes;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.LightPeft;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static SparseTune.Tests.Support.LogitChecks;
using static TorchSharp.torch;

namespace SparseTune.Tests.Tuners;

/// <summary>
/// --export-hf: <see cref="HuggingFaceExport"/> on the three tiny fixtures (bert-tiny 4 heads / 96 neurons, gpt2-tiny
/// fused c_attn, 4 heads / 192 neurons, llama-tiny 4 query heads over 2 key/value heads / 160 neurons), and the
/// Light-PEFT run that writes it. The exported folder must load with the standard shapes and compute the pruned
/// model's logits.
/// </summary>
public sealed class LightPeftExportTests(ITestOutputHelper output) : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("export-hf");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    static TransformerModel LoadEval(string directory)
    {
        TransformerModel model = PretrainedModel.Load(directory);
        model.eval();
        return model;
    }

    /// <summary>Layer 0 loses one head (llama: the group of heads 2, 3), layer 1 two (llama: 0, 1); neurons 1, 4, 7, … of layer 0 and the first 10 plus the last of layer 1.</summary>
    static (int[][] Heads, int[][] Neurons) Plan(TransformerModel model)
    {
        bool llama = model.Config is LlamaConfig;
        int[][] heads = llama ? [[2, 3], [0, 1]] : [[1], [0, 2]];
        int size0 = model.Layers[0].FeedForward.IntermediateSize, size1 = model.Layers[1].FeedForward.IntermediateSize;
        int[][] neurons = [Enumerable.Range(0, size0).Where(n => n % 3 == 1).ToArray(), [.. Enumerable.Range(0, 10), size1 - 1]];
        return (heads, neurons);
    }

    /// <summary>The exported tensor of a parameter, in the model's (out, in) layout (GPT-2's Conv1D transposed back).</summary>
    static Tensor Exported(string directory, TransformerModel model, string parameter)
    {
        WeightMapping entry = model.WeightTable.Entries.Single(e => e.ParameterName == parameter);
        using var checkpoint = SafeTensorsCheckpoint.Open(directory);
        using Tensor loaded = checkpoint.Load(entry.CheckpointName);
        return entry.Transposed ? loaded.t().contiguous() : loaded.clone();
    }

    static double MaxAbs(Tensor t)
    {
        using Tensor m = t.abs().max();
        return m.item<float>();
    }

    static JsonObject ConfigOf(string directory) => JsonNode.Parse(File.ReadAllText(Path.Combine(directory, "config.json")))!.AsObject();

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void ExportedFormLoadsWithStandardShapesAndAgreesWithTheShrunkModel(string fixture)
    {
        using TransformerModel model = LoadEval(Fixtures.Model(fixture));
        int heads = model.Config.NumHeads, size = model.Config.IntermediateSize;
        bool llama = model.Config is LlamaConfig;
        var (removedHeads, removedNeurons) = Plan(model);
        FeedForwardView ffn0 = model.Layers[0].FeedForward;
        AttentionView attention0 = model.Layers[0].Attention;
        string ffnOutput = ffn0.Output.Name + ".weight", attentionOutput = attention0.Output.Name + ".weight";
        using Tensor originalFfnOutput = model.state_dict()[ffnOutput].detach().clone();
        using Tensor originalAttentionOutput = model.state_dict()[attentionOutput].detach().clone();
        using Tensor unpruned = Logits(model);

        for (int l = 0; l < 2; l++)
        {
            model.PruneHeads(l, removedHeads[l]);
            model.PruneNeurons(l, removedNeurons[l]);
        }
        using Tensor shrunk = Logits(model);
        Assert.True(MaxAbsDiff(unpruned, shrunk) > 1e-3, "the pruning must change the logits, or agreeing with it proves nothing");
        Assert.NotNull(model.Config.IntermediateSizes);

        // From the live model: the zeros go where the removed units were.
        string live = Path.Combine(temp, "live");
        HuggingFaceExport.Save(model, live);
        JsonObject config = ConfigOf(live);
        Assert.DoesNotContain(config, p => p.Key.StartsWith("sparsetune_", StringComparison.Ordinal));
        if (llama) Assert.False(config.ContainsKey("pruned_heads"));
        else Assert.Equal("""{"0":[1],"1":[0,2]}""", config["pruned_heads"]!.ToJsonString());

        using (Tensor exportedFfnOutput = Exported(live, model, ffnOutput))
        using (Tensor expected = originalFfnOutput.clone())
        {
            Assert.Equal(new long[] { model.Config.HiddenSize, size }, exportedFfnOutput.shape);
            foreach (int n in removedNeurons[0]) expected[.., n] = 0f;
            Assert.Equal(0.0, MaxAbsDiff(expected, exportedFfnOutput));   // kept columns at their original places, removed ones zero
        }
        using (Tensor exportedAttentionOutput = Exported(live, model, attentionOutput))
        {
            if (llama)
            {
                using Tensor expected = originalAttentionOutput.clone();
                foreach (int h in removedHeads[0]) expected[TensorIndex.Colon, TensorIndex.Slice(h * attention0.HeadDim, (h + 1) * attention0.HeadDim)] = 0f;
                Assert.Equal(0.0, MaxAbsDiff(expected, exportedAttentionOutput));
            }
            else Assert.Equal((heads - 1) * attention0.HeadDim, exportedAttentionOutput.shape[1]);   // smaller, as pruned_heads says
        }

        // From a model loaded from the shrunk folder (it knows only the sizes): the zeros are appended.
        string shrunkFolder = Path.Combine(temp, "shrunk"), appended = Path.Combine(temp, "appended");
        PretrainedModel.Save(model, shrunkFolder);
        using (TransformerModel fromShrunk = LoadEval(shrunkFolder))
            HuggingFaceExport.Save(fromShrunk, appended);

        foreach (string exported in new[] { live, appended })
        {
            using TransformerModel reloaded = LoadEval(exported);
            Assert.Null(reloaded.Config.IntermediateSizes);
            Assert.Null(reloaded.Config.SparseTunePrunedHeads);
            Assert.All(reloaded.Layers, l => Assert.Equal(size, l.FeedForward.IntermediateSize));
            int[] headCounts = reloaded.Layers.Select(l => l.Attention.NumHeads).ToArray();
            int[] expectedHeads = llama ? [heads, heads] : [heads - 1, heads - 2];
            Assert.Equal(expectedHeads, headCounts);
            using Tensor logits = Logits(reloaded);
            double diff = MaxAbsDiff(shrunk, logits);
            output.WriteLine($"{fixture} ({Path.GetFileName(exported)}): exported vs shrunk max |Δ logits| = {diff:E2}; heads {string.Join("/", headCounts)}, FFN {size}");
            Assert.True(diff <= 1e-5, $"{Path.GetFileName(exported)}: the exported form differs from the shrunk model by {diff:E2}");
        }
    }

    [Fact]
    public void Gpt2_PaddedHeadsNeedNoPrunedHeads()
    {
        using TransformerModel model = LoadEval(Fixtures.Model("gpt2-tiny"));
        var (removedHeads, removedNeurons) = Plan(model);
        model.PruneHeads(0, removedHeads[0]);
        model.PruneHeads(1, removedHeads[1]);
        model.PruneNeurons(1, removedNeurons[1]);
        using Tensor shrunk = Logits(model);
        using Tensor shrunkQkv = model.state_dict()["transformer.h.1.attn.c_attn.weight"].detach().clone();

        string dir = Path.Combine(temp, "padded");
        HuggingFaceExport.Save(model, dir, padHeads: true);
        JsonObject config = ConfigOf(dir);
        Assert.False(config.ContainsKey("pruned_heads"));
        Assert.DoesNotContain(config, p => p.Key.StartsWith("sparsetune_", StringComparison.Ordinal));

        // c_attn of layer 1 (heads 0 and 2 removed): in each of the q, k, v blocks of 4·12 rows, heads 0 and 2 are zero
        // and heads 1 and 3 are the pruned model's rows.
        using Tensor qkv = Exported(dir, model, "transformer.h.1.attn.c_attn.weight");
        Assert.Equal(new long[] { 3 * 48, 48 }, qkv.shape);
        for (int part = 0; part < 3; part++)
            for (int head = 0; head < 4; head++)
            {
                using Tensor rows = qkv[TensorIndex.Slice(part * 48 + head * 12, part * 48 + (head + 1) * 12)];
                if (head is 0 or 2) Assert.Equal(0.0, MaxAbs(rows));
                else
                {
                    int kept = head == 1 ? 0 : 1;
                    using Tensor source = shrunkQkv[TensorIndex.Slice(part * 24 + kept * 12, part * 24 + (kept + 1) * 12)];
                    Assert.Equal(0.0, MaxAbsDiff(source, rows));
                }
            }

        using TransformerModel reloaded = LoadEval(dir);
        Assert.All(reloaded.Layers, l => Assert.Equal(4, l.Attention.NumHeads));
        using Tensor logits = Logits(reloaded);
        double diff = MaxAbsDiff(shrunk, logits);
        output.WriteLine($"gpt2-tiny, heads padded: exported vs shrunk max |Δ logits| = {diff:E2}");
        Assert.True(diff <= 1e-5);
    }

    [Fact]
    public void AnUnprunedModelExportsAsItSaves()
    {
        using TransformerModel model = LoadEval(Fixtures.Model("llama-tiny"));
        string exported = Path.Combine(temp, "unpruned-export"), saved = Path.Combine(temp, "unpruned-save");
        HuggingFaceExport.Save(model, exported);
        PretrainedModel.Save(model, saved);
        Assert.Equal(File.ReadAllText(Path.Combine(saved, "config.json")), File.ReadAllText(Path.Combine(exported, "config.json")));
        using var a = SafeTensorsCheckpoint.Open(exported);
        using var b = SafeTensorsCheckpoint.Open(saved);
        Assert.Equal(b.Names.Order(), a.Names.Order());
        foreach (string name in a.Names)
        {
            using Tensor x = a.Load(name), y = b.Load(name);
            Assert.Equal(0.0, MaxAbsDiff(x, y));
        }
    }

    [Fact]
    public void TheFlagIsASwitchAndTheEstimateStageRefusesIt()
    {
        var method = new LightPeftMethod();
        MethodFlag flag = method.Flags.Single(f => f.Name == "--export-hf");
        Assert.True(flag.IsSwitch);
        Assert.False(((LightPeftOptions)method.DefaultOptions).ExportHuggingFace);
        Assert.True(((LightPeftOptions)flag.Apply(method.DefaultOptions, "true")).ExportHuggingFace);
        var problems = new LightPeftOptions { ExportHuggingFace = true, Stage = LightPeftStage.Estimate }.Problems();
        Assert.Contains(problems, p => p.Contains("--export-hf", StringComparison.Ordinal));
        Assert.Empty(new LightPeftOptions { ExportHuggingFace = true }.Problems());
    }

    [Fact]
    public void ARunWithExportHfShipsModelHfBesideModel()
    {
        string dir = Path.Combine(temp, "run");
        torch.random.manual_seed(3);
        using TransformerModel model = PretrainedModel.Load(Fixtures.Model("llama-tiny"), ModelHead.SequenceClassification, ["a", "b", "c"]);
        using var tuner = new LightPeftTuner(new LightPeftOptions { EstimateRatio = 0.5, HeadPruneRatio = 0.5, ExportHuggingFace = true })
        {
            Context = new TunerContext { BaseModelPath = Fixtures.Model("llama-tiny") },
        };
        var training = new TrainingOptions { MaxSteps = 4, LearningRate = 5e-3, OutputDirectory = dir, EvaluateBaseline = false, LogEvery = 1 };
        new Trainer(model, tuner, TaskKind.Classification, training).Run(new SyntheticBatches(TaskKind.Classification, 241, 16, 8));
        Assert.True(tuner.Pruned);
        Assert.All(model.Layers, l => Assert.Equal(2, l.Attention.NumHeads));   // one of the two key/value groups per layer
        Assert.NotNull(model.Config.IntermediateSizes);

        model.eval();
        using Tensor tuned = Logits(model);
        var outputs = FineTuneJob.SaveOutputs(model, tuner, dir, Fixtures.Model("llama-tiny"));
        Assert.Equal(Path.Combine(dir, "model-hf"), outputs["model_hf"]);
        Assert.True(outputs.ContainsKey("model"));
        Assert.DoesNotContain(ConfigOf(outputs["model_hf"]), p => p.Key.StartsWith("sparsetune_", StringComparison.Ordinal));
        using TransformerModel reloaded = LoadEval(outputs["model_hf"]);
        Assert.Equal(ModelHead.SequenceClassification, reloaded.Head);
        Assert.All(reloaded.Layers, l => Assert.Equal(4, l.Attention.NumHeads));
        Assert.All(reloaded.Layers, l => Assert.Equal(160, l.FeedForward.IntermediateSize));
        using Tensor logits = Logits(reloaded);
        double diff = MaxAbsDiff(tuned, logits);
        output.WriteLine($"llama-tiny run: model-hf vs tuned max |Δ logits| = {diff:E2}");
        Assert.True(diff <= 1e-5);
    }
}
