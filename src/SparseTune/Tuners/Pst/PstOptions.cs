using SparseTune.Tuners.Masking;

namespace SparseTune.Tuners.Pst;

/// <summary>
/// PST options. Defaults are the argparse defaults of both original training scripts
/// (alibaba/AliceMind S4/PST/NLU/run_glue.py and S4/PST/NLG/src/gpt2_ft.py, identical there); the script's
/// flag name follows each property.
/// </summary>
public sealed record PstOptions : IMethodOptions
{
    /// <summary>--sparsity: the fraction of each targeted matrix pruned at the end.</summary>
    public double FinalSparsity { get; init; } = 0.9;

    /// <summary>--initial_sparsity: the sparsity during warm-up.</summary>
    public double InitialSparsity { get; init; } = 0.0;

    /// <summary>--initial_warmup: the first WarmupRatio·total steps train at the initial sparsity.</summary>
    public double WarmupRatio { get; init; } = 0.1;

    /// <summary>--final_warmup: the last CooldownRatio·total steps train at the final sparsity.</summary>
    public double CooldownRatio { get; init; } = 0.3;

    /// <summary>--weight_rank: r of the weight update ΔW = β·U·V, U (out, r), V (r, in).</summary>
    public int UpdateRank { get; init; } = 8;

    /// <summary>--weight_beta: β, the factor on U·V (no division by the rank, unlike LoRA's alpha/r).</summary>
    public double UpdateScale { get; init; } = 1.0;

    /// <summary>--mask_rank: r' of the low-rank importance A (out, r')·B (r', in).</summary>
    public int ImportanceRank { get; init; } = 8;

    /// <summary>--mask_alpha1: α1, the factor on A·B in the score.</summary>
    public double LowRankScoreScale { get; init; } = 1.0;

    /// <summary>--mask_alpha2: α2, the factor on the structured part R·1ᵀ + 1·Cᵀ in the score.</summary>
    public double StructuredScoreScale { get; init; } = 1.0;

    /// <summary>
    /// Linear layers to sparsify (PEFT-style name suffixes). Null: every linear of the transformer blocks, which
    /// is what both scripts convert (NLU: every nn.Linear under bert/roberta.encoder; NLG: every one under
    /// transformer.h). Never the pooler or the task head.
    /// </summary>
    public IReadOnlyList<string>? TargetModules { get; init; }

    /// <summary>The sparsity schedule for a run of <paramref name="totalSteps"/> optimizer steps.</summary>
    public CubicSparsitySchedule Schedule(int totalSteps) =>
        CubicSparsitySchedule.FromRatios(InitialSparsity, FinalSparsity, WarmupRatio, CooldownRatio, totalSteps);

    /// <summary>Every problem with these options, as CLI-ready sentences.</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (!(FinalSparsity >= 0 && FinalSparsity < 1)) problems.Add($"PST sparsity must be in [0, 1) (got {FinalSparsity})");
        if (!(InitialSparsity >= 0 && InitialSparsity <= FinalSparsity)) problems.Add($"PST initial sparsity must be in [0, sparsity] (got {InitialSparsity})");
        if (!(WarmupRatio >= 0 && WarmupRatio < 1)) problems.Add($"PST warm-up ratio must be in [0, 1) (got {WarmupRatio})");
        if (!(CooldownRatio >= 0 && CooldownRatio <= 1)) problems.Add($"PST cool-down ratio must be in [0, 1] (got {CooldownRatio})");
        if (WarmupRatio + CooldownRatio > 1) problems.Add($"PST warm-up and cool-down ratios add up to more than 1 ({WarmupRatio} + {CooldownRatio})");
        if (UpdateRank < 1) problems.Add($"PST weight-update rank must be at least 1 (got {UpdateRank})");
        if (ImportanceRank < 1) problems.Add($"PST importance rank must be at least 1 (got {ImportanceRank})");
        foreach (var (name, value) in new[] { ("weight-update scale", UpdateScale), ("low-rank score scale", LowRankScoreScale), ("structured score scale", StructuredScoreScale) })
            if (!(value >= 0) || double.IsInfinity(value)) problems.Add($"PST {name} must be finite and not negative (got {value})");
        if (TargetModules is { Count: 0 }) problems.Add("PST target modules: name at least one module (or leave unset for every block linear)");
        if (TargetModules?.Any(string.IsNullOrWhiteSpace) == true) problems.Add("PST target modules include an empty name");
        return problems;
    }
}
