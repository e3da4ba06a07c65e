using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using SparseTune.IO;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace SparseTune.Tests.IO;

public sealed class SafeTensorsTests : IDisposable
{
    readonly string _dir = Path.Combine(Path.GetTempPath(), "sparsetune-safetensors-" + Guid.NewGuid().ToString("N"));

    public SafeTensorsTests() => Directory.CreateDirectory(_dir);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    string PathOf(string name) => Path.Combine(_dir, name);

    // ------------------------------------------------------------------ helpers

    static byte[] Bytes<T>(params T[] values) where T : unmanaged => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    /// <summary>A CPU tensor holding exactly these raw bytes.</summary>
    static Tensor FromBytes(byte[] raw, long[] shape, ScalarType dtype)
    {
        Tensor t = empty(shape, dtype, device: CPU);
        if (raw.Length > 0) t.bytes = raw;
        return t;
    }

    static byte[] RawOf(Tensor t) => t.numel() == 0 ? [] : t.bytes.ToArray();

    /// <summary>8-byte little-endian length, the header exactly as given (no padding), then the data.</summary>
    static byte[] BuildFile(string headerJson, byte[] data)
    {
        byte[] header = Encoding.UTF8.GetBytes(headerJson);
        var file = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)header.Length);
        header.CopyTo(file, 8);
        data.CopyTo(file, 8 + header.Length);
        return file;
    }

    static void AssertOneLine(string message)
    {
        Assert.DoesNotContain('\n', message);
        Assert.DoesNotContain('\r', message);
    }

    static SafeTensorsFormatException AssertFormatError(string path, string? tensor, Action action)
    {
        var e = Assert.ThrowsAny<SafeTensorsFormatException>(action);
        Assert.Contains(Path.GetFileName(path), e.Message);
        Assert.Equal(path, e.FilePath);
        AssertOneLine(e.Message);
        if (tensor is not null)
        {
            Assert.Contains(tensor, e.Message);
            Assert.Equal(tensor, e.TensorName);
        }
        return e;
    }

    static void LoadEverything(string path)
    {
        using var file = SafeTensorsFile.Open(path);
        foreach (SafeTensorInfo info in file.Tensors)
        {
            using Tensor t = file.Load(info.Name);
            Assert.Equal(info.Shape, t.shape);
        }
    }

    static readonly (string Name, ScalarType Type, long[] Shape, byte[] Raw)[] EveryDType =
    [
        ("f32", ScalarType.Float32, [2, 3], Bytes(1.5f, -0.0f, float.PositiveInfinity, float.Epsilon, -3.4028235e38f,
            BitConverter.Int32BitsToSingle(0x7FC0_1234))),
        ("f16", ScalarType.Float16, [5], Bytes<ushort>(0x3C00, 0x8000, 0x7BFF, 0x0001, 0xFC00)),       // 1, -0, max, min subnormal, -inf
        ("bf16", ScalarType.BFloat16, [2, 2], Bytes<ushort>(0x3F80, 0xC049, 0x7F7F, 0x0001)),         // 1, -3.140625, max, subnormal
        ("f64", ScalarType.Float64, [3], Bytes(Math.PI, -0.0, double.Epsilon)),
        ("i64", ScalarType.Int64, [4], Bytes(long.MinValue, long.MaxValue, 0L, -1L)),
        ("i32", ScalarType.Int32, [2, 1, 2], Bytes(int.MinValue, int.MaxValue, 7, -7)),
        ("i16", ScalarType.Int16, [3], Bytes<short>(short.MinValue, short.MaxValue, -2)),
        ("i8", ScalarType.Int8, [4], Bytes<sbyte>(sbyte.MinValue, sbyte.MaxValue, 0, -1)),
        ("u8", ScalarType.Byte, [3], Bytes<byte>(0, 128, 255)),
        ("bool", ScalarType.Bool, [2, 2], Bytes<byte>(1, 0, 0, 1)),
    ];

    // ------------------------------------------------------------------ round trips

    [Fact]
    public void SafeTensors_RoundTripsEveryDTypeBitExactly()
    {
        string path = PathOf("all.safetensors");
        var tensors = EveryDType.Select(d => new KeyValuePair<string, Tensor>(d.Name, FromBytes(d.Raw, d.Shape, d.Type))).ToList();
        try
        {
            SafeTensors.Save(path, tensors);
            var loaded = SafeTensors.Load(path);
            try
            {
                Assert.Equal(EveryDType.Select(d => d.Name), loaded.Keys);
                foreach (var d in EveryDType)
                {
                    Tensor t = loaded[d.Name];
                    Assert.Equal(d.Type, t.dtype);
                    Assert.Equal(d.Shape, t.shape);
                    Assert.Equal(DeviceType.CPU, t.device_type);
                    Assert.Equal(d.Raw, RawOf(t));
                }
                Assert.Equal([true, false, false, true], loaded["bool"].data<bool>().ToArray());
                Assert.Equal(1.0f, loaded["bf16"][0, 0].ToSingle());
                Assert.Equal(-3.140625f, loaded["bf16"][0, 1].ToSingle());
            }
            finally { foreach (Tensor t in loaded.Values) t.Dispose(); }

            using var file = SafeTensorsFile.Open(path);
            Assert.Equal(
                [SafeTensorsDType.F32, SafeTensorsDType.F16, SafeTensorsDType.BF16, SafeTensorsDType.F64, SafeTensorsDType.I64,
                 SafeTensorsDType.I32, SafeTensorsDType.I16, SafeTensorsDType.I8, SafeTensorsDType.U8, SafeTensorsDType.BOOL],
                file.Tensors.Select(t => t.DType));
            // Written back to back, without gaps, exactly filling the data section.
            long expectedBegin = 0;
            foreach (SafeTensorInfo info in file.Tensors)
            {
                Assert.Equal(expectedBegin, info.Begin);
                expectedBegin = info.End;
            }
            Assert.Equal(file.DataLength, expectedBegin);
            Assert.Equal(0, file.HeaderLength % 8);
        }
        finally { foreach (var (_, t) in tensors) t.Dispose(); }
    }

    [Fact]
    public void SafeTensors_MetadataRoundTrips()
    {
        string path = PathOf("meta.safetensors");
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["note"] = "h\u00e9llo \"quoted\" \\ back\nslash \u2603",
            ["empty"] = "",
        };
        using Tensor t = ones(2);
        SafeTensors.Save(path, [new("t", t)], metadata);
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(metadata.OrderBy(p => p.Key), file.Metadata.OrderBy(p => p.Key));

        // No metadata: none written, none read.
        string bare = PathOf("bare.safetensors");
        SafeTensors.Save(bare, [new("t", t)]);
        using var bareFile = SafeTensorsFile.Open(bare);
        Assert.Empty(bareFile.Metadata);
    }

    [Fact]
    public void SafeTensors_ScalarAndZeroSizeTensorsRoundTrip()
    {
        string path = PathOf("edge.safetensors");
        using Tensor scalar = tensor(2.5f);
        using Tensor empty1 = zeros(0, 4);
        using Tensor empty2 = zeros(new long[] { 3, 0 }, dtype: ScalarType.Int64);
        using Tensor emptyBool = zeros(new long[] { 0 }, dtype: ScalarType.Bool);
        using Tensor after = tensor(new[] { 7, 8 });
        SafeTensors.Save(path, [new("scalar", scalar), new("empty1", empty1), new("empty2", empty2), new("emptyBool", emptyBool), new("after", after)]);

        using (var file = SafeTensorsFile.Open(path))
        {
            Assert.Empty(file.Info("scalar").Shape);
            Assert.Equal(4, file.Info("scalar").ByteLength);
            Assert.Equal(file.Info("empty1").Begin, file.Info("empty1").End);
            Assert.Equal(file.Info("empty2").Begin, file.Info("empty2").End);
        }

        var loaded = SafeTensors.Load(path);
        try
        {
            Assert.Empty(loaded["scalar"].shape);
            Assert.Equal(2.5f, loaded["scalar"].ToSingle());
            Assert.Equal([0L, 4L], loaded["empty1"].shape);
            Assert.Equal([3L, 0L], loaded["empty2"].shape);
            Assert.Equal(ScalarType.Int64, loaded["empty2"].dtype);
            Assert.Equal([0L], loaded["emptyBool"].shape);
            Assert.Equal([7, 8], loaded["after"].data<int>().ToArray());
        }
        finally { foreach (Tensor t in loaded.Values) t.Dispose(); }

        // A file with no tensors at all.
        string none = PathOf("none.safetensors");
        SafeTensors.Save(none, []);
        Assert.Empty(SafeTensors.Load(none));
    }

    [Fact]
    public void SafeTensors_NonContiguousAndGradTensorsAreWrittenAsTheirValues()
    {
        string path = PathOf("views.safetensors");
        using Tensor baseTensor = arange(12, dtype: ScalarType.Float32).reshape(3, 4);
        using Tensor transposed = baseTensor.t();
        using Tensor strided = baseTensor[TensorIndex.Colon, TensorIndex.Slice(0, 4, 2)];
        using Tensor parameter = ones(new long[] { 2 }, requires_grad: true);
        Assert.False(transposed.is_contiguous());
        SafeTensors.Save(path, [new("t", transposed), new("s", strided), new("p", parameter)]);
        var loaded = SafeTensors.Load(path);
        try
        {
            Assert.Equal([4L, 3L], loaded["t"].shape);
            using Tensor transposedCopy = transposed.contiguous();
            using Tensor stridedCopy = strided.contiguous();
            Assert.Equal(transposedCopy.data<float>().ToArray(), loaded["t"].data<float>().ToArray());
            Assert.Equal([0f, 2f, 4f, 6f, 8f, 10f], loaded["s"].data<float>().ToArray());
            Assert.Equal(stridedCopy.data<float>().ToArray(), loaded["s"].data<float>().ToArray());
            Assert.False(loaded["p"].requires_grad);
        }
        finally { foreach (Tensor t in loaded.Values) t.Dispose(); }
    }

    [Fact]
    public void SafeTensors_ChunkedCopiesForHugeTensorsAreExact()
    {
        // Tensors over 1 GiB are copied in chunks (a span's length is an int); exercise that path with tiny chunks.
        using Tensor source = arange(1000, dtype: ScalarType.Float64).reshape(25, 40).t();   // non-contiguous
        using Tensor expected = source.contiguous();
        byte[] raw = RawOf(expected);
        var info = new SafeTensorInfo("x", SafeTensorsDType.F64, [40, 25], 0, raw.Length);
        foreach (long chunk in new long[] { 1, 7, 64, 8000, SafeTensorsFormat.ChunkBytes })
        {
            using var stream = new MemoryStream();
            SafeTensorsFormat.WriteTensorBytes(stream, source, info, chunk);
            Assert.Equal(raw, stream.ToArray());
            using Tensor target = empty([40, 25], ScalarType.Float64, device: CPU);
            SafeTensorsFormat.CopyInto(target, raw, chunk);
            Assert.Equal(raw, RawOf(target));
        }
    }

    [Fact]
    public void SafeTensors_OutputIsDeterministicAndInInsertionOrder()
    {
        using Tensor a = arange(5, dtype: ScalarType.Float32);
        using Tensor b = ones(new long[] { 2, 2 }, dtype: ScalarType.Int16);
        var metaA = new Dictionary<string, string> { ["z"] = "1", ["a"] = "2" };
        var metaB = new Dictionary<string, string> { ["a"] = "2", ["z"] = "1" };
        SafeTensors.Save(PathOf("1.safetensors"), [new("zeta", a), new("alpha", b)], metaA);
        SafeTensors.Save(PathOf("2.safetensors"), [new("zeta", a), new("alpha", b)], metaB);
        Assert.Equal(File.ReadAllBytes(PathOf("1.safetensors")), File.ReadAllBytes(PathOf("2.safetensors")));
        using var file = SafeTensorsFile.Open(PathOf("1.safetensors"));
        Assert.Equal(["zeta", "alpha"], file.Tensors.Select(t => t.Name));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp-*"));
    }

    [Fact]
    public void SafeTensors_SaveRejectsBadInputWithoutWritingAFile()
    {
        using Tensor a = ones(2);
        using Tensor c = ones(new long[] { 2 }, dtype: ScalarType.ComplexFloat32);
        Assert.Throws<ArgumentException>(() => SafeTensors.Save(PathOf("dup.safetensors"), [new("x", a), new("x", a)]));
        Assert.Throws<ArgumentException>(() => SafeTensors.Save(PathOf("meta.safetensors"), [new("__metadata__", a)]));
        Assert.Throws<ArgumentException>(() => SafeTensors.Save(PathOf("complex.safetensors"), [new("c", c)]));
        Assert.Empty(Directory.GetFiles(_dir));
    }

    // ------------------------------------------------------------------ compatibility with the real format

    [Fact]
    public void SafeTensors_ReadsAHandBuiltFile()
    {
        // Header not padded, keys not in offset order, a non-ASCII and an escaped name, metadata after the tensors.
        string header =
            "{\"b\":{\"dtype\":\"I16\",\"shape\":[1,2],\"data_offsets\":[8,12]}," +
            "\"\u00e4\\u00df\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[12,14]}," +
            "\"a\":{\"shape\":[2],\"dtype\":\"F32\",\"data_offsets\":[0,8]}," +
            "\"__metadata__\":{\"format\":\"pt\"}}";
        byte[] data = [.. Bytes(1.0f, -2.5f), .. Bytes<short>(-3, 300), .. Bytes<ushort>(0x4049)];
        string path = PathOf("hand.safetensors");
        File.WriteAllBytes(path, BuildFile(header, data));

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(["b", "\u00e4\u00df", "a"], file.Tensors.Select(t => t.Name));
        Assert.Equal("pt", file.Metadata["format"]);
        SafeTensorInfo infoA = file.Info("a");
        Assert.Equal(("a", SafeTensorsDType.F32, 0L, 8L), (infoA.Name, infoA.DType, infoA.Begin, infoA.End));
        Assert.Equal([2L], infoA.Shape);
        Assert.Equal((8L, 12L), (file.Info("b").Begin, file.Info("b").End));
        using Tensor a = file.Load("a");
        using Tensor b = file.Load("b");
        using Tensor c = file.Load("\u00e4\u00df");
        Assert.Equal([1.0f, -2.5f], a.data<float>().ToArray());
        Assert.Equal([1L, 2L], b.shape);
        Assert.Equal([(short)-3, (short)300], b.data<short>().ToArray());
        Assert.Equal(ScalarType.BFloat16, c.dtype);
        Assert.Empty(c.shape);
        Assert.Equal(3.140625f, c.ToSingle());
        Assert.False(file.Contains("missing"));
        Assert.Throws<KeyNotFoundException>(() => file.Info("missing"));
    }

    [Fact]
    public void SafeTensors_WritesExactlyTheReferenceBytes()
    {
        using Tensor x = tensor(new float[] { 1, 2 });
        string path = PathOf("ref.safetensors");
        SafeTensors.Save(path, [new("x", x)], new Dictionary<string, string> { ["format"] = "pt" });
        string json = "{\"__metadata__\":{\"format\":\"pt\"},\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
        json = json.PadRight((json.Length + 7) / 8 * 8, ' ');
        Assert.Equal(BuildFile(json, Bytes(1.0f, 2.0f)), File.ReadAllBytes(path));
    }

    [Fact]
    public void SafeTensors_ReadsTheHuggingFaceGpt2TinyFixture()
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "TestData", "hf-parity", "gpt2-tiny");
        string path = Path.Combine(dir, "model.safetensors");
        if (!File.Exists(path)) return;   // fixtures not copied in yet

        // An independent minimal parse of the header, to check our reader against the raw bytes.
        byte[] raw = File.ReadAllBytes(path);
        long n = (long)BinaryPrimitives.ReadUInt64LittleEndian(raw);
        using var doc = JsonDocument.Parse(raw.AsMemory(8, (int)n));
        int tensorCount = doc.RootElement.EnumerateObject().Count(p => p.Name != "__metadata__");

        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(tensorCount, file.Tensors.Count);
        string wte = file.Contains("transformer.wte.weight") ? "transformer.wte.weight" : "wte.weight";
        SafeTensorInfo info = file.Info(wte);
        Assert.Equal([211L, 48L], info.Shape);
        Assert.Equal(SafeTensorsDType.F32, info.DType);
        using Tensor weight = file.Load(wte);
        Assert.Equal([211L, 48L], weight.shape);
        Assert.Equal(raw.AsSpan((int)(8 + n + info.Begin), (int)info.ByteLength).ToArray(), RawOf(weight));
        foreach (SafeTensorInfo t in file.Tensors)
        {
            using Tensor loaded = file.Load(t.Name);
            Assert.Equal(raw.AsSpan((int)(8 + n + t.Begin), (int)t.ByteLength).ToArray(), RawOf(loaded));
        }

        using var checkpoint = SafeTensorsCheckpoint.Open(dir);
        Assert.Contains(wte, checkpoint.Names);
        Assert.Equal([211L, 48L], checkpoint.Info(wte).Shape);
    }

    // ------------------------------------------------------------------ corruption

    const string ValidEntry = "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";

    public static TheoryData<string, string, string?> CorruptHeaders => new()
    {
        { "not-json", "{\"t\": {\"dtype\": ", null },
        { "trailing-garbage", "{} x", null },
        { "array", "[1,2]", null },
        { "string", "\"hello\"", null },
        { "empty-header", "", null },
        { "entry-not-object", "{\"t\":5}", "t" },
        { "missing-dtype", "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", "t" },
        { "missing-shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", "t" },
        { "missing-offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", "t" },
        { "dtype-not-string", "{\"t\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", "t" },
        { "shape-not-array", "{\"t\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", "t" },
        { "shape-fraction", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", "t" },
        { "shape-string", "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", "t" },
        { "shape-huge-number", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1e400],\"data_offsets\":[0,8]}}", "t" },
        { "offsets-one", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", "t" },
        { "offsets-three", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,9]}}", "t" },
        { "offsets-strings", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}", "t" },
        { "offsets-negative", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", "t" },
        { "unknown-dtype", "{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[8],\"data_offsets\":[0,8]}}", "t" },
        { "lowercase-dtype", "{\"t\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "t" },
        { "negative-dim", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "t" },
        { "end-past-data", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", "t" },
        { "begin-after-end", "{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", "t" },
        { "byte-count", "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", "t" },
        { "numel-overflow", "{\"t\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", "t" },
        { "overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}", "b" },
        { "duplicate-name", "{\"t\":" + ValidEntry + ",\"t\":" + ValidEntry + "}", "t" },
        { "metadata-not-object", "{\"__metadata__\":[1],\"t\":" + ValidEntry + "}", null },
        { "metadata-value-not-string", "{\"__metadata__\":{\"k\":1},\"t\":" + ValidEntry + "}", null },
        { "lone-surrogate-name", "{\"\\ud800\":" + ValidEntry + "}", null },
        { "newline-in-name", "{\"bad\\nname\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", null },
    };

    [Theory]
    [MemberData(nameof(CorruptHeaders))]
    public void SafeTensors_CorruptHeaderIsAOneLineFormatError(string label, string header, string? tensor)
    {
        string path = PathOf($"corrupt-{label}.safetensors");
        File.WriteAllBytes(path, BuildFile(header, Bytes(1.0f, 2.0f, 3.0f)[..8]));
        AssertFormatError(path, tensor, () => SafeTensorsFile.Open(path).Dispose());
        AssertFormatError(path, tensor, () => SafeTensors.Load(path));
    }

    [Fact]
    public void SafeTensors_OverlapNamesBothTensors()
    {
        string path = PathOf("overlap.safetensors");
        File.WriteAllBytes(path, BuildFile(
            "{\"first\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]},\"second\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
            new byte[8]));
        var e = AssertFormatError(path, "second", () => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains("first", e.Message);
        Assert.Contains("overlap", e.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    public void SafeTensors_FileShorterThanTheLengthPrefixIsTruncated(int length)
    {
        string path = PathOf($"short-{length}.safetensors");
        File.WriteAllBytes(path, new byte[length]);
        var e = AssertFormatError(path, null, () => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains("truncated", e.Message);
    }

    [Theory]
    [InlineData(1000UL, "past the end")]
    [InlineData(63UL, "past the end")]
    [InlineData(100_000_001UL, "limit")]
    [InlineData(1UL << 40, "limit")]
    [InlineData(ulong.MaxValue, "limit")]
    public void SafeTensors_BadHeaderLengthIsRejectedWithoutAllocatingIt(ulong length, string expected)
    {
        string path = PathOf($"length-{length}.safetensors");
        byte[] file = BuildFile("{\"t\":" + ValidEntry + "}", new byte[8]);   // a 54-byte header + 8 bytes of data: 62 bytes after the prefix
        BinaryPrimitives.WriteUInt64LittleEndian(file, length);
        File.WriteAllBytes(path, file);
        var e = AssertFormatError(path, null, () => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void SafeTensors_BoolByteOtherThanZeroOrOneIsAFormatError()
    {
        string path = PathOf("bool.safetensors");
        File.WriteAllBytes(path, BuildFile("{\"flags\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[0,3]}}", [1, 0, 2]));
        using var file = SafeTensorsFile.Open(path);
        AssertFormatError(path, "flags", () => file.Load("flags").Dispose());
    }

    [Fact]
    public void SafeTensors_UseAfterDisposeThrowsObjectDisposed()
    {
        string path = PathOf("disposed.safetensors");
        using Tensor t = ones(3);
        SafeTensors.Save(path, [new("t", t)]);
        var file = SafeTensorsFile.Open(path);
        file.Dispose();
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.Load("t"));
    }

    // ------------------------------------------------------------------ checkpoints

    static List<KeyValuePair<string, Tensor>> CheckpointTensors() =>
    [
        new("embed.weight", arange(24, dtype: ScalarType.Float32).reshape(4, 6)),   // 96 bytes
        new("layer.0.weight", full(new long[] { 3, 4 }, 2.0f)),                     // 48 bytes
        new("layer.0.bias", arange(4, dtype: ScalarType.Int64)),                     // 32 bytes
        new("layer.1.weight", full(new long[] { 5, 5 }, -1.0f)),                    // 100 bytes
        new("norm.flag", ones(new long[] { 3 }, dtype: ScalarType.Bool)),            // 3 bytes
        new("big", zeros(new long[] { 50 }, dtype: ScalarType.Float32)),             // 200 bytes: over the shard limit, alone
    ];

    static void AssertCheckpointMatches(string dir, List<KeyValuePair<string, Tensor>> expected)
    {
        using var checkpoint = SafeTensorsCheckpoint.Open(dir);
        Assert.Equal(expected.Select(p => p.Key).Order(StringComparer.Ordinal), checkpoint.Names.Order(StringComparer.Ordinal));
        foreach (var (name, t) in expected)
        {
            Assert.Equal(t.shape, checkpoint.Info(name).Shape);
            using Tensor loaded = checkpoint.Load(name);
            Assert.Equal(t.dtype, loaded.dtype);
            Assert.Equal(RawOf(t), RawOf(loaded));
        }
    }

    [Fact]
    public void SafeTensorsCheckpoint_SingleFileRoundTrip()
    {
        var tensors = CheckpointTensors();
        try
        {
            SafeTensorsCheckpoint.Save(_dir, tensors);
            Assert.Equal(["model.safetensors"], Directory.GetFiles(_dir).Select(Path.GetFileName));
            using (var file = SafeTensorsFile.Open(PathOf("model.safetensors")))
                Assert.Equal("pt", file.Metadata["format"]);
            AssertCheckpointMatches(_dir, tensors);
        }
        finally { foreach (var (_, t) in tensors) t.Dispose(); }
    }

    [Fact]
    public void SafeTensorsCheckpoint_ShardedRoundTripWritesAHuggingFaceIndex()
    {
        var tensors = CheckpointTensors();
        try
        {
            SafeTensorsCheckpoint.Save(_dir, tensors, maxShardBytes: 150);
            // 96+48 | 32+100+3 | 200
            string[] shards = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"];
            Assert.Equal([.. shards, "model.safetensors.index.json"], Directory.GetFiles(_dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));

            using (var index = JsonDocument.Parse(File.ReadAllText(PathOf("model.safetensors.index.json"))))
            {
                Assert.Equal(96 + 48 + 32 + 100 + 3 + 200, index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64());
                var map = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString());
                Assert.Equal(shards[0], map["embed.weight"]);
                Assert.Equal(shards[0], map["layer.0.weight"]);
                Assert.Equal(shards[1], map["layer.0.bias"]);
                Assert.Equal(shards[1], map["layer.1.weight"]);
                Assert.Equal(shards[1], map["norm.flag"]);
                Assert.Equal(shards[2], map["big"]);
                Assert.Equal(map.Keys.Order(StringComparer.Ordinal), map.Keys);   // sorted, as transformers writes it
            }
            AssertCheckpointMatches(_dir, tensors);

            // Saving again unsharded replaces the layout: the stale index and shards go.
            SafeTensorsCheckpoint.Save(_dir, tensors);
            Assert.Equal(["model.safetensors"], Directory.GetFiles(_dir).Select(Path.GetFileName));
            AssertCheckpointMatches(_dir, tensors);
        }
        finally { foreach (var (_, t) in tensors) t.Dispose(); }
    }

    [Fact]
    public void SafeTensorsCheckpoint_MissingShardIsNamed()
    {
        var tensors = CheckpointTensors();
        try
        {
            SafeTensorsCheckpoint.Save(_dir, tensors, maxShardBytes: 150);
            File.Delete(PathOf("model-00002-of-00003.safetensors"));
            var e = Assert.Throws<FileNotFoundException>(() => SafeTensorsCheckpoint.Open(_dir).Dispose());
            Assert.Contains("model-00002-of-00003.safetensors", e.Message);
            AssertOneLine(e.Message);
        }
        finally { foreach (var (_, t) in tensors) t.Dispose(); }
    }

    [Fact]
    public void SafeTensorsCheckpoint_TensorAbsentFromItsShardIsNamed()
    {
        var tensors = CheckpointTensors();
        try
        {
            SafeTensorsCheckpoint.Save(_dir, tensors, maxShardBytes: 150);
            string indexPath = PathOf("model.safetensors.index.json");
            string text = File.ReadAllText(indexPath).Replace("\"weight_map\": {", "\"weight_map\": {\n    \"ghost.weight\": \"model-00001-of-00003.safetensors\",");
            File.WriteAllText(indexPath, text);
            var e = Assert.ThrowsAny<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(_dir).Dispose());
            Assert.Contains("ghost.weight", e.Message);
            Assert.Contains("model-00001-of-00003.safetensors", e.Message);
            AssertOneLine(e.Message);
        }
        finally { foreach (var (_, t) in tensors) t.Dispose(); }
    }

    [Theory]
    [InlineData("{not json")]
    [InlineData("[]")]
    [InlineData("{\"metadata\":{}}")]
    [InlineData("{\"weight_map\":[]}")]
    [InlineData("{\"weight_map\":{\"a\":3}}")]
    [InlineData("{\"weight_map\":{\"a\":\"../model.safetensors\"}}")]
    public void SafeTensorsCheckpoint_BadIndexIsAFormatError(string index)
    {
        File.WriteAllText(PathOf("model.safetensors.index.json"), index);
        var e = Assert.ThrowsAny<SafeTensorsFormatException>(() => SafeTensorsCheckpoint.Open(_dir).Dispose());
        Assert.Contains("model.safetensors.index.json", e.Message);
        AssertOneLine(e.Message);
    }

    [Fact]
    public void SafeTensorsCheckpoint_EmptyFolderIsFileNotFound()
    {
        var e = Assert.Throws<FileNotFoundException>(() => SafeTensorsCheckpoint.Open(_dir).Dispose());
        Assert.Contains(_dir, e.Message);
        Assert.Contains("model.safetensors", e.Message);
        Assert.Contains("model.safetensors.index.json", e.Message);

        string missing = Path.Combine(_dir, "nope");
        var e2 = Assert.Throws<FileNotFoundException>(() => SafeTensorsCheckpoint.Open(missing).Dispose());
        Assert.Contains(missing, e2.Message);
    }

    // ------------------------------------------------------------------ fuzz

    [Fact]
    public void SafeTensors_FuzzedFilesLoadOrThrowFormatErrorsOnly()
    {
        string basePath = PathOf("base.safetensors");
        using (Tensor f = arange(12, dtype: ScalarType.Float32).reshape(3, 4))
        using (Tensor i = tensor(new long[] { -1, 5 }))
        using (Tensor b = tensor(new[] { true, false, true }))
        using (Tensor h = ones(new long[] { 2, 2 }, dtype: ScalarType.BFloat16))
        using (Tensor s = tensor(1.25))
        using (Tensor z = zeros(new long[] { 0, 3 }, dtype: ScalarType.Int8))
            SafeTensors.Save(basePath, [new("f", f), new("i", i), new("b", b), new("h", h), new("s", s), new("z", z)],
                new Dictionary<string, string> { ["format"] = "pt" });
        byte[] original = File.ReadAllBytes(basePath);
        int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(original);
        LoadEverything(basePath);

        const string JsonChars = "{}[]\",:0123456789-.eE \\u";
        var rng = new Random(20240611);
        string path = PathOf("fuzz.safetensors");
        var clock = Stopwatch.StartNew();
        int loaded = 0, rejected = 0;
        for (int iteration = 0; iteration < 600; iteration++)
        {
            byte[] bytes = (byte[])original.Clone();
            int kind = rng.Next(7);
            switch (kind)
            {
                case 0:   // bit flips anywhere
                    for (int k = rng.Next(1, 4); k > 0; k--) bytes[rng.Next(bytes.Length)] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1:   // random bytes over the header
                    for (int k = rng.Next(1, 5); k > 0; k--) bytes[rng.Next(8, headerEnd)] = (byte)rng.Next(256);
                    break;
                case 2:   // JSON-significant characters over the header
                    for (int k = rng.Next(1, 4); k > 0; k--) bytes[rng.Next(8, headerEnd)] = (byte)JsonChars[rng.Next(JsonChars.Length)];
                    break;
                case 3:   // truncation
                    Array.Resize(ref bytes, rng.Next(bytes.Length));
                    break;
                case 4:   // length prefix changes
                {
                    ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
                    ulong changed = rng.Next(5) switch
                    {
                        0 => n + (ulong)rng.Next(1, 64),
                        1 => n - (ulong)rng.Next(1, 64),
                        2 => (ulong)rng.NextInt64(),
                        3 => 1UL << rng.Next(64),
                        _ => (ulong)rng.Next(0, 16),
                    };
                    BinaryPrimitives.WriteUInt64LittleEndian(bytes, changed);
                    break;
                }
                case 5:   // digits in the header replaced (shapes and offsets)
                {
                    int[] digits = Enumerable.Range(8, headerEnd - 8).Where(p => bytes[p] is >= (byte)'0' and <= (byte)'9').ToArray();
                    for (int k = rng.Next(1, 3); k > 0; k--) bytes[digits[rng.Next(digits.Length)]] = (byte)('0' + rng.Next(10));
                    break;
                }
                default:  // bytes appended or removed from the data section
                    bytes = rng.Next(2) == 0
                        ? [.. bytes, .. Enumerable.Range(0, rng.Next(1, 9)).Select(_ => (byte)rng.Next(256))]
                        : bytes[..Math.Max(headerEnd, bytes.Length - rng.Next(1, 9))];
                    break;
            }
            File.WriteAllBytes(path, bytes);
            try
            {
                LoadEverything(path);
                loaded++;
            }
            catch (SafeTensorsFormatException e)
            {
                AssertOneLine(e.Message);
                rejected++;
            }
            catch (Exception e)
            {
                Assert.Fail($"iteration {iteration} (mutation {kind}) threw {e.GetType().Name}: {e.Message}");
            }
        }
        Assert.True(loaded > 0 && rejected > 0, $"loaded {loaded}, rejected {rejected}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(8), $"fuzzing took {clock.Elapsed}");
    }
}
