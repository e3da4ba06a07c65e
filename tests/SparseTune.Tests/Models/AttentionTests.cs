using SparseTune.Nn;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Tests.Models;

/// <summary>
/// Attention with dropout (<see cref="DropoutAttentionFunction"/>) against the plain formula softmax(q kᵀ/√hs + mask)
/// ⊙ keep/(1 − p) · v and its autograd gradients, with blocks of one or two heads so that the blocking is exercised.
/// </summary>
public sealed class AttentionTests
{
    const long B = 2, H = 4, T = 6, Hs = 8;

    /// <summary>The formula, every tensor whole (what SDPA's unfused path computes).</summary>
    static Tensor Reference(Tensor q, Tensor k, Tensor v, Tensor? mask, bool causal, double p, Tensor keep)
    {
        Tensor scores = q.matmul(k.transpose(-2, -1)) / Math.Sqrt(Hs);
        if (mask is not null) scores = mask.dtype == ScalarType.Bool ? scores.masked_fill(mask.logical_not(), double.NegativeInfinity) : scores + mask;
        if (causal) scores = scores.masked_fill(ones(T, T, dtype: ScalarType.Bool).triu(1), double.NegativeInfinity);
        return (scores.softmax(-1) * keep / (1 - p)).matmul(v);
    }

    static (Tensor Output, Tensor[] Grads) Run(Func<Tensor, Tensor, Tensor, Tensor> attention, Tensor q, Tensor k, Tensor v, Tensor upstream)
    {
        var leaves = new[] { q, k, v }.Select(t => t.detach().clone().requires_grad_(true)).ToArray();
        Tensor output = attention(leaves[0], leaves[1], leaves[2]);
        (output * upstream).sum().backward();
        return (output.detach(), leaves.Select(l => l.grad!.clone()).ToArray());
    }

    public static TheoryData<string, long> Masks => new()
    {
        { "none", 1 }, { "causal", 1 }, { "bool", 2 }, { "additive", 2 }, { "causal", 1 << 20 },
    };

    [Theory]
    [MemberData(nameof(Masks))]
    public void DropoutAttention_MatchesTheFormulaAndItsGradients(string maskKind, long headsPerBlock)
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        Tensor q = randn(B, H, T, Hs), k = randn(B, H, T, Hs), v = randn(B, H, T, Hs), upstream = randn(B, H, T, Hs);
        Tensor? mask = maskKind switch
        {
            "bool" => (rand(B, 1, T, T) > 0.3) | eye(T, dtype: ScalarType.Bool).view(1, 1, T, T),
            "additive" => (rand(B, 1, 1, T) > 0.3).logical_not().to_type(ScalarType.Float32) * -1e4f,
            _ => null,
        };
        bool causal = maskKind == "causal";
        const double p = 0.3;
        Tensor keep = rand(B, H, T, T) >= p;

        var (expected, expectedGrads) = Run((a, b, c) => Reference(a, b, c, mask, causal, p, keep), q, k, v, upstream);
        var (actual, actualGrads) = Run((a, b, c) => Attention.Compute(a, b, c, mask, causal, p, keep, headsPerBlock * T * T), q, k, v, upstream);

        Assert.True(actual.allclose(expected, rtol: 1e-4, atol: 1e-5), $"output off by {(actual - expected).abs().max().item<float>()}");
        for (int i = 0; i < 3; i++)
            Assert.True(actualGrads[i].allclose(expectedGrads[i], rtol: 1e-4, atol: 1e-5),
                $"{"qkv"[i]} gradient off by {(actualGrads[i] - expectedGrads[i]).abs().max().item<float>()}");
    }

    [Fact]
    public void WithoutDropout_IsLibtorchSdpa()
    {
        using var scope = NewDisposeScope();
        manual_seed(6);
        Tensor q = randn(B, H, T, Hs), k = randn(B, H, T, Hs), v = randn(B, H, T, Hs);
        Assert.True(Attention.Compute(q, k, v, null, causal: true, dropout: 0).Equals(F.scaled_dot_product_attention(q, k, v, is_casual: true)));
    }

    [Fact]
    public void DropoutDrawsKeepTheRequestedShare_AndReplayFromTheSameSeed()
    {
        using var scope = NewDisposeScope();
        manual_seed(7);
        Tensor q = randn(4, 8, 64, Hs), k = randn(4, 8, 64, Hs), v = ones(4, 8, 64, Hs);
        manual_seed(8);
        Tensor keep = DropoutAttentionFunction.DrawKeepMask(4, 8, 64, 64, 0.1, CPU);
        double kept = keep.to_type(ScalarType.Float32).mean().item<float>();
        Assert.InRange(kept, 0.89, 0.91);   // 131,072 draws: σ ≈ 0.0008
        manual_seed(8);
        Tensor first = Attention.Compute(q, k, v, null, causal: false, dropout: 0.1);
        manual_seed(8);
        Tensor second = Attention.Compute(q, k, v, null, causal: false, dropout: 0.1);
        Assert.True(first.Equals(second));
        // v = 1: each output is Σ kept probabilities / 0.9, exactly the keep mask's effect (mean 1 over the rows).
        Assert.InRange(first.mean().item<float>(), 0.98, 1.02);
        Assert.True(Attention.Compute(q, k, v, null, false, 0.1, keep).allclose(Reference(q, k, v, null, false, 0.1, keep), rtol: 1e-4, atol: 1e-5));
    }
}
