using SparseTune.Build;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace SparseTune.Tests.Foundation;

public class TorchLoadTests
{
    [Fact]
    public void TorchInitialisesAndComputesMatmulWithAutograd()
    {
        // d/dA sum(A·B) = 1·Bᵀ: for A (2×3), B (3×2) with known values.
        using var a = tensor(new float[] { 1, 2, 3, 4, 5, 6 }, [2, 3], requires_grad: true);
        using var b = tensor(new float[] { 1, 0, 0, 1, 2, 3 }, [3, 2]);
        using var product = a.matmul(b);
        Assert.Equal(new float[] { 7, 11, 16, 23 }, product.data<float>().ToArray());
        using var sum = product.sum();
        sum.backward();
        using var grad = a.grad!;
        Assert.Equal(new float[] { 1, 1, 5, 1, 1, 5 }, grad.data<float>().ToArray());
    }

    [Fact]
    public void BuildOutputLibraryAlreadyCarriesTheWeakFlag()
    {
        string library = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        if (!OperatingSystem.IsLinux()) return;
        Assert.True(File.Exists(library), $"missing {library}");
        byte[] image = File.ReadAllBytes(library);
        var result = ElfWeakVersionPatcher.MarkWeak(image, new HashSet<string> { "GLIBCXX_3.4.32" }, library);
        Assert.Equal(["GLIBCXX_3.4.32"], result.Found);
        Assert.Empty(result.NewlyMarked); // the build patched it already
    }
}

public class ElfWeakVersionPatcherTests
{
    /// <summary>
    /// A minimal ELF64 image: section 0 null, 1 .dynstr, 2 .gnu.version_r with one Verneed (libstdc++.so.6)
    /// and two Vernaux entries (GLIBCXX_3.4.30 flags 0, GLIBCXX_3.4.32 flags 0).
    /// </summary>
    static byte[] SyntheticElf(out int auxFlags30, out int auxFlags32)
    {
        var strings = "\0libstdc++.so.6\0GLIBCXX_3.4.30\0GLIBCXX_3.4.32\0"u8.ToArray();
        int libName = 1, name30 = 16, name32 = 31;
        byte[] image = new byte[0x400];
        void U16(int o, int v) { image[o] = (byte)v; image[o + 1] = (byte)(v >> 8); }
        void U32(int o, long v) { for (int i = 0; i < 4; i++) image[o + i] = (byte)(v >> (8 * i)); }
        void U64(int o, long v) { for (int i = 0; i < 8; i++) image[o + i] = (byte)(v >> (8 * i)); }
        image[0] = 0x7f; image[1] = (byte)'E'; image[2] = (byte)'L'; image[3] = (byte)'F'; image[4] = 2; image[5] = 1;
        const int shoff = 0x200, dynstr = 0x100, verneed = 0x140;
        U64(0x28, shoff); U16(0x3A, 64); U16(0x3C, 3);
        Array.Copy(strings, 0, image, dynstr, strings.Length);
        // Section 1: .dynstr
        U32(shoff + 64 + 4, 3); U64(shoff + 64 + 0x18, dynstr); U64(shoff + 64 + 0x20, strings.Length);
        // Section 2: .gnu.version_r, sh_link = 1, sh_info = 1 entry
        U32(shoff + 128 + 4, 0x6ffffffe); U64(shoff + 128 + 0x18, verneed); U64(shoff + 128 + 0x20, 48);
        U32(shoff + 128 + 0x28, 1); U32(shoff + 128 + 0x2C, 1);
        // Verneed: version 1, 2 aux, file name, aux at +16, next 0
        U16(verneed, 1); U16(verneed + 2, 2); U32(verneed + 4, libName); U32(verneed + 8, 16); U32(verneed + 12, 0);
        // Vernaux 1 (3.4.30) at +16, next +16; Vernaux 2 (3.4.32) at +32, next 0
        U32(verneed + 16 + 8, name30); U32(verneed + 16 + 12, 16);
        U32(verneed + 32 + 8, name32); U32(verneed + 32 + 12, 0);
        auxFlags30 = verneed + 16 + 4;
        auxFlags32 = verneed + 32 + 4;
        return image;
    }

    [Fact]
    public void MarksOnlyTheNamedVersionWeakAndIsIdempotent()
    {
        byte[] image = SyntheticElf(out int flags30, out int flags32);
        var first = ElfWeakVersionPatcher.MarkWeak(image, new HashSet<string> { "GLIBCXX_3.4.32" }, "synthetic");
        Assert.Equal(["GLIBCXX_3.4.32"], first.NewlyMarked);
        Assert.Equal(2, image[flags32]);       // VER_FLG_WEAK
        Assert.Equal(0, image[flags30]);       // untouched
        byte[] after = (byte[])image.Clone();
        var second = ElfWeakVersionPatcher.MarkWeak(image, new HashSet<string> { "GLIBCXX_3.4.32" }, "synthetic");
        Assert.Empty(second.NewlyMarked);
        Assert.Equal(after, image);
    }

    [Fact]
    public void PatchRewritesTheFileOnceAndLeavesOtherLinksAlone()
    {
        string dir = Directory.CreateTempSubdirectory("elfpatch").FullName;
        try
        {
            byte[] image = SyntheticElf(out _, out int flags32);
            string original = Path.Combine(dir, "lib.so");
            File.WriteAllBytes(original, image);
            // A hard link stands in for the NuGet cache copy: it must keep the unpatched bytes.
            string link = Path.Combine(dir, "cache.so");
            Assert.Equal(0, Link(original, link));
            var result = ElfWeakVersionPatcher.Patch(original, new HashSet<string> { "GLIBCXX_3.4.32" });
            Assert.Equal(["GLIBCXX_3.4.32"], result.NewlyMarked);
            Assert.Equal(2, File.ReadAllBytes(original)[flags32]);
            Assert.Equal(0, File.ReadAllBytes(link)[flags32]);
            Assert.Empty(ElfWeakVersionPatcher.Patch(original, new HashSet<string> { "GLIBCXX_3.4.32" }).NewlyMarked);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void RejectsNonElfAndTruncatedImages()
    {
        Assert.Throws<InvalidDataException>(() => ElfWeakVersionPatcher.MarkWeak(new byte[100], new HashSet<string>(), "zeros"));
        byte[] image = SyntheticElf(out _, out _);
        var truncated = image[..0x210];
        Assert.Throws<InvalidDataException>(() => ElfWeakVersionPatcher.MarkWeak(truncated, new HashSet<string> { "x" }, "truncated"));
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "link", SetLastError = true)]
    static extern int Link(string existing, string created);
}
