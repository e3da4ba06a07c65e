using System.Globalization;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Tuners.Masking;
using static TorchSharp.torch;

namespace SparseTune.Tuners.Pst;

/// <summary>
/// The compact form of a PST-pruned model (pst_sparse.safetensors). A weight delta would be dense here (every
/// kept entry moved by U·V, every pruned one by −W), so the file holds the pruned matrices themselves. Per
/// pruned matrix NAME (a Hugging Face parameter name, e.g. bert.encoder.layer.0.attention.self.query.weight):
///   NAME.indices  int32 (k)   ascending flat row-major indices of the kept entries of the (out_features,
///                             in_features) weight as nn.Linear stores it (GPT-2's Conv1D: the file's transpose)
///   NAME.values   float32 (k) the final weight there; every other entry is zero
///   NAME.shape    int64 (2)   (out_features, in_features)
/// and per densely trained tensor (a classification head): dense.NAME with its full value. Everything else
/// (embeddings, norms, the frozen biases of pruned layers) is the base model's.
/// Metadata: format = "sparsetune-pst-sparse", version = "1", method = "pst", sparsity.
/// </summary>
public static class PstSparseWeights
{
    public const string FileName = "pst_sparse.safetensors";
    const string Format = "sparsetune-pst-sparse";

    public sealed record Entry(string Name, Tensor Indices, Tensor Values, long[] Shape);

    public static void Save(string path, IEnumerable<Entry> entries, IEnumerable<KeyValuePair<string, Tensor>> dense, double sparsity)
    {
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var e in entries)
        {
            if (e.Shape[0] * e.Shape[1] > int.MaxValue) throw new InvalidOperationException($"{e.Name} has more entries than int32 indices can address");
            tensors.Add(new(e.Name + ".indices", e.Indices.to_type(ScalarType.Int32)));
            tensors.Add(new(e.Name + ".values", e.Values.to_type(ScalarType.Float32)));
            tensors.Add(new(e.Name + ".shape", tensor(e.Shape)));
        }
        foreach (var (name, t) in dense) tensors.Add(new("dense." + name, t));
        SafeTensors.Save(path, tensors, new Dictionary<string, string>
        {
            ["format"] = Format,
            ["version"] = "1",
            ["method"] = "pst",
            ["sparsity"] = sparsity.ToString("R", CultureInfo.InvariantCulture),
        });
    }

    /// <summary>Writes the pruned matrices and dense tensors of the file into a base model, in place; every name and shape is checked first.</summary>
    public static void Apply(TransformerModel model, string path)
    {
        using var file = SafeTensorsFile.Open(path);
        if (!file.Metadata.TryGetValue("format", out var format) || format != Format)
            throw new InvalidDataException($"{path}: not a SparseTune PST sparse-weights file (metadata format is '{format}')");
        var state = model.state_dict();
        var names = file.Tensors.Select(t => t.Name).ToList();
        var problems = new List<string>();
        var matrices = names.Where(n => n.EndsWith(".indices", StringComparison.Ordinal)).Select(n => n[..^".indices".Length]).ToList();
        foreach (string name in matrices)
        {
            if (!state.TryGetValue(name, out var weight)) { problems.Add($"the model has no parameter {name}"); continue; }
            using var shape = file.Load(name + ".shape");
            long[] expected = shape.data<long>().ToArray();
            if (!expected.SequenceEqual(weight.shape))
                problems.Add($"{name} is [{string.Join(", ", weight.shape)}] in the model but [{string.Join(", ", expected)}] in the file");
        }
        var denseNames = names.Where(n => n.StartsWith("dense.", StringComparison.Ordinal)).ToList();
        foreach (string name in denseNames)
        {
            string target = name["dense.".Length..];
            if (!state.TryGetValue(target, out var weight)) problems.Add($"the model has no parameter {target}");
            else if (!file.Info(name).Shape.SequenceEqual(weight.shape))
                problems.Add($"{target} is [{string.Join(", ", weight.shape)}] in the model but [{string.Join(", ", file.Info(name).Shape)}] in the file");
        }
        if (problems.Count > 0) throw new InvalidDataException($"{path}: {string.Join("; ", problems)}");

        using var _ = no_grad();
        foreach (string name in matrices)
        {
            var weight = state[name];
            using var storedIndices = file.Load(name + ".indices");
            using var storedValues = file.Load(name + ".values");
            using var indices = storedIndices.to_type(ScalarType.Int64);
            using var values = storedValues.to_type(weight.dtype);
            if (indices.numel() > 0 && (indices.min().item<long>() < 0 || indices.max().item<long>() >= weight.numel()))
                throw new InvalidDataException($"{path}: {name} has indices outside [0, {weight.numel()})");
            using var dense = MaskedWeights.Expand(indices, values, weight.shape);
            weight.copy_(dense);
        }
        foreach (string name in denseNames)
        {
            using var value = file.Load(name);
            state[name["dense.".Length..]].copy_(value);
        }
    }
}
