using static TorchSharp.torch;

namespace SparseTune.IO;

// API CONTRACT (stub: being implemented). Keep these public signatures.

/// <summary>Element types of the safetensors format that SparseTune reads and writes.</summary>
public enum SafeTensorsDType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL }

/// <summary>One tensor's header entry: dtype, shape and byte range relative to the data section.</summary>
public sealed record SafeTensorInfo(string Name, SafeTensorsDType DType, long[] Shape, long Begin, long End);

/// <summary>A malformed safetensors file; the message is one line naming the file and, where known, the tensor.</summary>
public class SafeTensorsFormatException(string filePath, string? tensorName, string message)
    : Exception(message)
{
    public string FilePath { get; } = filePath;
    public string? TensorName { get; } = tensorName;
}

/// <summary>An open safetensors file, memory-mapped: tensors are materialised one at a time on Load.</summary>
public sealed class SafeTensorsFile : IDisposable
{
    public string Path { get; } = "";
    public IReadOnlyList<SafeTensorInfo> Tensors { get; } = [];
    public IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>();
    public static SafeTensorsFile Open(string path) => throw new NotImplementedException();
    public bool Contains(string name) => throw new NotImplementedException();
    public SafeTensorInfo Info(string name) => throw new NotImplementedException();
    /// <summary>A new CPU tensor with the stored dtype and shape (its own memory, independent of the map).</summary>
    public Tensor Load(string name) => throw new NotImplementedException();
    public void Dispose() { }
}

public static class SafeTensors
{
    /// <summary>Loads every tensor of one file.</summary>
    public static Dictionary<string, Tensor> Load(string path) => throw new NotImplementedException();
    /// <summary>Writes tensors (any supported dtype, any device; made contiguous on CPU) atomically.</summary>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null) => throw new NotImplementedException();
}

/// <summary>
/// A Hugging Face checkpoint folder: model.safetensors, or shards listed by model.safetensors.index.json.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    public IReadOnlyCollection<string> Names { get; } = [];
    public static SafeTensorsCheckpoint Open(string directory) => throw new NotImplementedException();
    public SafeTensorInfo Info(string name) => throw new NotImplementedException();
    public Tensor Load(string name) => throw new NotImplementedException();
    /// <summary>Writes model.safetensors, or shards of at most maxShardBytes plus the index json.</summary>
    public static void Save(string directory, IEnumerable<KeyValuePair<string, Tensor>> tensors, long maxShardBytes = long.MaxValue) => throw new NotImplementedException();
    public void Dispose() { }
}
