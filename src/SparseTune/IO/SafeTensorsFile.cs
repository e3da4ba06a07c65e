using System.IO.MemoryMappedFiles;
using static TorchSharp.torch;

namespace SparseTune.IO;

/// <summary>An open safetensors file, memory-mapped: tensors are materialised one at a time on Load.</summary>
/// <remarks>
/// Open reads and validates the header (strictly: every malformation is a <see cref="SafeTensorsFormatException"/>)
/// and maps the file read-only; Load allocates one tensor and copies its bytes out of the map. Loads may run on
/// several threads at once; Dispose must not race them.
/// </remarks>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;
    readonly byte* _data;                      // start of the data section inside the view
    readonly Dictionary<string, SafeTensorInfo> _byName;
    bool _disposed;

    public string Path { get; }
    /// <summary>The tensors in header order.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Bytes in the header JSON (N of the length prefix).</summary>
    public long HeaderLength { get; }
    /// <summary>Bytes in the data section (the file after the header).</summary>
    public long DataLength { get; }

    SafeTensorsFile(string path, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* data,
        List<SafeTensorInfo> tensors, Dictionary<string, string> metadata, long headerLength, long dataLength)
    {
        Path = path;
        _map = map;
        _view = view;
        _data = data;
        Tensors = tensors.AsReadOnly();
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        Metadata = metadata.AsReadOnly();
        HeaderLength = headerLength;
        DataLength = dataLength;
    }

    public static SafeTensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.RandomAccess);
        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        bool pointerAcquired = false;
        try
        {
            long fileLength = stream.Length;
            Span<byte> prefix = stackalloc byte[8];
            if (fileLength >= 8) stream.ReadExactly(prefix);
            long headerLength = SafeTensorsFormat.ReadHeaderLength(path, prefix, fileLength);
            var header = new byte[headerLength];
            stream.ReadExactly(header);
            long dataLength = fileLength - 8 - headerLength;
            var (tensors, metadata) = SafeTensorsFormat.ParseHeader(path, header, dataLength);

            map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read,
                HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            if (view.Capacity < fileLength)
                throw SafeTensorsFormat.Error(path, null, $"the file shrank while being opened ({view.Capacity} of {fileLength} bytes mapped)");
            byte* basePointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
            pointerAcquired = true;
            byte* data = basePointer + view.PointerOffset + 8 + headerLength;
            return new SafeTensorsFile(path, map, view, data, tensors, metadata, headerLength, dataLength);
        }
        catch
        {
            if (pointerAcquired) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map?.Dispose();
            stream.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    public SafeTensorInfo Info(string name) =>
        _byName.TryGetValue(name, out SafeTensorInfo? info)
            ? info
            : throw new KeyNotFoundException($"{Path}: no tensor named '{SafeTensorsFormatException.OneLine(name)}'");

    /// <summary>A new CPU tensor with the stored dtype and shape (its own memory, independent of the map).</summary>
    public Tensor Load(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        SafeTensorInfo info = Info(name);
        byte* source = _data + info.Begin;
        if (info.DType == SafeTensorsDType.BOOL) CheckBools(info, source);
        Tensor tensor = empty(info.Shape, SafeTensorsFormat.ToScalarType(info.DType), device: CPU);
        try
        {
            SafeTensorsFormat.CopyInto(tensor, source, info.ByteLength);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>A bool byte other than 0 or 1 is undefined behaviour for torch: reject it.</summary>
    void CheckBools(SafeTensorInfo info, byte* source)
    {
        long remaining = info.ByteLength;
        long offset = 0;
        while (remaining > 0)
        {
            int n = (int)Math.Min(remaining, int.MaxValue);
            int bad = new ReadOnlySpan<byte>(source + offset, n).IndexOfAnyExcept((byte)0, (byte)1);
            if (bad >= 0)
                throw SafeTensorsFormat.Error(Path, info.Name, $"BOOL element {offset + bad} is byte {source[offset + bad]}, not 0 or 1");
            offset += n;
            remaining -= n;
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }
}
