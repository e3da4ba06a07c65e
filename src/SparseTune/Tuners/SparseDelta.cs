using SparseTune.IO;
using SparseTune.Models;
using static TorchSharp.torch;

namespace SparseTune.Tuners;

/// <summary>
/// The compact "what changed" file of a sparse method (sparse_delta.safetensors). Per changed matrix NAME
/// (a Hugging Face parameter name, e.g. bert.encoder.layer.0.attention.self.query.weight):
///   NAME.indices  int32 (k)   flat row-major indices into the (out_features, in_features) weight as nn.Linear
///                             stores it (for GPT-2's Conv1D: the transpose of the file's layout)
///   NAME.values   float32 (k) the change to add at those indices
///   NAME.shape    int64 (2)   (out_features, in_features)
/// and per densely trained tensor (a classification head): dense.NAME with its full new value.
/// Metadata: format = "sparsetune-sparse-delta", version = "1", method, and for a classification model
/// sparsetune.id2label (the trained labels as id2label JSON, so a merge rebuilds the same head).
/// </summary>
public static class SparseDelta
{
    public const string FileName = "sparse_delta.safetensors";

    public sealed record Entry(string Name, Tensor Indices, Tensor Values, long[] Shape);

    public const string Id2LabelMetadataKey = "sparsetune.id2label";

    public static void Save(string path, IEnumerable<Entry> entries, IEnumerable<KeyValuePair<string, Tensor>> dense, string method,
        IReadOnlyDictionary<string, string>? id2label = null)
    {
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var e in entries)
        {
            tensors.Add(new(e.Name + ".indices", e.Indices.to_type(ScalarType.Int32)));
            tensors.Add(new(e.Name + ".values", e.Values.to_type(ScalarType.Float32)));
            tensors.Add(new(e.Name + ".shape", tensor(e.Shape)));
        }
        foreach (var (name, t) in dense) tensors.Add(new("dense." + name, t));
        var metadata = new Dictionary<string, string> { ["format"] = "sparsetune-sparse-delta", ["version"] = "1", ["method"] = method };
        if (id2label is { Count: > 0 }) metadata[Id2LabelMetadataKey] = System.Text.Json.JsonSerializer.Serialize(id2label);
        SafeTensors.Save(path, tensors, metadata);
    }

    /// <summary>The class labels a delta was trained with, in id order; null when it records none.</summary>
    public static IReadOnlyList<string>? Labels(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        if (!file.Metadata.TryGetValue(Id2LabelMetadataKey, out var json)) return null;
        var id2label = System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, string>>(json)
            ?? throw new InvalidDataException($"{path}: empty {Id2LabelMetadataKey} metadata");
        return id2label.OrderBy(p => int.Parse(p.Key, System.Globalization.CultureInfo.InvariantCulture)).Select(p => p.Value).ToList();
    }

    /// <summary>
    /// Base model + delta → a plain Hugging Face folder (tokenizer files copied). A delta trained with labels
    /// rebuilds the classification head with those labels before its dense head tensors are applied.
    /// </summary>
    public static void MergeToCheckpoint(string baseModelDirectory, string deltaFile, string outputDirectory)
    {
        if (string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(baseModelDirectory)), Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputDirectory)), StringComparison.Ordinal))
            throw new ArgumentException($"--output must differ from the base model folder ({baseModelDirectory})");
        var labels = Labels(deltaFile);
        using var model = labels is null
            ? PretrainedModel.Load(baseModelDirectory)
            : PretrainedModel.Load(baseModelDirectory, ModelHead.SequenceClassification, labels);
        Apply(model, deltaFile);
        PretrainedModel.Save(model, outputDirectory);
        PretrainedModel.CopyTokenizerFiles(baseModelDirectory, outputDirectory);
    }

    /// <summary>Adds a delta file to a model in place; every name and shape is checked first.</summary>
    public static void Apply(TransformerModel model, string path)
    {
        using var file = SafeTensorsFile.Open(path);
        if (!file.Metadata.TryGetValue("format", out var format) || format != "sparsetune-sparse-delta")
            throw new InvalidDataException($"{path}: not a SparseTune sparse delta (metadata format is '{format}')");
        var state = model.state_dict();
        var names = file.Tensors.Select(t => t.Name).ToList();
        using var _ = no_grad();
        foreach (string name in names.Where(n => n.EndsWith(".indices", StringComparison.Ordinal)))
        {
            string weightName = name[..^".indices".Length];
            if (!state.TryGetValue(weightName, out var weight))
                throw new InvalidDataException($"{path}: the model has no parameter {weightName}");
            using var shape = file.Load(weightName + ".shape");
            long[] expected = shape.data<long>().ToArray();
            if (!expected.SequenceEqual(weight.shape))
                throw new InvalidDataException($"{path}: {weightName} is [{string.Join(", ", weight.shape)}] in the model but [{string.Join(", ", expected)}] in the delta");
            using var indices = file.Load(name).to_type(ScalarType.Int64);
            using var values = file.Load(weightName + ".values").to_type(weight.dtype);
            if (indices.numel() > 0 && (indices.min().item<long>() < 0 || indices.max().item<long>() >= weight.numel()))
                throw new InvalidDataException($"{path}: {weightName} has indices outside [0, {weight.numel()})");
            weight.view(-1).index_add_(0, indices, values, 1.0);
        }
        foreach (string name in names.Where(n => n.StartsWith("dense.", StringComparison.Ordinal)))
        {
            string target = name["dense.".Length..];
            if (!state.TryGetValue(target, out var weight))
                throw new InvalidDataException($"{path}: the model has no parameter {target}");
            using var value = file.Load(name);
            if (!value.shape.SequenceEqual(weight.shape))
                throw new InvalidDataException($"{path}: {target} is [{string.Join(", ", weight.shape)}] in the model but [{string.Join(", ", value.shape)}] in the delta");
            weight.copy_(value);
        }
    }
}
