using System.Runtime.InteropServices;

namespace SparseTune.Nn;

/// <summary>
/// Gives libtorch's freed CPU memory back to the operating system. libtorch allocates CPU tensors with malloc; a loop
/// whose tensors grow a little every round (DSEE's decomposition: V gains rows each round) never finds a freed block
/// large enough to reuse, so glibc keeps every freed block and the resident set grows by hundreds of MB per matrix
/// (BERT-base's 24 query/value matrices reached a 14.5 GB peak). <c>malloc_trim</c> releases the free pages.
/// Elsewhere than glibc Linux it does nothing.
/// </summary>
public static partial class NativeHeap
{
    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);

    static bool unavailable;

    public static void Trim()
    {
        if (unavailable || !OperatingSystem.IsLinux()) return;
        try
        {
            MallocTrim(0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            unavailable = true;   // a libc without malloc_trim (musl): nothing to release this way
        }
    }
}
