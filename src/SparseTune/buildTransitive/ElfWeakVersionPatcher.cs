// Marks chosen symbol-version requirements of an ELF64 shared library as weak (VER_FLG_WEAK).
//
// Why: TorchSharp-cpu 0.107.0 ships libLibTorchSharp.so built against GCC 13, so it requires
// GLIBCXX_3.4.32 — for one symbol only (_ZSt21ios_base_library_initv, GCC 13's iostream-init
// marker) that no relocation binds. Debian 12's libstdc++ stops at GLIBCXX_3.4.30, so the dynamic
// loader refuses the library. A weak version requirement is reported instead of enforced, and the
// library then loads and runs correctly. Where libstdc++ is new enough, the bit changes nothing.
//
// This file is compiled by MSBuild (RoslynCodeTaskFactory, see SparseTune.targets beside it, which the
// SparseTune package ships in buildTransitive/ and this repository imports from Directory.Build.targets) and also by
// the test project, so the same code that patches the build is the code under test.
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
#if !SPARSETUNE_TESTS
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
#endif

namespace SparseTune.Build
{
    public static class ElfWeakVersionPatcher
    {
        const ushort VerFlagWeak = 0x2;
        const uint ShtGnuVerneed = 0x6ffffffe;

        /// <summary>Result of one patch: which version names were found and which were newly marked weak.</summary>
        public sealed class PatchResult
        {
            public List<string> Found { get; } = new List<string>();
            public List<string> NewlyMarked { get; } = new List<string>();
        }

        /// <summary>
        /// Sets VER_FLG_WEAK on every vernaux entry whose name is in <paramref name="versionNames"/>.
        /// The file is rewritten through a temporary file and a rename, so a hard link to a shared copy
        /// (e.g. the NuGet cache) is never modified. Idempotent: an already weak entry is left alone and
        /// the file is not rewritten when nothing changes.
        /// </summary>
        public static PatchResult Patch(string path, ICollection<string> versionNames)
        {
            byte[] bytes = File.ReadAllBytes(path);
            PatchResult result = MarkWeak(bytes, versionNames, path);
            if (result.NewlyMarked.Count > 0)
            {
                string temp = path + ".weakpatch.tmp";
                File.WriteAllBytes(temp, bytes);
                // Delete then move (netstandard2.0 has no File.Move overwrite): replaces the directory entry, never the inode.
                File.Delete(path);
                File.Move(temp, path);
            }
            return result;
        }

        /// <summary>Patches the image in memory; <paramref name="label"/> names it in errors.</summary>
        public static PatchResult MarkWeak(byte[] image, ICollection<string> versionNames, string label)
        {
            var result = new PatchResult();
            if (image.Length < 64 || image[0] != 0x7f || image[1] != (byte)'E' || image[2] != (byte)'L' || image[3] != (byte)'F')
                throw new InvalidDataException($"{label}: not an ELF file");
            if (image[4] != 2 || image[5] != 1)
                throw new InvalidDataException($"{label}: only little-endian ELF64 is supported");

            ulong sectionTableOffset = U64(image, 0x28, label);
            ushort sectionHeaderSize = U16(image, 0x3A, label);
            ushort sectionCount = U16(image, 0x3C, label);
            for (int i = 0; i < sectionCount; i++)
            {
                long header = checked((long)sectionTableOffset + (long)i * sectionHeaderSize);
                if (U32(image, header + 4, label) != ShtGnuVerneed) continue;
                long verneedStart = (long)U64(image, header + 0x18, label);
                long verneedSize = (long)U64(image, header + 0x20, label);
                uint stringSectionIndex = U32(image, header + 0x28, label);
                uint verneedCount = U32(image, header + 0x2C, label);
                long stringHeader = checked((long)sectionTableOffset + (long)stringSectionIndex * sectionHeaderSize);
                long stringStart = (long)U64(image, stringHeader + 0x18, label);

                long verneed = verneedStart;
                for (uint n = 0; n < verneedCount; n++)
                {
                    ushort auxCount = U16(image, verneed + 2, label);
                    long aux = verneed + U32(image, verneed + 8, label);
                    for (int a = 0; a < auxCount; a++)
                    {
                        string name = CString(image, stringStart + U32(image, aux + 8, label), label);
                        if (versionNames.Contains(name))
                        {
                            result.Found.Add(name);
                            ushort flags = U16(image, aux + 4, label);
                            if ((flags & VerFlagWeak) == 0)
                            {
                                flags |= VerFlagWeak;
                                image[aux + 4] = (byte)(flags & 0xff);
                                image[aux + 5] = (byte)(flags >> 8);
                                result.NewlyMarked.Add(name);
                            }
                        }
                        uint nextAux = U32(image, aux + 12, label);
                        if (nextAux == 0) break;
                        aux += nextAux;
                    }
                    uint next = U32(image, verneed + 12, label);
                    if (next == 0) break;
                    verneed += next;
                    if (verneed >= verneedStart + verneedSize)
                        throw new InvalidDataException($"{label}: .gnu.version_r chain leaves its section");
                }
            }
            return result;
        }

        static void Check(byte[] image, long offset, int width, string label)
        {
            if (offset < 0 || offset + width > image.Length)
                throw new InvalidDataException($"{label}: ELF structure points past the end of the file (offset {offset})");
        }
        static ushort U16(byte[] b, long o, string label) { Check(b, o, 2, label); return (ushort)(b[o] | b[o + 1] << 8); }
        static uint U32(byte[] b, long o, string label) { Check(b, o, 4, label); return (uint)(b[o] | b[o + 1] << 8 | b[o + 2] << 16 | b[o + 3] << 24); }
        static ulong U64(byte[] b, long o, string label) => U32(b, o, label) | (ulong)U32(b, o + 4, label) << 32;

        static string CString(byte[] b, long o, string label)
        {
            Check(b, o, 1, label);
            long end = o;
            while (end < b.Length && b[end] != 0) end++;
            return Encoding.ASCII.GetString(b, (int)o, (int)(end - o));
        }
    }

#if !SPARSETUNE_TESTS
    /// <summary>MSBuild task: finds libLibTorchSharp.so under each folder and marks GLIBCXX_3.4.32 weak.</summary>
    public class MarkTorchSharpVersionsWeak : Task
    {
        [Required] public ITaskItem[] Folders { get; set; } = Array.Empty<ITaskItem>();

        public override bool Execute()
        {
            var versions = new HashSet<string> { "GLIBCXX_3.4.32" };
            foreach (ITaskItem folder in Folders)
            {
                string root = folder.ItemSpec;
                if (!Directory.Exists(root)) continue;
                foreach (string library in Directory.EnumerateFiles(root, "libLibTorchSharp.so", SearchOption.AllDirectories))
                {
                    ElfWeakVersionPatcher.PatchResult result = ElfWeakVersionPatcher.Patch(library, versions);
                    if (result.NewlyMarked.Count > 0)
                        Log.LogMessage(MessageImportance.High, $"SparseTune: marked {string.Join(", ", result.NewlyMarked)} weak in {library}");
                }
            }
            return !Log.HasLoggedErrors;
        }
    }
#endif
}
