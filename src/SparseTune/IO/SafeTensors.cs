using System.Text;
using static TorchSharp.torch;

namespace SparseTune.IO;

// API CONTRACT. Keep these public signatures.
// The file reader lives in SafeTensorsFile.cs, the folder-level checkpoint in SafeTensorsCheckpoint.cs and the
// byte-level format (header parsing, validation, dtype table, tensor byte copies) in SafeTensorsFormat.cs.

/// <summary>Element types of the safetensors format that SparseTune reads and writes.</summary>
public enum SafeTensorsDType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL }

/// <summary>One tensor's header entry: dtype, shape and byte range relative to the data section.</summary>
public sealed record SafeTensorInfo(string Name, SafeTensorsDType DType, long[] Shape, long Begin, long End)
{
    /// <summary>Bytes the tensor occupies in the data section (End - Begin).</summary>
    public long ByteLength => End - Begin;
}

/// <summary>A malformed safetensors file; the message is one line naming the file and, where known, the tensor.</summary>
public class SafeTensorsFormatException(string filePath, string? tensorName, string message)
    : Exception(OneLine(message))
{
    public string FilePath { get; } = filePath;
    public string? TensorName { get; } = tensorName;

    /// <summary>Escapes control characters (newlines included) so that a message always stays on one line.</summary>
    internal static string OneLine(string text)
    {
        if (!text.Any(char.IsControl)) return text;
        var sb = new StringBuilder(text.Length + 8);
        foreach (char c in text)
        {
            switch (c)
            {
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                default:
                    if (char.IsControl(c)) sb.Append("\\u").Append(((int)c).ToString("x4"));
                    else sb.Append(c);
                    break;
            }
        }
        return sb.ToString();
    }
}

public static class SafeTensors
{
    /// <summary>Loads every tensor of one file.</summary>
    public static Dictionary<string, Tensor> Load(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        var result = new Dictionary<string, Tensor>(file.Tensors.Count);
        try
        {
            foreach (SafeTensorInfo info in file.Tensors) result.Add(info.Name, file.Load(info.Name));
            return result;
        }
        catch
        {
            foreach (Tensor t in result.Values) t.Dispose();
            throw;
        }
    }

    /// <summary>Writes tensors (any supported dtype, any device; made contiguous on CPU) atomically.</summary>
    /// <remarks>
    /// Tensors are written in the order given, with no gaps between them (as the format requires); metadata keys are
    /// written in ordinal order, so identical input gives identical bytes. Each tensor is copied to contiguous CPU
    /// memory one at a time and streamed out.
    /// </remarks>
    public static void Save(string path, IEnumerable<KeyValuePair<string, Tensor>> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        List<KeyValuePair<string, Tensor>> list = tensors.ToList();
        List<SafeTensorInfo> infos = SafeTensorsFormat.Layout(list);
        byte[] header = SafeTensorsFormat.BuildHeader(infos, metadata);
        AtomicFile.Write(path, stream =>
        {
            stream.Write(header);
            for (int i = 0; i < list.Count; i++)
                SafeTensorsFormat.WriteTensorBytes(stream, list[i].Value, infos[i]);
        });
    }
}
