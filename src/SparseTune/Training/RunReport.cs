using System.Text.Json;
using System.Text.Json.Serialization;

namespace SparseTune.Training;

/// <summary>
/// report.json, written into every output folder. The key names are a documented contract (README,
/// "report.json"): outside tools read them.
/// </summary>
public sealed record RunReport
{
    [JsonPropertyName("method")] public required string Method { get; init; }
    [JsonPropertyName("options")] public required object Options { get; init; }
    [JsonPropertyName("model")] public required string Model { get; init; }
    [JsonPropertyName("trainable_parameters")] public long TrainableParameters { get; init; }
    [JsonPropertyName("total_parameters")] public long TotalParameters { get; init; }
    [JsonPropertyName("steps")] public int Steps { get; init; }
    [JsonPropertyName("tokens")] public long Tokens { get; init; }
    [JsonPropertyName("wall_seconds")] public double WallSeconds { get; init; }
    [JsonPropertyName("tokens_per_second")] public double TokensPerSecond { get; init; }
    [JsonPropertyName("peak_memory_bytes")] public long PeakMemoryBytes { get; init; }
    [JsonPropertyName("grad_optimizer_bytes")] public long GradOptimizerBytes { get; init; }
    [JsonPropertyName("train_loss_first")] public double TrainLossFirst { get; init; }
    [JsonPropertyName("train_loss_last")] public double TrainLossLast { get; init; }
    [JsonPropertyName("eval")] public IReadOnlyDictionary<string, double> Eval { get; init; } = new Dictionary<string, double>();
    [JsonPropertyName("baseline_eval")] public IReadOnlyDictionary<string, double>? BaselineEval { get; init; }
    /// <summary>The best evaluation during training and whether its weights ship (--keep-best); null without evaluations after the method's last structural change.</summary>
    [JsonPropertyName("best_eval")] public BestEvaluation? BestEval { get; init; }
    /// <summary>Patience, whether early stopping ended the run and after which step; null without --early-stopping-patience.</summary>
    [JsonPropertyName("early_stopping")] public EarlyStoppingOutcome? EarlyStopping { get; init; }
    [JsonPropertyName("weight_sparsity")] public double WeightSparsity { get; init; }
    [JsonPropertyName("task")] public string Task { get; init; } = "";
    /// <summary>The method's own figures (<see cref="Tuners.Tuner.Report"/>), null for a method without any.</summary>
    [JsonPropertyName("method_report")] public object? MethodReport { get; init; }
    [JsonPropertyName("outputs")] public IReadOnlyDictionary<string, string> Outputs { get; init; } = new Dictionary<string, string>();
    /// <summary>Per split: examples used, rows skipped and the first reasons (FILE:LINE: problem).</summary>
    [JsonPropertyName("data")] public IReadOnlyDictionary<string, DataSplitReport?>? Data { get; init; }
    /// <summary>Signs that the run collapsed (<see cref="RunWarnings"/>), and numbers that were not finite.</summary>
    [JsonPropertyName("warnings")] public IReadOnlyList<string> Warnings { get; init; } = [];

    /// <summary>Writes report.json atomically; a NaN or infinite metric is written as null and named in warnings.</summary>
    public void Save(string path)
    {
        var nonFinite = Eval.Where(e => !double.IsFinite(e.Value)).Select(e => $"eval.{e.Key}")
            .Concat((BaselineEval ?? new Dictionary<string, double>()).Where(e => !double.IsFinite(e.Value)).Select(e => $"baseline_eval.{e.Key}"))
            .Concat(new[] { ("train_loss_first", TrainLossFirst), ("train_loss_last", TrainLossLast) }.Where(p => !double.IsFinite(p.Item2)).Select(p => p.Item1))
            .ToList();
        var report = nonFinite.Count == 0 ? this : this with { Warnings = [.. Warnings, $"{string.Join(", ", nonFinite)} not a finite number (written as null)"] };
        IO.AtomicFile.WriteAllText(path, JsonSerializer.Serialize(report, JsonOutput.Indented));
    }

    public static JsonDocument Read(string path) => JsonDocument.Parse(File.ReadAllText(path));
}

/// <summary>Process memory figures from /proc (Linux); 0 elsewhere.</summary>
public static class ProcessMemory
{
    /// <summary>Peak resident set size (VmHWM) of this process, in bytes.</summary>
    public static long PeakResidentBytes() => ReadStatusKb("VmHWM:") * 1024;

    public static long CurrentResidentBytes() => ReadStatusKb("VmRSS:") * 1024;

    static long ReadStatusKb(string key)
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith(key, StringComparison.Ordinal))
                    return long.Parse(line[key.Length..].Trim().Split(' ')[0]);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return 0;
    }
}
