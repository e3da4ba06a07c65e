using static TorchSharp.torch;

namespace SparseTune.IO;

/// <summary>
/// Every tensor SparseTune loads (model, adapter, delta) and every tensor it writes is checked for NaN and ±inf:
/// a non-finite weight gives non-finite outputs silently, so it is refused where it enters or would leave.
/// </summary>
public static class FiniteChecks
{
    /// <summary>NaN and ±inf entries of a floating-point tensor (0 for integer tensors).</summary>
    public static long NonFiniteCount(Tensor tensor)
    {
        if (!tensor.is_floating_point() || tensor.numel() == 0) return 0;
        using var _ = no_grad();
        using var finite = tensor.isfinite();
        using var all = finite.all();
        if (all.item<bool>()) return 0;
        using var bad = finite.logical_not();
        using var count = bad.sum();
        return count.item<long>();
    }

    /// <summary>Throws naming <paramref name="file"/> and <paramref name="name"/> when the tensor is not all finite.</summary>
    public static void EnsureFinite(string file, string name, Tensor tensor, string action = "holds")
    {
        long count = NonFiniteCount(tensor);
        if (count > 0)
            throw new InvalidDataException($"{file}: tensor {name} {action} {count} non-finite value{(count == 1 ? "" : "s")} (NaN or ±inf)");
    }

    /// <summary>Checks every tensor before a file is written, so no output ever carries a non-finite value.</summary>
    public static void EnsureWritable(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors)
    {
        foreach (var (name, tensor) in tensors)
        {
            long count = NonFiniteCount(tensor);
            if (count > 0)
                throw new InvalidDataException($"refusing to write {path}: tensor {name} has {count} non-finite value{(count == 1 ? "" : "s")} (NaN or ±inf)");
        }
    }
}
