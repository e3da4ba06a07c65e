namespace SparseTune.Distributed;

/// <summary>How a run finds its data-parallel peers (--distributed).</summary>
public enum DistributedMode
{
    /// <summary>MPI when the process was started by an MPI launcher (mpirun sets OMPI_COMM_WORLD_SIZE / PMI_SIZE), else one process.</summary>
    Auto,
    /// <summary>One process, whatever launched it.</summary>
    None,
    /// <summary>MPI; refused with a clear message when libmpi cannot be loaded.</summary>
    Mpi,
}

/// <summary>The names --distributed takes, and the MPI launch detection.</summary>
public static class DistributedModes
{
    public static readonly IReadOnlyList<string> Names = ["auto", "none", "mpi"];

    public static DistributedMode Parse(string name) =>
        Enum.TryParse(name, ignoreCase: true, out DistributedMode mode) && Enum.IsDefined(mode)
            ? mode
            : throw new ArgumentException($"--distributed: unknown '{name}' (choose {string.Join(", ", Names)})");

    /// <summary>
    /// True when an MPI launcher started this process: Open MPI's mpirun sets OMPI_COMM_WORLD_SIZE, PMIx launchers
    /// PMIX_RANK, MPICH/Hydra and Slurm's PMI PMI_SIZE.
    /// </summary>
    public static bool LaunchedByMpi() =>
        new[] { "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE" }.Any(v => !string.IsNullOrEmpty(Environment.GetEnvironmentVariable(v)));

    /// <summary>The process group a run in <paramref name="mode"/> uses: MPI's world (initialised once per process) or one process.</summary>
    public static IProcessGroup Open(DistributedMode mode) => mode switch
    {
        DistributedMode.None => SingleProcess.Instance,
        DistributedMode.Auto when !LaunchedByMpi() => SingleProcess.Instance,
        _ => MpiProcessGroup.World,
    };
}
