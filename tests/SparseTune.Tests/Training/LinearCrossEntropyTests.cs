using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tests.Support;
using SparseTune.Training;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Tests.TrainingLoop;

/// <summary>
/// The blocked linear + cross-entropy (<see cref="LinearCrossEntropy"/>) against torch's linear and cross_entropy:
/// the same loss and the same gradients for x, W and b, with ignored rows, label smoothing and blocks of a few rows.
/// </summary>
public sealed class LinearCrossEntropyTests
{
    const long N = 11, C = 6, V = 13;

    static (double Loss, Tensor[] Grads) Run(Func<Tensor, Tensor, Tensor, Tensor> loss, Tensor x, Tensor w, Tensor b)
    {
        var leaves = new[] { x, w, b }.Select(t => t.detach().clone().requires_grad_(true)).ToArray();
        Tensor value = loss(leaves[0], leaves[1], leaves[2]);
        (value * 2.5).backward();   // an upstream gradient other than 1 (data-parallel ranks weight their losses)
        return (value.item<float>(), leaves.Select(l => l.grad!.clone()).ToArray());
    }

    [Theory]
    [InlineData(0.0, 3)]
    [InlineData(0.1, 3)]
    [InlineData(0.1, 1)]
    [InlineData(0.0, 1000)]
    public void BlockedLoss_EqualsLinearThenCrossEntropy(double smoothing, long rowsPerBlock)
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        Tensor x = randn(N, C), w = randn(V, C), b = randn(V);
        Tensor labels = randint(0, V, [N]);
        labels[2] = Losses.IgnoreIndex;
        labels[7] = Losses.IgnoreIndex;

        var (expected, expectedGrads) = Run((a, wt, bias) =>
            F.cross_entropy(F.linear(a, wt, bias), labels, ignore_index: Losses.IgnoreIndex, label_smoothing: smoothing), x, w, b);
        var (actual, actualGrads) = Run((a, wt, bias) =>
            LinearCrossEntropy.Loss(a, new LanguageModelProjection(wt, bias, null), labels, Losses.IgnoreIndex, smoothing, rowsPerBlock * V), x, w, b);

        Assert.Equal(expected, actual, 1e-5);
        for (int i = 0; i < 3; i++)
            Assert.True(actualGrads[i].allclose(expectedGrads[i], rtol: 1e-4, atol: 1e-6),
                $"gradient {i} off by {(actualGrads[i] - expectedGrads[i]).abs().max().item<float>()}");
        Assert.Equal(0, actualGrads[0][2].abs().sum().item<float>());   // an ignored row gets no gradient
        using (no_grad())
            Assert.Equal(expected, LinearCrossEntropy.Loss(x, new LanguageModelProjection(w, b, null), labels, Losses.IgnoreIndex, smoothing, rowsPerBlock * V).item<float>(), 1e-5);
    }

    [Fact]
    public void FrozenWeight_GetsNoGradient_AndBf16StaysClose()
    {
        using var scope = NewDisposeScope();
        manual_seed(12);
        Tensor x = randn(N, C).requires_grad_(true), w = randn(V, C);
        Tensor labels = randint(0, V, [N]);
        Tensor fp32 = LinearCrossEntropy.Loss(x, new LanguageModelProjection(w, null, null), labels, Losses.IgnoreIndex);
        fp32.backward();
        Assert.Null(w.grad);
        Tensor bf16 = LinearCrossEntropy.Loss(x, new LanguageModelProjection(w, null, ScalarType.BFloat16), labels, Losses.IgnoreIndex);
        Assert.Equal(ScalarType.Float32, bf16.dtype);
        Assert.True(Math.Abs(bf16.item<float>() / fp32.item<float>() - 1) < 0.02, $"{bf16.item<float>()} vs {fp32.item<float>()}");
    }

    /// <summary>
    /// A causal LM's training loss goes through the deferred head (no logits) and equals the loss and the gradients of
    /// the logits path, tied embedding included; reading the logits afterwards still gives them.
    /// </summary>
    [Theory]
    [InlineData("gpt2-tiny", 211)]
    [InlineData("llama-tiny", 241)]
    public void CausalLmLoss_WithoutLogits_EqualsTheLogitsPath(string fixture, long vocab)
    {
        using var scope = NewDisposeScope();
        using TransformerModel model = PretrainedModel.Load(Fixtures.Model(fixture));
        model.eval();
        manual_seed(13);
        Tensor ids = randint(0, vocab, [2, 9]);
        Tensor labels = ids.clone();
        labels[0, TensorIndex.Slice(0, 3)] = Losses.IgnoreIndex;

        Dictionary<string, Tensor> Gradients(bool viaLogits, out double loss)
        {
            model.zero_grad();
            using ModelOutput output = model.Forward(ids);
            Assert.False(output.HasLogits);
            Tensor value = viaLogits ? Losses.NextTokenLoss(output.Logits, labels) : Losses.Compute(TaskKind.CausalLM, output, labels);
            Assert.Equal(viaLogits, output.HasLogits);
            value.backward();
            loss = value.item<float>();
            return model.named_parameters().Where(p => p.parameter.grad is not null).ToDictionary(p => p.name, p => p.parameter.grad!.clone());
        }
        var plain = Gradients(viaLogits: true, out double plainLoss);
        var blocked = Gradients(viaLogits: false, out double blockedLoss);
        Assert.Equal(plainLoss, blockedLoss, 1e-5);
        Assert.Equal(plain.Keys.Order(), blocked.Keys.Order());
        double worst = plain.Max(kv => (kv.Value - blocked[kv.Key]).abs().max().item<float>());
        Assert.True(worst < 1e-5, $"max |Δgrad| {worst}");
    }
}
