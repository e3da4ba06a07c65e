using System.Buffers.Binary;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.IO;

/// <summary>
/// The byte-level safetensors format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
/// (<c>{"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [begin, end]}}</c>), then the data
/// section, which the offsets index.
/// </summary>
internal static class SafeTensorsFormat
{
    /// <summary>The largest header accepted (as the reference implementation: 100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public const string MetadataKey = "__metadata__";

    /// <summary>Copies go through spans of at most this many bytes (a span's length is an int).</summary>
    public const long ChunkBytes = 1L << 30;

    public static int ElementSize(SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.F64 or SafeTensorsDType.I64 => 8,
        SafeTensorsDType.F32 or SafeTensorsDType.I32 => 4,
        SafeTensorsDType.F16 or SafeTensorsDType.BF16 or SafeTensorsDType.I16 => 2,
        SafeTensorsDType.I8 or SafeTensorsDType.U8 or SafeTensorsDType.BOOL => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    public static ScalarType ToScalarType(SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.F32 => ScalarType.Float32,
        SafeTensorsDType.F16 => ScalarType.Float16,
        SafeTensorsDType.BF16 => ScalarType.BFloat16,
        SafeTensorsDType.F64 => ScalarType.Float64,
        SafeTensorsDType.I64 => ScalarType.Int64,
        SafeTensorsDType.I32 => ScalarType.Int32,
        SafeTensorsDType.I16 => ScalarType.Int16,
        SafeTensorsDType.I8 => ScalarType.Int8,
        SafeTensorsDType.U8 => ScalarType.Byte,
        SafeTensorsDType.BOOL => ScalarType.Bool,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    public static bool TryFromScalarType(ScalarType type, out SafeTensorsDType dtype)
    {
        SafeTensorsDType? d = type switch
        {
            ScalarType.Float32 => SafeTensorsDType.F32,
            ScalarType.Float16 => SafeTensorsDType.F16,
            ScalarType.BFloat16 => SafeTensorsDType.BF16,
            ScalarType.Float64 => SafeTensorsDType.F64,
            ScalarType.Int64 => SafeTensorsDType.I64,
            ScalarType.Int32 => SafeTensorsDType.I32,
            ScalarType.Int16 => SafeTensorsDType.I16,
            ScalarType.Int8 => SafeTensorsDType.I8,
            ScalarType.Byte => SafeTensorsDType.U8,
            ScalarType.Bool => SafeTensorsDType.BOOL,
            _ => null,
        };
        dtype = d.GetValueOrDefault();
        return d.HasValue;
    }

    /// <summary>Exact (case-sensitive) dtype names as the format spells them.</summary>
    public static bool TryParseDType(string text, out SafeTensorsDType dtype)
    {
        SafeTensorsDType? d = text switch
        {
            "F32" => SafeTensorsDType.F32,
            "F16" => SafeTensorsDType.F16,
            "BF16" => SafeTensorsDType.BF16,
            "F64" => SafeTensorsDType.F64,
            "I64" => SafeTensorsDType.I64,
            "I32" => SafeTensorsDType.I32,
            "I16" => SafeTensorsDType.I16,
            "I8" => SafeTensorsDType.I8,
            "U8" => SafeTensorsDType.U8,
            "BOOL" => SafeTensorsDType.BOOL,
            _ => null,
        };
        dtype = d.GetValueOrDefault();
        return d.HasValue;
    }

    public static SafeTensorsFormatException Error(string path, string? tensor, string detail) =>
        new(path, tensor, tensor is null
            ? $"{path}: invalid safetensors file: {detail}"
            : $"{path}: invalid safetensors file: tensor '{tensor}': {detail}");

    // ---------------------------------------------------------------- reading

    /// <summary>Reads and validates the length prefix, returning N (the header byte count).</summary>
    public static long ReadHeaderLength(string path, ReadOnlySpan<byte> prefix, long fileLength)
    {
        RequireLittleEndian();
        if (fileLength < 8)
            throw Error(path, null, $"truncated: the file is {fileLength} bytes, shorter than the 8-byte header length");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (n > MaxHeaderBytes)
            throw Error(path, null, $"header length {n} exceeds the {MaxHeaderBytes}-byte limit");
        if ((long)n > fileLength - 8)
            throw Error(path, null, $"header length {n} runs past the end of the file ({fileLength} bytes)");
        return (long)n;
    }

    /// <summary>Parses and validates the JSON header against a data section of <paramref name="dataSize"/> bytes.</summary>
    public static (List<SafeTensorInfo> Tensors, Dictionary<string, string> Metadata) ParseHeader(string path, ReadOnlyMemory<byte> json, long dataSize)
    {
        var tensors = new List<SafeTensorInfo>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            using JsonDocument doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 64 });
            JsonElement root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Error(path, null, $"header is a JSON {Kind(root.ValueKind)}, not an object");
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (JsonProperty property in root.EnumerateObject())
            {
                string name = property.Name;
                if (!seen.Add(name)) throw Error(path, name == MetadataKey ? null : name, $"header names '{name}' twice");
                if (name == MetadataKey) ReadMetadata(path, property.Value, metadata);
                else tensors.Add(ReadEntry(path, name, property.Value));
            }
        }
        catch (JsonException e)
        {
            throw Error(path, null, $"header is not valid JSON ({e.Message})");
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException or DecoderFallbackException)
        {
            // e.g. a string with an escaped lone surrogate, which cannot become a .NET string.
            throw Error(path, null, $"header is not valid JSON ({e.Message})");
        }

        foreach (SafeTensorInfo info in tensors) CheckRange(path, info, dataSize);
        CheckOverlaps(path, tensors);
        return (tensors, metadata);
    }

    static void ReadMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw Error(path, null, $"{MetadataKey} is a JSON {Kind(value.ValueKind)}, not an object of strings");
        foreach (JsonProperty entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw Error(path, null, $"{MetadataKey} value of '{entry.Name}' is a JSON {Kind(entry.Value.ValueKind)}, not a string");
            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
                throw Error(path, null, $"{MetadataKey} names '{entry.Name}' twice");
        }
    }

    static SafeTensorInfo ReadEntry(string path, string name, JsonElement value)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw Error(path, name, $"entry is a JSON {Kind(value.ValueKind)}, not an object");

        if (!value.TryGetProperty("dtype", out JsonElement dtypeElement))
            throw Error(path, name, "entry has no dtype");
        if (dtypeElement.ValueKind != JsonValueKind.String)
            throw Error(path, name, $"dtype is a JSON {Kind(dtypeElement.ValueKind)}, not a string");
        string dtypeText = dtypeElement.GetString()!;
        if (!TryParseDType(dtypeText, out SafeTensorsDType dtype))
            throw Error(path, name, $"unsupported dtype '{dtypeText}' (supported: {string.Join(", ", Enum.GetNames<SafeTensorsDType>())})");

        if (!value.TryGetProperty("shape", out JsonElement shapeElement))
            throw Error(path, name, "entry has no shape");
        if (shapeElement.ValueKind != JsonValueKind.Array)
            throw Error(path, name, $"shape is a JSON {Kind(shapeElement.ValueKind)}, not an array");
        var shape = new long[shapeElement.GetArrayLength()];
        int i = 0;
        foreach (JsonElement dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out long d))
                throw Error(path, name, $"shape[{i}] is not an integer");
            if (d < 0) throw Error(path, name, $"shape[{i}] is negative ({d})");
            shape[i++] = d;
        }

        if (!value.TryGetProperty("data_offsets", out JsonElement offsets))
            throw Error(path, name, "entry has no data_offsets");
        if (offsets.ValueKind != JsonValueKind.Array || offsets.GetArrayLength() != 2)
            throw Error(path, name, "data_offsets is not an array of two integers");
        long begin = Offset(path, name, offsets[0], "begin");
        long end = Offset(path, name, offsets[1], "end");
        return new SafeTensorInfo(name, dtype, shape, begin, end);
    }

    static long Offset(string path, string name, JsonElement element, string which)
    {
        if (element.ValueKind != JsonValueKind.Number || !element.TryGetInt64(out long v))
            throw Error(path, name, $"data_offsets {which} is not an integer");
        if (v < 0) throw Error(path, name, $"data_offsets {which} is negative ({v})");
        return v;
    }

    static void CheckRange(string path, SafeTensorInfo info, long dataSize)
    {
        if (info.Begin > info.End)
            throw Error(path, info.Name, $"data_offsets begin {info.Begin} is past end {info.End}");
        if (info.End > dataSize)
            throw Error(path, info.Name, $"data_offsets end {info.End} is past the data section ({dataSize} bytes)");
        long expected;
        try
        {
            expected = ElementSize(info.DType);
            foreach (long d in info.Shape) expected = checked(expected * d);
        }
        catch (OverflowException)
        {
            throw Error(path, info.Name, $"shape [{string.Join(", ", info.Shape)}] is too large");
        }
        if (expected != info.End - info.Begin)
            throw Error(path, info.Name, $"holds {info.End - info.Begin} bytes, but {info.DType} [{string.Join(", ", info.Shape)}] needs {expected}");
    }

    static void CheckOverlaps(string path, List<SafeTensorInfo> tensors)
    {
        SafeTensorInfo? previous = null;
        foreach (SafeTensorInfo info in tensors.Where(t => t.End > t.Begin).OrderBy(t => t.Begin).ThenBy(t => t.End))
        {
            if (previous is not null && info.Begin < previous.End)
                throw Error(path, info.Name, $"data_offsets [{info.Begin}, {info.End}] overlap tensor '{previous.Name}' [{previous.Begin}, {previous.End}]");
            if (previous is null || info.End > previous.End) previous = info;
        }
    }

    /// <summary>Tensor bytes are copied as they lie in memory; the format stores them little-endian.</summary>
    static void RequireLittleEndian()
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("safetensors I/O needs a little-endian machine");
    }

    static string Kind(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        JsonValueKind.Null => "null",
        _ => "value",
    };

    /// <summary>Copies <paramref name="length"/> bytes from <paramref name="source"/> into a new contiguous CPU tensor.</summary>
    public static unsafe void CopyInto(Tensor target, byte* source, long length, long chunkBytes = ChunkBytes)
    {
        ForEachChunk(target, length, chunkBytes, (chunk, offset) => new ReadOnlySpan<byte>(source + offset, chunk.Length).CopyTo(chunk));
    }

    /// <summary>As the pointer overload (for tests of the chunked path).</summary>
    public static unsafe void CopyInto(Tensor target, ReadOnlySpan<byte> source, long chunkBytes = ChunkBytes)
    {
        fixed (byte* p = source) CopyInto(target, p, source.Length, chunkBytes);
    }

    // ---------------------------------------------------------------- writing

    /// <summary>Assigns consecutive byte ranges (in the given order, no gaps) to the tensors.</summary>
    public static List<SafeTensorInfo> Layout(IReadOnlyList<KeyValuePair<string, Tensor>> tensors)
    {
        RequireLittleEndian();
        var infos = new List<SafeTensorInfo>(tensors.Count);
        var names = new HashSet<string>(StringComparer.Ordinal);
        long offset = 0;
        foreach (var (name, tensor) in tensors)
        {
            ArgumentNullException.ThrowIfNull(name, "tensor name");
            if (tensor is null) throw new ArgumentNullException(nameof(tensors), $"tensor '{name}' is null");
            if (name == MetadataKey) throw new ArgumentException($"'{MetadataKey}' is reserved and cannot name a tensor", nameof(tensors));
            if (!names.Add(name)) throw new ArgumentException($"tensor name '{name}' appears twice", nameof(tensors));
            if (!TryFromScalarType(tensor.dtype, out SafeTensorsDType dtype))
                throw new ArgumentException($"tensor '{name}' has dtype {tensor.dtype}, which safetensors I/O does not support", nameof(tensors));
            long[] shape = tensor.shape;
            long bytes = checked(tensor.numel() * ElementSize(dtype));
            infos.Add(new SafeTensorInfo(name, dtype, shape, offset, offset + bytes));
            offset = checked(offset + bytes);
        }
        return infos;
    }

    /// <summary>The length prefix plus the JSON header, padded with spaces to a multiple of 8 bytes.</summary>
    public static byte[] BuildHeader(IReadOnlyList<SafeTensorInfo> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        using var json = new MemoryStream();
        using (var writer = new Utf8JsonWriter(json, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                writer.WriteStartObject(MetadataKey);
                foreach (var (key, value) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
                {
                    ArgumentNullException.ThrowIfNull(value, $"metadata '{key}'");
                    writer.WriteString(key, value);
                }
                writer.WriteEndObject();
            }
            foreach (SafeTensorInfo info in tensors)
            {
                writer.WriteStartObject(info.Name);
                writer.WriteString("dtype", info.DType.ToString());
                writer.WriteStartArray("shape");
                foreach (long d in info.Shape) writer.WriteNumberValue(d);
                writer.WriteEndArray();
                writer.WriteStartArray("data_offsets");
                writer.WriteNumberValue(info.Begin);
                writer.WriteNumberValue(info.End);
                writer.WriteEndArray();
                writer.WriteEndObject();
            }
            writer.WriteEndObject();
        }
        long jsonLength = json.Length;
        long padded = (jsonLength + 7) / 8 * 8;
        if (padded > MaxHeaderBytes) throw new ArgumentException($"the safetensors header would be {padded} bytes, over the {MaxHeaderBytes}-byte limit");
        var result = new byte[8 + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(result, (ulong)padded);
        json.GetBuffer().AsSpan(0, (int)jsonLength).CopyTo(result.AsSpan(8));
        result.AsSpan(8 + (int)jsonLength).Fill((byte)' ');
        return result;
    }

    /// <summary>Streams one tensor's bytes (a contiguous CPU copy when needed).</summary>
    public static void WriteTensorBytes(Stream stream, Tensor tensor, SafeTensorInfo info, long chunkBytes = ChunkBytes)
    {
        if (info.ByteLength == 0) return;
        using Tensor detached = tensor.detach();
        using Tensor cpu = detached.cpu();
        using Tensor contiguous = cpu.contiguous();
        long bytes = contiguous.numel() * contiguous.ElementSize;
        if (bytes != info.ByteLength)
            throw new InvalidOperationException($"tensor '{info.Name}' changed size while being saved ({bytes} bytes, expected {info.ByteLength})");
        ForEachChunk(contiguous, bytes, chunkBytes, (chunk, _) => stream.Write(chunk));
    }

    delegate void ChunkAction(Span<byte> chunk, long offset);

    /// <summary>
    /// Visits a contiguous CPU tensor's first <paramref name="length"/> bytes (all of them) in spans of at most
    /// <paramref name="chunkBytes"/> (rounded down to whole elements, at least one).
    /// </summary>
    static void ForEachChunk(Tensor tensor, long length, long chunkBytes, ChunkAction action)
    {
        if (length == 0) return;
        if (length != tensor.numel() * tensor.ElementSize)
            throw new ArgumentException($"expected {length} bytes, the tensor holds {tensor.numel() * tensor.ElementSize}");
        if (length <= chunkBytes)
        {
            action(tensor.bytes, 0);
            return;
        }
        long elementSize = tensor.ElementSize;
        long perChunk = Math.Max(1, chunkBytes / elementSize);
        using Tensor flat = tensor.view(-1);
        long count = flat.numel();
        for (long start = 0; start < count; start += perChunk)
        {
            using Tensor part = flat.narrow(0, start, Math.Min(perChunk, count - start));
            action(part.bytes, start * elementSize);
        }
    }
}
