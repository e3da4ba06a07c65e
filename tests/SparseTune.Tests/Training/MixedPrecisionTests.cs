using SparseTune.Cli.Commands;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tests.Support;
using SparseTune.Training;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.TrainingLoop;

/// <summary>bf16 mixed precision against float32: forward outputs on the parity fixtures, and training on the bundled demo.</summary>
public sealed class MixedPrecisionTests(ITestOutputHelper output) : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("bf16");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    /// <summary>
    /// The stated tolerance: bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.2% per product), so after a
    /// few layers the logits may differ by a few percent of their range, never more than 3%.
    /// </summary>
    const double RelativeTolerance = 0.03;

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void Bf16Logits_StayWithinTheStatedToleranceOfFp32(string fixture)
    {
        using var model = PretrainedModel.Load(Fixtures.Model(fixture));
        model.eval();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var reference = SparseTune.IO.SafeTensors.Load(Fixtures.TestData("hf-parity", fixture, "reference.safetensors"));
        Tensor ids = reference["input_ids"], mask = reference["attention_mask"];
        Tensor fp32 = model.Forward(ids, mask).Logits;
        model.Precision = Precision.Bf16;
        Tensor bf16 = model.Forward(ids, mask).Logits;
        model.Precision = Precision.Fp32;

        Assert.Equal(ScalarType.BFloat16, bf16.dtype);
        Tensor real = fp32.dim() == 3 ? mask.to_type(ScalarType.Bool).unsqueeze(-1).expand_as(fp32)   // unpadded positions
            : ones_like(fp32, dtype: ScalarType.Bool);                                                   // class logits
        double range = fp32.masked_select(real).abs().max().item<float>();
        double error = (bf16.to_type(ScalarType.Float32) - fp32).masked_select(real).abs().max().item<float>();
        output.WriteLine($"{fixture}: max |Δ| {error:E3} of a logit range {range:0.000} ({error / range:P2})");
        Assert.True(error / range <= RelativeTolerance, $"{fixture}: bf16 logits differ by {error / range:P2} of their range");
        Assert.True(error > 0, "bf16 computed exactly the float32 logits: the products did not run in bf16");
        Assert.Equal(fp32.data<float>().ToArray(), model.Forward(ids, mask).Logits.data<float>().ToArray());   // fp32 again is fp32
    }

    [Theory]
    [InlineData("full")]
    [InlineData("lora")]
    public void Bf16Training_EndsWithinTwoPercentOfTheFp32Loss_OnTheDemo(string method)
    {
        double Run(Precision precision)
        {
            var outcome = FineTuneJob.Run(new FineTuneOptions
            {
                ModelDirectory = Demo.ModelDirectory(), TrainFile = Demo.TrainFile(), Method = method,
                Training = new TrainingOptions
                {
                    MaxSteps = 30, BatchSize = 16, LearningRate = SparseTune.Tuners.MethodRegistry.Get(method).DemoLearningRate,
                    EvaluateBaseline = false, Precision = precision, OutputDirectory = Path.Combine(temp, $"{method}-{precision}"),
                },
            });
            var losses = File.ReadAllLines(Path.Combine(temp, $"{method}-{precision}", "metrics.jsonl"))
                .Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)
                .Where(e => e.TryGetProperty("loss", out _)).Select(e => e.GetProperty("loss").GetDouble()).ToList();
            output.WriteLine($"{method} {precision}: losses {string.Join(", ", losses.Select(l => l.ToString("0.0000")))}");
            return losses.TakeLast(3).Average();
        }
        double fp32 = Run(Precision.Fp32), bf16 = Run(Precision.Bf16);
        Assert.True(Math.Abs(bf16 - fp32) / fp32 <= 0.02, $"{method}: bf16 loss {bf16:0.0000} vs fp32 {fp32:0.0000}");
        Assert.NotEqual(fp32, bf16);
    }
}
