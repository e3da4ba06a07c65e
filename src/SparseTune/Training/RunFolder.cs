namespace SparseTune.Training;

/// <summary>
/// How a run treats its output folder, as Hugging Face's Trainer does with overwrite_output_dir: a new run needs an
/// empty (or new) folder; <c>--overwrite</c> replaces a previous SparseTune run there; <c>--resume</c> continues in
/// the run's own folder.
/// </summary>
public static class RunFolder
{
    /// <summary>Files and folders a SparseTune run writes at the top of its folder; any of them marks a run folder.</summary>
    static readonly string[] RunMarkers = ["report.json", "metrics.jsonl", "checkpoint", "training-curve.svg"];

    public static void PrepareForNewRun(string output, bool overwrite)
    {
        if (File.Exists(output)) throw new ArgumentException($"--output: {output} is a file, not a folder");
        if (!Directory.Exists(output) || !Directory.EnumerateFileSystemEntries(output).Any()) return;
        var entries = Directory.EnumerateFileSystemEntries(output).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        string listed = string.Join(", ", entries.Take(5)) + (entries.Count > 5 ? ", …" : "");
        if (!overwrite)
            throw new ArgumentException($"--output: {output} is not empty ({listed}); choose a new folder, add --overwrite to replace the run in it, or --resume its checkpoint");
        if (!entries.Any(e => RunMarkers.Contains(e) || e!.StartsWith("checkpoint.", StringComparison.Ordinal)))
            throw new ArgumentException($"--output: {output} is not empty and holds no SparseTune run ({listed}); --overwrite only replaces a previous run, so choose a new folder");
        foreach (string directory in Directory.EnumerateDirectories(output)) Directory.Delete(directory, recursive: true);
        foreach (string file in Directory.EnumerateFiles(output)) File.Delete(file);
    }
}
