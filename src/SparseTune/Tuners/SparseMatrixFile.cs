using System.Globalization;
using System.Text.Json;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Tuners.Masking;
using static TorchSharp.torch;

namespace SparseTune.Tuners;

/// <summary>How a sparse-matrix file's values meet the base weight.</summary>
public enum SparseMatrixMode
{
    /// <summary>W[indices] += values (SIFT's delta: only the trained entries changed).</summary>
    Add,
    /// <summary>W ← values at indices, zero elsewhere (PST's pruned weights: every entry changed).</summary>
    Replace,
}

/// <summary>
/// The one compact file format of the sparse methods (SIFT's sparse_delta.safetensors, PST's
/// pst_sparse.safetensors, and the sparse parts of later methods). Per matrix NAME (a Hugging Face parameter
/// name, e.g. bert.encoder.layer.0.attention.self.query.weight):
/// <code>
///   NAME.indices  int32 (k), or int64 for a matrix over 2³¹ entries: flat row-major indices into the
///                 (out_features, in_features) weight as nn.Linear stores it (GPT-2's Conv1D: the file's transpose)
///   NAME.values   float32 (k)
///   NAME.shape    int64 (2): (out_features, in_features); int64 (1): (out_features) for a bias (SIFT tunes biases too)
///   dense.NAME    a densely trained tensor (a classification head) with its full new value
/// </code>
/// Metadata: format = "sparsetune-sparse", version = "2", method, mode ("add": W[i] += v; "replace": W ← v at i,
/// zero elsewhere), sparsetune.id2label (the trained labels, so a merge rebuilds the same head), and any
/// method-specific entries. Version 1 files (format "sparsetune-sparse-delta": add; "sparsetune-pst-sparse":
/// replace) have the same tensors and still load.
/// </summary>
public static class SparseMatrixFile
{
    public const string Format = "sparsetune-sparse";
    public const string Version = "2";

    /// <summary>Version-1 formats and the mode they imply.</summary>
    static readonly Dictionary<string, SparseMatrixMode> LegacyFormats = new()
    {
        ["sparsetune-sparse-delta"] = SparseMatrixMode.Add,
        ["sparsetune-pst-sparse"] = SparseMatrixMode.Replace,
    };

    /// <summary>One sparse matrix (or bias vector): flat indices, values there, and the tensor's shape.</summary>
    public sealed record Entry(string Name, Tensor Indices, Tensor Values, long[] Shape);

    public static void Save(string path, SparseMatrixMode mode, string method, IEnumerable<Entry> entries,
        IEnumerable<KeyValuePair<string, Tensor>> dense, IReadOnlyDictionary<string, string>? headMetadata = null,
        IReadOnlyDictionary<string, string>? extraMetadata = null)
    {
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var e in entries)
        {
            bool wide = e.Shape.Aggregate(1L, (a, b) => a * b) > int.MaxValue;
            tensors.Add(new(e.Name + ".indices", e.Indices.to_type(wide ? ScalarType.Int64 : ScalarType.Int32)));
            tensors.Add(new(e.Name + ".values", e.Values.detach().to_type(ScalarType.Float32)));
            tensors.Add(new(e.Name + ".shape", tensor(e.Shape)));
        }
        foreach (var (name, t) in dense) tensors.Add(new("dense." + name, t.detach()));
        var metadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["version"] = Version,
            ["method"] = method,
            ["mode"] = mode.ToString().ToLowerInvariant(),
        };
        foreach (var (key, value) in headMetadata ?? new Dictionary<string, string>()) metadata[key] = value;
        foreach (var (key, value) in extraMetadata ?? new Dictionary<string, string>()) metadata.TryAdd(key, value);
        FiniteChecks.EnsureWritable(path, tensors);
        SafeTensors.Save(path, tensors, metadata);
    }

    /// <summary>The mode of a file in this format (any version); null when the file is something else.</summary>
    public static SparseMatrixMode? ModeOf(SafeTensorsFile file)
    {
        if (!file.Metadata.TryGetValue("format", out var format)) return null;
        if (LegacyFormats.TryGetValue(format, out var legacy)) return legacy;
        if (format != Format) return null;
        string version = file.Metadata.GetValueOrDefault("version", "");
        if (version != Version)
            throw new InvalidDataException($"{file.Path}: sparse-matrix file version '{version}' is newer than this SparseTune reads ({Version})");
        return file.Metadata.GetValueOrDefault("mode") switch
        {
            "add" => SparseMatrixMode.Add,
            "replace" => SparseMatrixMode.Replace,
            var other => throw new InvalidDataException($"{file.Path}: unknown sparse-matrix mode '{other}'"),
        };
    }

    /// <summary>
    /// Writes a file's matrices and dense tensors into <paramref name="model"/>, in place. Every name, shape and
    /// index range is checked first and all problems are one error; nothing is changed then.
    /// Returns the names of the parameters set in full (the dense tensors).
    /// </summary>
    public static IReadOnlyList<string> Apply(TransformerModel model, string path)
    {
        using var file = SafeTensorsFile.Open(path);
        SparseMatrixMode mode = ModeOf(file) ?? throw new InvalidDataException(
            $"{path}: not a SparseTune sparse-matrix file (metadata format is '{file.Metadata.GetValueOrDefault("format")}')");
        var state = model.state_dict();
        var names = file.Tensors.Select(t => t.Name).ToList();
        var problems = new List<string>();
        var matrices = names.Where(n => n.EndsWith(".indices", StringComparison.Ordinal)).Select(n => n[..^".indices".Length]).ToList();
        var loaded = new List<(Tensor Weight, Tensor Indices, Tensor Values)>();
        using var scope = NewDisposeScope();
        foreach (string name in matrices)
        {
            if (!state.TryGetValue(name, out var weight)) { problems.Add($"the model has no parameter {name}"); continue; }
            if (!file.Contains(name + ".values") || !file.Contains(name + ".shape")) { problems.Add($"{name} lacks its .values or .shape tensor"); continue; }
            long[] expected = file.Load(name + ".shape").data<long>().ToArray();
            if (!expected.SequenceEqual(weight.shape))
            {
                problems.Add($"{name} is [{string.Join(", ", weight.shape)}] in the model but [{string.Join(", ", expected)}] in the file");
                continue;
            }
            Tensor indices = file.Load(name + ".indices").to_type(ScalarType.Int64);
            Tensor values = file.Load(name + ".values").to_type(weight.dtype);
            if (FiniteChecks.NonFiniteCount(values) is > 0 and var badValues) { problems.Add($"tensor {name}.values holds {badValues} non-finite values (NaN or ±inf)"); continue; }
            if (indices.numel() != values.numel()) { problems.Add($"{name} has {indices.numel()} indices but {values.numel()} values"); continue; }
            if (indices.numel() > 0 && (indices.min().item<long>() < 0 || indices.max().item<long>() >= weight.numel()))
            {
                problems.Add($"{name} has indices outside [0, {weight.numel()})");
                continue;
            }
            loaded.Add((weight, indices, values));
        }
        var denseNames = names.Where(n => n.StartsWith("dense.", StringComparison.Ordinal)).ToList();
        foreach (string name in denseNames)
        {
            string target = name["dense.".Length..];
            if (!state.TryGetValue(target, out var weight)) problems.Add($"the model has no parameter {target}");
            else if (!file.Info(name).Shape.SequenceEqual(weight.shape))
                problems.Add($"{target} is [{string.Join(", ", weight.shape)}] in the model but [{string.Join(", ", file.Info(name).Shape)}] in the file");
            else if (FiniteChecks.NonFiniteCount(file.Load(name)) is > 0 and var badDense) problems.Add($"tensor {name} holds {badDense} non-finite values (NaN or ±inf)");
        }
        if (problems.Count > 0) throw new InvalidDataException($"{path}: {string.Join("; ", problems)}");

        using var _ = no_grad();
        foreach (var (weight, indices, values) in loaded)
        {
            if (mode == SparseMatrixMode.Add) weight.view(-1).index_add_(0, indices, values, 1.0);
            else weight.copy_(MaskedWeights.Expand(indices, values, weight.shape));
        }
        foreach (string name in denseNames) state[name["dense.".Length..]].copy_(file.Load(name));
        return denseNames.Select(n => n["dense.".Length..]).ToList();
    }

    /// <summary>Recognises files in this format (any version), given directly or inside a folder.</summary>
    public static readonly IArtifactReader Reader = new SparseMatrixReader();

    sealed class SparseMatrixReader : IArtifactReader
    {
        public string Description => "a SparseTune sparse-matrix file (.safetensors with format metadata 'sparsetune-sparse')";

        public IReadOnlyList<string> Locate(string path) =>
            MethodArtifacts.SafeTensorsWithFormat(path, format => format == Format || LegacyFormats.ContainsKey(format));

        public ArtifactHead HeadOf(string artifact) => MethodArtifacts.HeadFromRecordedLabels(artifact);

        public IReadOnlyCollection<string> ApplyTo(TransformerModel model, string artifact) => Apply(model, artifact);
    }
}
