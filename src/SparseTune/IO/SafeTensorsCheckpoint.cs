using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace SparseTune.IO;

/// <summary>
/// A Hugging Face checkpoint folder: model.safetensors, or shards listed by model.safetensors.index.json.
/// </summary>
/// <remarks>
/// Open maps every file at once and validates the index against the shards' headers, so a broken checkpoint fails
/// on Open, not halfway through loading.
/// </remarks>
public sealed partial class SafeTensorsCheckpoint : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>The largest index file read (a weight map of millions of tensors is still far below this).</summary>
    const long MaxIndexBytes = 100_000_000;

    readonly List<SafeTensorsFile> _files;
    readonly Dictionary<string, SafeTensorsFile> _fileOf;
    bool _disposed;

    /// <summary>Tensor names: the single file's header order, or the index's weight_map order.</summary>
    public IReadOnlyCollection<string> Names { get; }
    /// <summary>The folder this checkpoint was opened from.</summary>
    public string Directory { get; }
    /// <summary>The safetensors files read (one, or the shards in index order).</summary>
    public IReadOnlyList<SafeTensorsFile> Files => _files;

    SafeTensorsCheckpoint(string directory, List<SafeTensorsFile> files, List<string> names, Dictionary<string, SafeTensorsFile> fileOf)
    {
        Directory = directory;
        _files = files;
        Names = names.AsReadOnly();
        _fileOf = fileOf;
    }

    public static SafeTensorsCheckpoint Open(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        string index = Path.Combine(directory, IndexFileName);
        string single = Path.Combine(directory, SingleFileName);
        if (File.Exists(index)) return OpenSharded(directory, index);
        if (File.Exists(single))
        {
            SafeTensorsFile file = SafeTensorsFile.Open(single);
            var names = file.Tensors.Select(t => t.Name).ToList();
            return new SafeTensorsCheckpoint(directory, [file], names, names.ToDictionary(n => n, _ => file, StringComparer.Ordinal));
        }
        string why = System.IO.Directory.Exists(directory) ? "has neither" : "does not exist, so has neither";
        throw new FileNotFoundException($"{directory}: the checkpoint folder {why} {SingleFileName} nor {IndexFileName}", single);
    }

    static SafeTensorsCheckpoint OpenSharded(string directory, string indexPath)
    {
        List<(string Tensor, string Shard)> weightMap = ReadWeightMap(indexPath);
        var files = new List<SafeTensorsFile>();
        var byShard = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        var fileOf = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            foreach (var (tensor, shard) in weightMap)
            {
                if (!byShard.TryGetValue(shard, out SafeTensorsFile? file))
                {
                    string shardPath = Path.Combine(directory, shard);
                    if (!File.Exists(shardPath))
                        throw new FileNotFoundException($"{indexPath}: shard {shard} (holding tensor '{Clean(tensor)}') is missing from {directory}", shardPath);
                    file = SafeTensorsFile.Open(shardPath);
                    files.Add(file);
                    byShard.Add(shard, file);
                }
                if (!file.Contains(tensor))
                    throw new SafeTensorsFormatException(file.Path, tensor,
                        $"{indexPath}: weight_map puts tensor '{tensor}' in {shard}, but {file.Path} has no such tensor");
                fileOf.Add(tensor, file);
            }
            return new SafeTensorsCheckpoint(directory, files, weightMap.Select(p => p.Tensor).ToList(), fileOf);
        }
        catch
        {
            foreach (SafeTensorsFile file in files) file.Dispose();
            throw;
        }
    }

    static List<(string Tensor, string Shard)> ReadWeightMap(string indexPath)
    {
        SafeTensorsFormatException Bad(string detail, string? tensor = null) => new(indexPath, tensor, $"{indexPath}: invalid checkpoint index: {detail}");
        byte[] bytes;
        using (var stream = new FileStream(indexPath, FileMode.Open, FileAccess.Read, FileShare.Read))
        {
            if (stream.Length > MaxIndexBytes) throw Bad($"the file is {stream.Length} bytes, over the {MaxIndexBytes}-byte limit");
            bytes = new byte[stream.Length];
            stream.ReadExactly(bytes);
        }
        var result = new List<(string, string)>();
        try
        {
            using JsonDocument doc = JsonDocument.Parse(bytes);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad("not a JSON object");
            if (!doc.RootElement.TryGetProperty("weight_map", out JsonElement map)) throw Bad("no weight_map");
            if (map.ValueKind != JsonValueKind.Object) throw Bad("weight_map is not an object");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (JsonProperty entry in map.EnumerateObject())
            {
                if (!seen.Add(entry.Name)) throw Bad($"weight_map names tensor '{entry.Name}' twice", entry.Name);
                if (entry.Value.ValueKind != JsonValueKind.String) throw Bad($"weight_map value of '{entry.Name}' is not a file name", entry.Name);
                string shard = entry.Value.GetString()!;
                if (shard.Length == 0 || shard != Path.GetFileName(shard) || shard is "." or ".." || shard.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
                    throw Bad($"weight_map puts '{entry.Name}' in '{shard}', which is not a plain file name", entry.Name);
                result.Add((entry.Name, shard));
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or ArgumentException)
        {
            throw Bad($"not valid JSON ({e.Message})");
        }
        return result;
    }

    public SafeTensorInfo Info(string name) => FileOf(name).Info(name);

    public Tensor Load(string name) => FileOf(name).Load(name);

    /// <summary>The file (shard) that holds tensor <paramref name="name"/>.</summary>
    public SafeTensorsFile FileOf(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return _fileOf.TryGetValue(name, out SafeTensorsFile? file)
            ? file
            : throw new KeyNotFoundException($"{Directory}: the checkpoint has no tensor named '{Clean(name)}'");
    }

    /// <summary>Writes model.safetensors, or shards of at most maxShardBytes plus the index json.</summary>
    /// <remarks>
    /// As Hugging Face splits: tensors in order fill a shard until the next would push it past maxShardBytes (a
    /// tensor larger than that gets a shard of its own). Files are named model-00001-of-0000N.safetensors and the
    /// index is <c>{"metadata": {"total_size": bytes}, "weight_map": {name: file}}</c> with sorted keys. Every file
    /// carries the metadata <c>{"format": "pt"}</c>, which transformers requires. Index or shards left in the folder
    /// by an earlier save that the new layout does not use are deleted.
    /// </remarks>
    public static void Save(string directory, IEnumerable<KeyValuePair<string, Tensor>> tensors, long maxShardBytes = long.MaxValue)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxShardBytes);
        List<KeyValuePair<string, Tensor>> list = tensors.ToList();
        FiniteChecks.EnsureWritable(directory, list);
        List<SafeTensorInfo> layout = SafeTensorsFormat.Layout(list);   // validates names and dtypes up front
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        System.IO.Directory.CreateDirectory(directory);

        var shards = new List<List<int>>();
        long current = 0;
        for (int i = 0; i < list.Count; i++)
        {
            long size = layout[i].ByteLength;
            if (shards.Count == 0 || (shards[^1].Count > 0 && current + size > maxShardBytes))
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(i);
            current += size;
        }

        var keep = new HashSet<string>(StringComparer.Ordinal);
        if (shards.Count <= 1)
        {
            SafeTensors.Save(Path.Combine(directory, SingleFileName), list, metadata);
            keep.Add(SingleFileName);
        }
        else
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int s = 0; s < shards.Count; s++)
            {
                string name = $"model-{s + 1:D5}-of-{shards.Count:D5}.safetensors";
                SafeTensors.Save(Path.Combine(directory, name), shards[s].Select(i => list[i]), metadata);
                foreach (int i in shards[s]) weightMap.Add(list[i].Key, name);
                keep.Add(name);
            }
            long total = layout.Sum(t => t.ByteLength);
            AtomicFile.Write(Path.Combine(directory, IndexFileName), stream =>
            {
                using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
                {
                    writer.WriteStartObject();
                    writer.WriteStartObject("metadata");
                    writer.WriteNumber("total_size", total);
                    writer.WriteEndObject();
                    writer.WriteStartObject("weight_map");
                    foreach (var (tensor, file) in weightMap) writer.WriteString(tensor, file);
                    writer.WriteEndObject();
                    writer.WriteEndObject();
                }
                stream.WriteByte((byte)'\n');
            });
            keep.Add(IndexFileName);
        }

        // Remove a stale layout: an old index would otherwise win over a new model.safetensors, and old shards linger.
        foreach (string stale in new[] { SingleFileName, IndexFileName }
                     .Concat(System.IO.Directory.EnumerateFiles(directory, "model-*-of-*.safetensors")
                         .Select(Path.GetFileName).Where(n => n is not null && ShardName().IsMatch(n)).Select(n => n!))
                     .ToList())
        {
            if (!keep.Contains(stale)) File.Delete(Path.Combine(directory, stale));
        }
    }

    [GeneratedRegex(@"^model-\d{5}-of-\d{5}\.safetensors$", RegexOptions.CultureInvariant)]
    private static partial Regex ShardName();

    static string Clean(string text) => SafeTensorsFormatException.OneLine(text);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (SafeTensorsFile file in _files) file.Dispose();
    }
}
