using System.Text.Json;
using System.Text.Json.Serialization;
using SparseTune.IO;

namespace SparseTune.Tuners.LightPeft;

/// <summary>
/// What Light-PEFT prunes, in the numbering of the model as it was loaded (a freshly loaded base model has the same
/// numbering, so the plan can be replayed on it: --resume, and the artifact reader).
/// </summary>
public sealed record LightPeftPlan
{
    /// <summary>Per layer, the query heads removed (under grouped-query attention: whole groups).</summary>
    public required int[][] RemovedHeads { get; init; }

    /// <summary>Per layer, the FFN neurons removed.</summary>
    public required int[][] RemovedNeurons { get; init; }

    /// <summary>LoRA modules removed whole (low ‖ΔW·x‖ / ‖W·x + b‖, or no rank left).</summary>
    public required string[] DroppedModules { get; init; }

    /// <summary>For every surviving LoRA module, the ranks it keeps (indices into its original r).</summary>
    public required Dictionary<string, int[]> KeptRanks { get; init; }
}

/// <summary>
/// The estimation's numbers and the decisions taken from them: written as light_peft.json next to the adapter (stage
/// all) or as light_peft_estimate.json (stage estimate, where nothing is pruned), and carried in checkpoints.
/// </summary>
public sealed record LightPeftEstimate
{
    public const string FileName = "light_peft.json";
    public const string EstimateFileName = "light_peft_estimate.json";

    public string Method { get; init; } = "light-peft";
    public required string Stage { get; init; }
    public required int EstimationSteps { get; init; }
    /// <summary>Steps whose scores were averaged (the second half of the estimation).</summary>
    public required int ScoredSteps { get; init; }
    /// <summary>The raw final head masks, per layer.</summary>
    public required float[][] HeadMasks { get; init; }
    /// <summary>Query heads per key/value head, per layer (1 outside grouped-query attention).</summary>
    public required int[] HeadGroupSizes { get; init; }
    /// <summary>The raw final FFN neuron masks, per layer.</summary>
    public required float[][] NeuronMasks { get; init; }
    /// <summary>Per LoRA module, the mean ‖ΔW·x‖ / ‖W·x + b‖ over the scored steps.</summary>
    public required Dictionary<string, double> ModuleScores { get; init; }
    /// <summary>Per LoRA module, each rank's mean first-order score |mean(A⊙∇A)[i,:]| + |mean(B⊙∇B)[:,i]|.</summary>
    public required Dictionary<string, double[]> RankScores { get; init; }
    /// <summary>What is pruned (stage all) or would be (stage estimate).</summary>
    public required LightPeftPlan Plan { get; init; }
    public long FoundationParametersBefore { get; init; }
    /// <summary>After pruning; null in the estimate stage.</summary>
    public long? FoundationParametersAfter { get; init; }
    public long LoraParametersBefore { get; init; }
    public long? LoraParametersAfter { get; init; }
    /// <summary>Attention heads per layer after the pruning (stage all) or that would remain (stage estimate).</summary>
    public int[]? HeadsKept { get; init; }
    /// <summary>FFN neurons per layer after the pruning, or that would remain.</summary>
    public int[]? NeuronsKept { get; init; }
    /// <summary>Wall seconds of the estimation and of the fine-tuning after it, in the process that ran them (a resumed run counts its own part).</summary>
    public double EstimationSeconds { get; init; }
    public double? FineTuningSeconds { get; init; }
    /// <summary>The PEFT adapter folder for the pruned base, relative to this file; null in the estimate stage.</summary>
    public string? Adapter { get; init; }

    static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static LightPeftEstimate FromJson(string json) =>
        JsonSerializer.Deserialize<LightPeftEstimate>(json, Json) ?? throw new InvalidDataException("empty Light-PEFT estimate");

    public void Save(string path) => AtomicFile.WriteAllText(path, ToJson());

    public static LightPeftEstimate Load(string path)
    {
        try { return FromJson(File.ReadAllText(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not a Light-PEFT file: {e.Message}"); }
    }
}
