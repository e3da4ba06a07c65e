using SparseTune.Models;
using Xunit;
using static TorchSharp.torch;

namespace SparseTune.Tests.Support;

/// <summary>Logits of a fixed batch and their comparison: how the method tests check "same function".</summary>
public static class LogitChecks
{
    /// <summary>A (2, 7) batch of ids below every fixture's vocabulary size.</summary>
    public static Tensor FixedIds() => tensor(new long[] { 5, 9, 17, 4, 30, 8, 12, 7, 3, 21, 6, 11, 19, 10 }, [2, 7]);

    /// <summary>The model's logits on <paramref name="ids"/> (default <see cref="FixedIds"/>), without autograd, as a new tensor.</summary>
    public static Tensor Logits(TransformerModel model, Tensor? ids = null)
    {
        using var _ = no_grad();
        using var fixedIds = ids is null ? FixedIds() : null;
        using var output = model.Forward(ids ?? fixedIds!);
        return output.Logits.detach().clone();
    }

    /// <summary>max |a − b| over same-shaped tensors.</summary>
    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        Assert.Equal(a.shape, b.shape);
        using var d = (a - b).abs().max();
        return d.item<float>();
    }
}
