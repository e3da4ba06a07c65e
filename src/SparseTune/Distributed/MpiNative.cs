using System.Runtime.InteropServices;

namespace SparseTune.Distributed;

/// <summary>MPI could not be loaded or a call failed.</summary>
public sealed class MpiException(string message) : Exception(message);

/// <summary>
/// The few MPI calls SparseTune needs, over Open MPI's libmpi.so.40, loaded at run time (no build-time dependency).
/// Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM …) are the addresses of global objects in libmpi
/// (ompi_mpi_comm_world, ompi_mpi_float, ompi_mpi_op_sum), so they come from the library's exports; MPICH's integer
/// handles would need a different table, hence Open MPI only.
/// </summary>
internal static unsafe class MpiNative
{
    const int RtldNow = 2, RtldGlobal = 0x100;
    static readonly IntPtr InPlace = 1;   // Open MPI's MPI_IN_PLACE is ((void *) 1)

    [DllImport("libc", EntryPoint = "dlopen")]
    static extern IntPtr DlOpen(string file, int mode);

    static IntPtr library;
    static delegate* unmanaged<IntPtr, IntPtr, int> init;
    static delegate* unmanaged<int*, int> initialized;
    static delegate* unmanaged<int*, int> finalized;
    static delegate* unmanaged<int> finalize;
    static delegate* unmanaged<IntPtr, int*, int> commRank;
    static delegate* unmanaged<IntPtr, int*, int> commSize;
    static delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int> allreduce;
    static delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, int> bcast;
    static delegate* unmanaged<IntPtr, int> barrier;
    static delegate* unmanaged<IntPtr, IntPtr*, int> ibarrier;
    static delegate* unmanaged<IntPtr*, int*, IntPtr, int> test;
    static delegate* unmanaged<IntPtr, int, int> abort;

    public static IntPtr CommWorld { get; private set; }
    public static IntPtr Float { get; private set; }
    public static IntPtr Double { get; private set; }
    public static IntPtr Byte { get; private set; }
    public static IntPtr Sum { get; private set; }

    /// <summary>Loads libmpi and resolves every symbol; throws <see cref="MpiException"/> with one line when it cannot.</summary>
    public static void Load()
    {
        if (library != IntPtr.Zero) return;
        // RTLD_GLOBAL: Open MPI's plugins (mca_*.so) resolve ompi_* symbols from the already loaded libmpi; .NET's own
        // loader opens libraries RTLD_LOCAL, which makes the plugins fail to load.
        IntPtr handle = IntPtr.Zero;
        foreach (string name in new[] { "libmpi.so.40", "libmpi.so" })
            if ((handle = DlOpen(name, RtldNow | RtldGlobal)) != IntPtr.Zero) break;
        if (handle == IntPtr.Zero)
            throw new MpiException("--distributed mpi: Open MPI's library (libmpi.so.40) was not found; install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin) and launch with mpirun -np N");
        IntPtr Export(string symbol) => NativeLibrary.TryGetExport(handle, symbol, out IntPtr address)
            ? address
            : throw new MpiException($"--distributed mpi: the loaded libmpi has no {symbol}: only Open MPI is supported");
        init = (delegate* unmanaged<IntPtr, IntPtr, int>)Export("MPI_Init");
        initialized = (delegate* unmanaged<int*, int>)Export("MPI_Initialized");
        finalized = (delegate* unmanaged<int*, int>)Export("MPI_Finalized");
        finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        commRank = (delegate* unmanaged<IntPtr, int*, int>)Export("MPI_Comm_rank");
        commSize = (delegate* unmanaged<IntPtr, int*, int>)Export("MPI_Comm_size");
        allreduce = (delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int>)Export("MPI_Allreduce");
        bcast = (delegate* unmanaged<IntPtr, int, IntPtr, int, IntPtr, int>)Export("MPI_Bcast");
        barrier = (delegate* unmanaged<IntPtr, int>)Export("MPI_Barrier");
        ibarrier = (delegate* unmanaged<IntPtr, IntPtr*, int>)Export("MPI_Ibarrier");
        test = (delegate* unmanaged<IntPtr*, int*, IntPtr, int>)Export("MPI_Test");
        abort = (delegate* unmanaged<IntPtr, int, int>)Export("MPI_Abort");
        CommWorld = Export("ompi_mpi_comm_world");
        Float = Export("ompi_mpi_float");
        Double = Export("ompi_mpi_double");
        Byte = Export("ompi_mpi_byte");
        Sum = Export("ompi_mpi_op_sum");
        library = handle;
    }

    public static bool IsInitialized { get { int flag; Check(initialized(&flag), "MPI_Initialized"); return flag != 0; } }
    public static bool IsFinalized { get { int flag; Check(finalized(&flag), "MPI_Finalized"); return flag != 0; } }

    public static void Init() => Check(init(IntPtr.Zero, IntPtr.Zero), "MPI_Init");
    public static void FinalizeMpi() => Check(finalize(), "MPI_Finalize");
    public static int Rank() { int rank; Check(commRank(CommWorld, &rank), "MPI_Comm_rank"); return rank; }
    public static int Size() { int size; Check(commSize(CommWorld, &size), "MPI_Comm_size"); return size; }

    /// <summary>In-place sum over the ranks of <paramref name="count"/> elements at <paramref name="buffer"/>.</summary>
    public static void AllReduceSumInPlace(IntPtr buffer, int count, IntPtr datatype) =>
        Check(allreduce(InPlace, buffer, count, datatype, Sum, CommWorld), "MPI_Allreduce");

    public static void Broadcast(IntPtr buffer, int count, IntPtr datatype, int root) =>
        Check(bcast(buffer, count, datatype, root, CommWorld), "MPI_Bcast");

    public static void Barrier() => Check(barrier(CommWorld), "MPI_Barrier");

    /// <summary>
    /// A barrier that checks every <paramref name="poll"/> and sleeps in between (MPI_Ibarrier + MPI_Test): Open MPI's
    /// blocking calls spin on a core, which a rank waiting for long would take from the ranks still working.
    /// Every rank must call this one (a nonblocking barrier does not match MPI_Barrier).
    /// </summary>
    public static void SleepingBarrier(TimeSpan poll)
    {
        IntPtr request;   // Open MPI's MPI_Request is a pointer; MPI_STATUS_IGNORE is NULL
        Check(ibarrier(CommWorld, &request), "MPI_Ibarrier");
        while (true)
        {
            int done;
            Check(test(&request, &done, IntPtr.Zero), "MPI_Test");
            if (done != 0) return;
            Thread.Sleep(poll);
        }
    }

    /// <summary>Ends every rank of the job (a failed rank must not leave the others waiting in a collective).</summary>
    public static void Abort(int errorCode) => abort(CommWorld, errorCode);

    static void Check(int code, string call)
    {
        if (code != 0) throw new MpiException($"{call} failed with MPI error {code}");
    }
}
