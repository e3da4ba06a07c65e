using System.Globalization;
using System.Text.Json;
using SparseTune.IO;
using SparseTune.Models;
using static TorchSharp.torch;

namespace SparseTune.Tuners.Dsee;

/// <summary>
/// DSEE's compact output, dsee_update.safetensors: what turns the base model into the tuned one, with the update
/// kept beside the (pruned) weights instead of merged into them. Per updated block (PART = query or value) of a
/// weight NAME (a Hugging Face parameter name; GPT-2's c_attn as (out, in), the transpose of its Conv1D file):
/// <code>
///   NAME.PART.rows            int64 (2): the block is rows [first, first + count) of W
///   NAME.PART.lora_A          (r, in)
///   NAME.PART.lora_B          (count, r)
///   NAME.PART.sparse_indices  int64 (n): Ω, flat row-major into the block's (count, in)
///   NAME.PART.sparse_values   (n): S on Ω
///   pruned.NAME               uint8 (⌈numel/8⌉): which entries of W are set to zero (unstructured pruning), one bit
///                             each, flat row-major, least significant bit first (numpy packbits, bitorder little)
///   dense.NAME                a densely trained tensor (the task head), its full value
/// </code>
/// Metadata: format "sparsetune-dsee", version "1", method "dsee", scaling (alpha / r, "R" format), pruning, and
/// removed_heads (JSON: layer → ORIGINAL head indices removed, as pruned_heads records them), sparsetune.id2label.
/// Applying it: remove the heads, zero the pruned entries, add scaling · (B·A + S⊙Ω) to each block, copy the dense
/// tensors: the same operations, in the same order, as the tuner's own merge, so the result is bit-identical.
/// <para>
/// What merging costs: the dense low-rank B·A fills every zero that pruning left in the query and value matrices,
/// so a merged model (model/, `sparsetune merge`) keeps exact zeros only in the key, attention-output and FFN
/// matrices; this file keeps the query and value zeros and the update apart (r·(in + out) + 2n values per block).
/// The pruned entries cost one bit per weight of the pruned matrices (a 32nd of their float32 size; int32
/// indices would cost 4 bytes per zero, 6.4 times more at 20%).
/// </para>
/// </summary>
public static class DseeUpdate
{
    public const string Format = "sparsetune-dsee";
    public const string Version = "1";
    public const string FileName = "dsee_update.safetensors";

    /// <summary>The part's name in tensor names and trainable names.</summary>
    public static string PartName(QkvPart part) => part == QkvPart.Query ? "query" : part == QkvPart.Value ? "value" : "key";

    /// <summary>scaling · (B·A + S⊙Ω) for one block, (rows, in); a new tensor without autograd history.</summary>
    public static Tensor BlockDelta(Tensor a, Tensor b, Tensor indices, Tensor values, double scaling)
    {
        using var _ = no_grad();
        Tensor delta = b.matmul(a);                                            // (rows, r)·(r, in)
        if (indices.numel() > 0)
            using (var flat = delta.view(-1)) flat.index_add_(0, indices, values, 1.0);
        return delta.mul_(scaling);
    }

    /// <summary>One updated block as written: the weight it belongs to, its rows and tensors.</summary>
    public sealed record Block(string WeightName, QkvPart Part, long RowStart, long Rows, Tensor A, Tensor B, Tensor Indices, Tensor Values);

    public static void Save(string path, double scaling, DseePruning pruning, IEnumerable<Block> blocks,
        IReadOnlyDictionary<string, Tensor> pruned, IReadOnlyDictionary<int, int[]> removedHeads,
        IEnumerable<KeyValuePair<string, Tensor>> dense, IReadOnlyDictionary<string, string>? headMetadata)
    {
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var b in blocks)
        {
            string key = $"{b.WeightName}.{PartName(b.Part)}";
            tensors.Add(new(key + ".rows", tensor(new[] { b.RowStart, b.Rows })));
            tensors.Add(new(key + ".lora_A", b.A.detach()));
            tensors.Add(new(key + ".lora_B", b.B.detach()));
            tensors.Add(new(key + ".sparse_indices", b.Indices.to_type(ScalarType.Int64)));
            tensors.Add(new(key + ".sparse_values", b.Values.detach()));
        }
        foreach (var (name, bits) in pruned) tensors.Add(new("pruned." + name, bits));
        foreach (var (name, t) in dense) tensors.Add(new("dense." + name, t.detach()));
        var metadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["version"] = Version,
            ["method"] = "dsee",
            ["scaling"] = scaling.ToString("R", CultureInfo.InvariantCulture),
            ["pruning"] = pruning.ToString().ToLowerInvariant(),
            ["removed_heads"] = JsonSerializer.Serialize(removedHeads.OrderBy(p => p.Key).ToDictionary(p => p.Key.ToString(CultureInfo.InvariantCulture), p => p.Value)),
        };
        foreach (var (key, value) in headMetadata ?? new Dictionary<string, string>()) metadata[key] = value;
        SafeTensors.Save(path, tensors, metadata);
    }

    /// <summary>
    /// Turns a base model into the tuned one, in place (see the type's remarks for the order). Names, shapes, index
    /// ranges and heads are checked first and all problems are one error; the model is then unchanged.
    /// Returns the names of the parameters set in full (the dense tensors).
    /// </summary>
    public static IReadOnlyList<string> Apply(TransformerModel model, string path)
    {
        using var file = SafeTensorsFile.Open(path);
        CheckFormat(file);
        var problems = new List<string>();
        double scaling = double.Parse(file.Metadata.GetValueOrDefault("scaling", "nan"), CultureInfo.InvariantCulture);
        if (!double.IsFinite(scaling)) problems.Add("metadata 'scaling' is missing or not a number");

        // 1. Heads: the base may be pruned already; map original indices to its current numbering.
        var heads = JsonSerializer.Deserialize<Dictionary<string, int[]>>(file.Metadata.GetValueOrDefault("removed_heads", "{}")) ?? [];
        var headRequests = new List<(int Layer, int[] Current)>();
        foreach (var (key, original) in heads)
        {
            if (!int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int layer) || layer >= model.Layers.Count)
            {
                problems.Add($"removed_heads names layer '{key}', which this {model.Config.ModelType} model does not have");
                continue;
            }
            var present = model.Layers[layer].Attention.PresentHeads;
            int[] alreadyGone = original.Where(h => !present.Contains(h)).ToArray();
            if (alreadyGone.Length > 0) problems.Add($"layer {layer}: heads {string.Join(", ", alreadyGone)} are not present in the base model");
            else headRequests.Add((layer, original.Select(h => present.ToList().IndexOf(h)).ToArray()));
        }
        if (problems.Count > 0) throw new InvalidDataException($"{path}: {string.Join("; ", problems)}");

        // Shapes after head pruning: each removed head takes HeadDim rows from q, k, v (each block of c_attn).
        var names = file.Tensors.Select(t => t.Name).ToList();
        var state = model.state_dict();
        var expectedShape = state.ToDictionary(p => p.Key, p => p.Value.shape.ToArray());
        foreach (var (layer, current) in headRequests)
        {
            AttentionView attention = model.Layers[layer].Attention;
            long removedRows = (long)current.Length * attention.HeadDim;
            long removedKeyValueRows = (long)current.Length / attention.GroupSize * attention.HeadDim;
            foreach (var linear in attention.Linears)
            {
                long[] shape = expectedShape[linear.Name + ".weight"];
                if (linear == attention.Output) shape[1] -= removedRows;
                else if (attention.IsFused) shape[0] -= 3 * removedRows;
                else shape[0] -= linear == attention.Query ? removedRows : removedKeyValueRows;
            }
        }

        var blocks = new List<(Tensor Weight, string Key, long RowStart, long Rows)>();
        foreach (string rowsKey in names.Where(n => n.EndsWith(".rows", StringComparison.Ordinal)))
        {
            string key = rowsKey[..^".rows".Length];
            string weightName = key[..key.LastIndexOf('.')];
            if (!state.TryGetValue(weightName, out var weight)) { problems.Add($"the model has no parameter {weightName}"); continue; }
            long[] shape = expectedShape[weightName];
            long[] rows;
            using (var loaded = file.Load(rowsKey)) rows = loaded.data<long>().ToArray();
            if (rows.Length != 2 || rows[0] < 0 || rows[1] < 0 || rows[0] + rows[1] > shape[0]) { problems.Add($"{rowsKey} [{string.Join(", ", rows)}] lies outside the {shape[0]} rows of {weightName}"); continue; }
            string[] parts = [".lora_A", ".lora_B", ".sparse_indices", ".sparse_values"];
            if (parts.Any(p => !file.Contains(key + p))) { problems.Add($"{key} lacks one of {string.Join(", ", parts)}"); continue; }
            long[] a = file.Info(key + ".lora_A").Shape, b = file.Info(key + ".lora_B").Shape;
            if (a.Length != 2 || b.Length != 2 || a[1] != shape[1] || b[0] != rows[1] || b[1] != a[0])
                problems.Add($"{key}: lora_A [{string.Join(", ", a)}] and lora_B [{string.Join(", ", b)}] do not fit a {rows[1]}×{shape[1]} block");
            long[] n = file.Info(key + ".sparse_indices").Shape, v = file.Info(key + ".sparse_values").Shape;
            if (!n.SequenceEqual(v)) problems.Add($"{key}: {n.FirstOrDefault()} sparse indices but {v.FirstOrDefault()} values");
            using (var scope = NewDisposeScope())
                if (file.Load(key + ".sparse_indices").to_type(ScalarType.Int64) is var indices && indices.numel() > 0 && (indices.min().item<long>() < 0 || indices.max().item<long>() >= rows[1] * shape[1]))
                    problems.Add($"{key}: sparse indices outside the block's {rows[1] * shape[1]} entries");
            blocks.Add((weight, key, rows[0], rows[1]));
        }
        var prunedNames = names.Where(n => n.StartsWith("pruned.", StringComparison.Ordinal)).ToList();
        foreach (string name in prunedNames)
        {
            string target = name["pruned.".Length..];
            if (!expectedShape.TryGetValue(target, out var shape)) { problems.Add($"the model has no parameter {target}"); continue; }
            long entries = shape.Aggregate(1L, (x, y) => x * y);
            if (file.Info(name).Shape is not [var bytes] || bytes != (entries + 7) / 8)
                problems.Add($"{name} is [{string.Join(", ", file.Info(name).Shape)}], expected [{(entries + 7) / 8}]: one bit for each of the weight's {entries} entries");
        }
        var denseNames = names.Where(n => n.StartsWith("dense.", StringComparison.Ordinal)).ToList();
        foreach (string name in denseNames)
        {
            string target = name["dense.".Length..];
            if (!expectedShape.TryGetValue(target, out var shape)) problems.Add($"the model has no parameter {target}");
            else if (!file.Info(name).Shape.SequenceEqual(shape))
                problems.Add($"{target} is [{string.Join(", ", shape)}] in the model but [{string.Join(", ", file.Info(name).Shape)}] in the file");
        }
        if (problems.Count > 0) throw new InvalidDataException($"{path}: {string.Join("; ", problems)}");

        foreach (var (layer, current) in headRequests) model.PruneHeads(layer, current);
        state = model.state_dict();   // pruning replaced the resized parameters
        using var _ = no_grad();
        foreach (string name in prunedNames)
        {
            using var scope = NewDisposeScope();
            Tensor weight = state[name["pruned.".Length..]];
            weight.view(-1).masked_fill_(Unpack(file.Load(name), weight.numel()), 0);
        }
        foreach (var (_, key, rowStart, rows) in blocks)
        {
            using var scope = NewDisposeScope();
            Tensor weight = state[key[..key.LastIndexOf('.')]];
            Tensor delta = BlockDelta(file.Load(key + ".lora_A"), file.Load(key + ".lora_B"),
                file.Load(key + ".sparse_indices").to_type(ScalarType.Int64), file.Load(key + ".sparse_values"), scaling);
            weight.narrow(0, rowStart, rows).add_(delta);
        }
        foreach (string name in denseNames)
        {
            using var loaded = file.Load(name);
            state[name["dense.".Length..]].copy_(loaded);
        }
        return denseNames.Select(n => n["dense.".Length..]).ToList();
    }

    static readonly byte[] BitValues = [1, 2, 4, 8, 16, 32, 64, 128];

    /// <summary>Where <paramref name="weight"/> is exactly zero, packed 8 entries a byte, least significant bit first: uint8 (⌈numel/8⌉).</summary>
    public static Tensor PackZeros(Tensor weight)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        long n = weight.numel(), padded = (n + 7) / 8 * 8;
        Tensor zero = zeros(padded, dtype: ScalarType.Byte, device: weight.device);
        zero.narrow(0, 0, n).copy_(weight.detach().reshape(-1).eq(0));
        Tensor bits = tensor(BitValues, device: weight.device);
        return zero.view(-1, 8).mul(bits).sum(1, type: ScalarType.Int64).to_type(ScalarType.Byte).MoveToOuterDisposeScope();
    }

    /// <summary>The boolean mask (numel) of <see cref="PackZeros"/>'s bits.</summary>
    public static Tensor Unpack(Tensor packed, long numel)
    {
        using var scope = NewDisposeScope();
        Tensor bits = tensor(BitValues, device: packed.device);
        return packed.to_type(ScalarType.Byte).unsqueeze(1).bitwise_and(bits).ne(0).reshape(-1).narrow(0, 0, numel).MoveToOuterDisposeScope();
    }

    static void CheckFormat(SafeTensorsFile file)
    {
        if (file.Metadata.GetValueOrDefault("format") != Format)
            throw new InvalidDataException($"{file.Path}: not a DSEE update file (metadata format is '{file.Metadata.GetValueOrDefault("format")}')");
        string version = file.Metadata.GetValueOrDefault("version", "");
        if (version != Version)
            throw new InvalidDataException($"{file.Path}: DSEE update file version '{version}' is not one this SparseTune reads ({Version})");
    }

    /// <summary>Recognises dsee_update files (any file name) by their metadata, given directly or inside a folder.</summary>
    public static readonly IArtifactReader Reader = new DseeUpdateReader();

    sealed class DseeUpdateReader : IArtifactReader
    {
        public string Description => "a DSEE update file (.safetensors with format metadata 'sparsetune-dsee')";

        public IReadOnlyList<string> Locate(string path) => MethodArtifacts.SafeTensorsWithFormat(path, format => format == Format);

        public ArtifactHead HeadOf(string artifact) => MethodArtifacts.HeadFromRecordedLabels(artifact);

        public IReadOnlyCollection<string> ApplyTo(TransformerModel model, string artifact) => Apply(model, artifact);
    }
}
