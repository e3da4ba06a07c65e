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
    [JsonPropertyName("weight_sparsity")] public double WeightSparsity { get; init; }
    [JsonPropertyName("task")] public string Task { get; init; } = "";
    [JsonPropertyName("outputs")] public IReadOnlyDictionary<string, string> Outputs { get; init; } = new Dictionary<string, string>();

    static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public void Save(string path) => IO.AtomicFile.WriteAllText(path, JsonSerializer.Serialize(this, Json));

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
