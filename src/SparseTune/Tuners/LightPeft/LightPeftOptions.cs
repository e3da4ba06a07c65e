namespace SparseTune.Tuners.LightPeft;

/// <summary>How FFN neurons are ranked against each other when pruning.</summary>
public enum FfnGranularity
{
    /// <summary>One ranking over every neuron of every layer (the original's scripts).</summary>
    Global,
    /// <summary>Each layer loses the same share of its own neurons.</summary>
    Layer,
}

/// <summary>What a Light-PEFT run does.</summary>
public enum LightPeftStage
{
    /// <summary>Only the estimation: masks and scores are written (light_peft_estimate.json); nothing is pruned.</summary>
    Estimate,
    /// <summary>Estimation, physical pruning of the model and of the LoRA, then fine-tuning of the smaller model.</summary>
    All,
}

/// <summary>
/// Light-PEFT options (Gu et al., Findings of ACL 2024, "Light-PEFT: Lightening Parameter-Efficient Fine-Tuning via
/// Early Pruning"). Defaults are the original scripts' (scripts/estimate.sh, NLU/arguments.py as used there).
/// </summary>
public sealed record LightPeftOptions : IMethodOptions
{
    /// <summary>Estimation length in optimizer steps (the scripts: 800), capped at <see cref="EstimateRatio"/> of the run.</summary>
    public int EstimateSteps { get; init; } = 800;

    /// <summary>
    /// The largest share of the run the estimation may take: estimation = min(<see cref="EstimateSteps"/>,
    /// ⌊ratio · total steps⌋), at least 1 step and at most total − 1 (so some fine-tuning remains). With the defaults a
    /// run shorter than 3,200 steps estimates for its first quarter. Set 1 to estimate exactly EstimateSteps steps.
    /// </summary>
    public double EstimateRatio { get; init; } = 0.25;

    /// <summary>Share of each layer's attention heads removed (the scripts: 1/3). GQA: share of key/value groups.</summary>
    public double HeadPruneRatio { get; init; } = 1.0 / 3;

    /// <summary>Share of FFN neurons removed (the scripts: 1/3), over the whole model or per layer (<see cref="FfnGranularity"/>).</summary>
    public double FfnPruneRatio { get; init; } = 1.0 / 3;

    public FfnGranularity FfnGranularity { get; init; } = FfnGranularity.Global;

    /// <summary>Share of LoRA modules kept, by their ‖ΔW·x‖ / ‖W·x + b‖ (the scripts: the top 25%).</summary>
    public double LoraModuleKeep { get; init; } = 0.25;

    /// <summary>Share of the kept modules' LoRA ranks kept, ranked over all of them by the first-order score (the scripts: half).</summary>
    public double LoraRankKeep { get; init; } = 0.5;

    /// <summary>λ of the L1 penalty λ·Σ|m| on the head and neuron masks during estimation (the scripts: 1e-4).</summary>
    public double MaskL1 { get; init; } = 1e-4;

    public LightPeftStage Stage { get; init; } = LightPeftStage.All;

    /// <summary>LoRA rank r during estimation (before rank pruning).</summary>
    public int Rank { get; init; } = 8;

    /// <summary>LoRA alpha; the update stays scaled by alpha / (the original r) after rank pruning.</summary>
    public double Alpha { get; init; } = 16;

    public double Dropout { get; init; } = 0.05;

    /// <summary>
    /// Also write model-hf/: the pruned, tuned model in a form Hugging Face transformers loads without SparseTune's
    /// config keys (<see cref="Models.HuggingFaceExport"/>: pruned FFN neurons, and llama-family heads, as zeros).
    /// </summary>
    public bool ExportHuggingFace { get; init; }

    /// <summary>The estimation length for a run of <paramref name="totalSteps"/> steps (see <see cref="EstimateRatio"/>); the estimate stage uses the whole run.</summary>
    public int EstimationSteps(int totalSteps)
    {
        if (Stage == LightPeftStage.Estimate) return totalSteps;
        int capped = Math.Min(EstimateSteps, (int)Math.Floor(EstimateRatio * totalSteps + 1e-9));
        return Math.Clamp(capped, 1, Math.Max(1, totalSteps - 1));
    }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (EstimateSteps < 1) problems.Add($"--estimate-steps must be at least 1 (got {EstimateSteps})");
        if (!(EstimateRatio > 0 && EstimateRatio <= 1)) problems.Add($"--estimate-ratio must be in (0, 1] (got {EstimateRatio})");
        if (!(HeadPruneRatio >= 0 && HeadPruneRatio < 1)) problems.Add($"--head-prune-ratio must be in [0, 1) (got {HeadPruneRatio})");
        if (!(FfnPruneRatio >= 0 && FfnPruneRatio < 1)) problems.Add($"--ffn-prune-ratio must be in [0, 1) (got {FfnPruneRatio})");
        if (!(LoraModuleKeep > 0 && LoraModuleKeep <= 1)) problems.Add($"--lora-module-keep must be in (0, 1] (got {LoraModuleKeep})");
        if (!(LoraRankKeep > 0 && LoraRankKeep <= 1)) problems.Add($"--lora-rank-keep must be in (0, 1] (got {LoraRankKeep})");
        if (!(MaskL1 >= 0) || double.IsInfinity(MaskL1)) problems.Add($"--mask-l1 must be a finite number ≥ 0 (got {MaskL1})");
        if (Rank < 1) problems.Add($"LoRA rank r must be at least 1 (got {Rank})");
        if (!(Alpha > 0) || double.IsInfinity(Alpha)) problems.Add($"LoRA alpha must be positive (got {Alpha})");
        if (!(Dropout >= 0 && Dropout < 1)) problems.Add($"LoRA dropout must be in [0, 1) (got {Dropout})");
        if (ExportHuggingFace && Stage == LightPeftStage.Estimate)
            problems.Add("--export-hf writes the pruned model, and --light-peft-stage estimate prunes nothing (model/ is already a standard checkpoint)");
        return problems;
    }
}
