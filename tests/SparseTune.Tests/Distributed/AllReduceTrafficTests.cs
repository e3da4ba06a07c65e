using SparseTune.Distributed;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Tuners;
using SparseTune.Tuners.Lora;
using SparseTune.Tuners.Sift;
using Xunit;

namespace SparseTune.Tests.Distributed;

/// <summary>
/// `bench traffic` computes what each method all-reduces from the shape alone; on a real (tiny) LLaMA the numbers must
/// be exactly the trainable values the methods create.
/// </summary>
public sealed class AllReduceTrafficTests
{
    [Fact]
    public void ValuesFromTheShape_EqualTheTrainableValuesTheMethodsCreate()
    {
        var config = (LlamaConfig)ModelConfig.Load(Fixtures.Model("llama-tiny"));
        using var model = PretrainedModel.Load(Fixtures.Model("llama-tiny"));
        Assert.Equal(model.ParameterCount(), AllReduceTraffic.FullValues(config));

        using (var lora = MethodRegistry.CreateTuner("lora", new LoraOptions { Rank = 16, TargetModules = ["q_proj", "v_proj"] }))
        {
            lora.Attach(model);
            Assert.Equal(lora.TrainableParameters().Sum(p => p.Parameter.numel()), AllReduceTraffic.LoraValues(config, 16, ["q_proj", "v_proj"]));
        }
        using var fresh = PretrainedModel.Load(Fixtures.Model("llama-tiny"));
        using (var sift = MethodRegistry.CreateTuner("sift", new SiftOptions { SparseRate = 0.01, Selection = SiftSelection.Magnitude }))
        {
            sift.Attach(fresh);
            Assert.Equal(sift.TrainableParameters().Sum(p => p.Parameter.numel()), AllReduceTraffic.SiftValues(config, 0.01));
        }
    }

    [Fact]
    public void Llama7B_HasItsKnownParameterCount_AndTheRingTimeFollowsTheBandwidth()
    {
        var (config, _) = SparseTune.Benchmarks.BenchPresets.Get("llama-7b");
        var rows = AllReduceTraffic.Table((LlamaConfig)config, ranks: 8, gbits: [10, 100]);
        Assert.Equal(6_738_415_616, rows[0].Values);                     // LLaMA-7B
        Assert.Equal(32L * 2 * 16 * (4096 + 4096), rows[1].Values);      // LoRA r16 on q and v of 32 layers
        Assert.Equal(4 * rows[2].Values, rows[2].BytesPerStep);
        // 2·(N−1)/N · bytes · 8 bits at 10 Gbit/s.
        Assert.Equal(2.0 * 7 / 8 * rows[0].BytesPerStep * 8 / 10e9, rows[0].SecondsAtGbit[10], 9);
        Assert.Equal(rows[0].SecondsAtGbit[10] / 10, rows[0].SecondsAtGbit[100], 9);
    }
}
