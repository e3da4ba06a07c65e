using SparseTune.Tuners.Lora;
using SparseTune.Tuners.Pst;
using SparseTune.Tuners.Sift;

namespace SparseTune.Tuners;

/// <summary>Every method's options in one record, as the CLI binds them; each method reads its own.</summary>
public sealed record MethodOptions
{
    public LoraOptions Lora { get; init; } = new();
    public SiftOptions Sift { get; init; } = new();
    public PstOptions Pst { get; init; } = new();
}

/// <summary>The --method names and how each builds its tuner: one line per method.</summary>
public static class TunerRegistry
{
    static readonly Dictionary<string, Func<MethodOptions, Tuner>> Factories = new()
    {
        ["full"] = _ => new FullFineTuner(),
        ["lora"] = o => new LoraTuner(o.Lora),
        ["sift"] = o => new SiftTuner(o.Sift),
        ["pst"] = o => new PstTuner(o.Pst),
    };

    public static IReadOnlyList<string> Methods => Factories.Keys.ToList();

    public static Tuner Create(string method, MethodOptions options) =>
        Factories.TryGetValue(method, out var factory)
            ? factory(options)
            : throw new ArgumentException($"unknown --method '{method}'; available: {string.Join(", ", Factories.Keys)}");
}
