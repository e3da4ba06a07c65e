using System.Text.Json;

namespace SparseTune.Training;

/// <summary>
/// The checkpoint folder's swap, made recoverable. A checkpoint is written into <c>checkpoint.tmp-ID</c> (its
/// trainer_state.json last), then swapped in: <c>checkpoint</c> → <c>checkpoint.old</c>, <c>checkpoint.tmp-ID</c> →
/// <c>checkpoint</c>, <c>checkpoint.old</c> deleted. A kill can leave any of these states on disk; <see cref="Resolve"/>
/// finds the newest complete checkpoint among them and <see cref="CleanUp"/> removes the leftovers.
/// </summary>
public static class CheckpointFolder
{
    const string StateFile = "trainer_state.json";

    /// <summary>True when the folder holds a whole checkpoint (trainer_state.json is written last).</summary>
    public static bool IsComplete(string directory) => File.Exists(Path.Combine(directory, StateFile));

    /// <summary>
    /// The complete checkpoint to resume from: <paramref name="requested"/> itself, or else the newest complete
    /// <c>.tmp-*</c> or <c>.old</c> sibling that an interrupted swap left, moved into <paramref name="requested"/>'s place.
    /// </summary>
    public static string Resolve(string requested)
    {
        string path = Path.TrimEndingDirectorySeparator(Path.GetFullPath(requested));
        if (IsComplete(path)) return path;
        string parent = Path.GetDirectoryName(path)!;
        string name = Path.GetFileName(path);
        var candidates = Directory.Exists(parent)
            ? Directory.EnumerateDirectories(parent, name + ".*").Where(d => IsLeftover(name, Path.GetFileName(d)) && IsComplete(d)).ToList()
            : [];
        if (candidates.Count == 0)
        {
            if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"--resume: no checkpoint folder at {requested}");
            throw new FileNotFoundException($"--resume: {requested} has no {StateFile} (an incomplete checkpoint) and no complete one beside it", Path.Combine(path, StateFile));
        }
        string newest = candidates.OrderByDescending(StepOf).First();
        if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
        Directory.Move(newest, path);
        return path;
    }

    /// <summary>Removes what interrupted swaps left beside <paramref name="checkpoint"/> (<c>.tmp-*</c> and <c>.old</c>).</summary>
    public static void CleanUp(string checkpoint)
    {
        string path = Path.TrimEndingDirectorySeparator(Path.GetFullPath(checkpoint));
        string parent = Path.GetDirectoryName(path)!, name = Path.GetFileName(path);
        if (!Directory.Exists(parent)) return;
        foreach (string leftover in Directory.EnumerateDirectories(parent, name + ".*").Where(d => IsLeftover(name, Path.GetFileName(d))))
            Directory.Delete(leftover, recursive: true);
    }

    /// <summary>Keeps the lines of metrics.jsonl up to <paramref name="step"/>: a resumed run then logs the later steps once.</summary>
    public static void TruncateLog(string metricsLog, int step)
    {
        if (!File.Exists(metricsLog)) return;
        var kept = new List<string>();
        foreach (string line in File.ReadAllLines(metricsLog))
        {
            try
            {
                using var doc = JsonDocument.Parse(line);
                if (doc.RootElement.TryGetProperty("step", out var s) && s.GetInt32() <= step) kept.Add(line);
            }
            catch (JsonException) { }   // a line cut short by the kill
        }
        IO.AtomicFile.WriteAllText(metricsLog, kept.Count == 0 ? "" : string.Join("\n", kept) + "\n");
    }

    static bool IsLeftover(string name, string folder) =>
        folder == name + ".old" || folder.StartsWith(name + ".tmp-", StringComparison.Ordinal);

    static int StepOf(string directory)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(directory, StateFile)));
        return doc.RootElement.GetProperty("step").GetInt32();
    }
}
