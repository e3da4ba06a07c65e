using static TorchSharp.torch;

namespace SparseTune.Training;

/// <summary>
/// A copy of named tensors (--keep-best: the trained state at the best evaluation) that can be written back into the
/// same live tensors. A new capture reuses the copies' storage when the shapes are unchanged.
/// </summary>
public sealed class WeightSnapshot : IDisposable
{
    readonly Dictionary<string, Tensor> copies = new(StringComparer.Ordinal);

    public bool IsEmpty => copies.Count == 0;

    /// <summary>Bytes the copies hold.</summary>
    public long Bytes => copies.Values.Sum(t => t.numel() * t.ElementSize);

    public IEnumerable<KeyValuePair<string, Tensor>> Tensors => copies;

    /// <summary>Copies the values of <paramref name="live"/> (replacing the previous capture).</summary>
    public void Capture(IEnumerable<KeyValuePair<string, Tensor>> live)
    {
        using var _ = no_grad();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, tensor) in live)
        {
            seen.Add(name);
            if (copies.TryGetValue(name, out var copy) && copy.shape.SequenceEqual(tensor.shape) && copy.dtype == tensor.dtype)
            {
                copy.copy_(tensor);
                continue;
            }
            copy?.Dispose();
            copies[name] = tensor.detach().clone().DetachFromDisposeScope();
        }
        foreach (string stale in copies.Keys.Where(k => !seen.Contains(k)).ToList())
        {
            copies[stale].Dispose();
            copies.Remove(stale);
        }
    }

    /// <summary>Takes over tensors read from a checkpoint (the caller no longer disposes them).</summary>
    public void Adopt(IReadOnlyDictionary<string, Tensor> tensors)
    {
        Clear();
        foreach (var (name, tensor) in tensors) copies[name] = tensor.DetachFromDisposeScope();
    }

    /// <summary>Writes the copies back into <paramref name="live"/>, which must be the tensors captured (same names and shapes).</summary>
    /// <exception cref="InvalidOperationException">A tensor was not captured or changed shape since.</exception>
    public void RestoreInto(IEnumerable<KeyValuePair<string, Tensor>> live)
    {
        var targets = live.ToList();
        var problems = targets.Where(t => !copies.TryGetValue(t.Key, out var copy) || !copy.shape.SequenceEqual(t.Value.shape))
            .Select(t => t.Key).Concat(copies.Keys.Except(targets.Select(t => t.Key))).ToList();
        if (problems.Count > 0)
            throw new InvalidOperationException($"the best evaluation's copy does not fit the model any more ({string.Join(", ", problems.Take(5))}): its structure changed after the copy was taken");
        using var _ = no_grad();
        foreach (var (name, tensor) in targets) tensor.copy_(copies[name]);
    }

    public void Clear()
    {
        foreach (var copy in copies.Values) copy.Dispose();
        copies.Clear();
    }

    public void Dispose() => Clear();
}
