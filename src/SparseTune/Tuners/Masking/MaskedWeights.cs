using static TorchSharp.torch;

namespace SparseTune.Tuners.Masking;

/// <summary>
/// Final pruning of a weight by a keep mask, and the compact (index, value) form of a pruned matrix. Flat
/// indices are row-major into the (out_features, in_features) weight as nn.Linear stores it.
/// </summary>
public static class MaskedWeights
{
    /// <summary>W[¬keep] ← 0 in place, exact +0.0 (a multiply by 0 would leave −0.0 for negative weights).</summary>
    public static void ZeroPruned(Tensor weight, Tensor keep)
    {
        if (!weight.shape.SequenceEqual(keep.shape))
            throw new ArgumentException($"mask [{string.Join(", ", keep.shape)}] does not fit weight [{string.Join(", ", weight.shape)}]");
        using var _ = no_grad();
        using var pruned = keep.logical_not();
        weight.masked_fill_(pruned, 0);
    }

    /// <summary>Entries equal to zero.</summary>
    public static long CountZeros(Tensor weight)
    {
        using var zero = weight.eq(0);
        using var count = zero.sum();
        return count.item<long>();
    }

    /// <summary>The kept entries: ascending flat indices (int64) and the weight's values there.</summary>
    public static (Tensor Indices, Tensor Values) Compact(Tensor weight, Tensor keep)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        Tensor indices = keep.reshape(-1).nonzero().view(-1);
        Tensor values = weight.detach().reshape(-1).index_select(0, indices);
        return (indices.MoveToOuterDisposeScope(), values.MoveToOuterDisposeScope());
    }

    /// <summary>The dense matrix of <paramref name="shape"/> holding <paramref name="values"/> at <paramref name="indices"/>, zeros elsewhere.</summary>
    public static Tensor Expand(Tensor indices, Tensor values, long[] shape)
    {
        using var _ = no_grad();
        var dense = zeros(shape, dtype: values.dtype, device: values.device);
        using var index = indices.to_type(ScalarType.Int64);
        dense.view(-1).index_copy_(0, index, values);
        return dense;
    }
}
