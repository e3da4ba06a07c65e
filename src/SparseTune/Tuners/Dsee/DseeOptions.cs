namespace SparseTune.Tuners.Dsee;

/// <summary>How DSEE chooses the fixed support Ω of the sparse update S of each matrix.</summary>
public enum DseeSupport
{
    /// <summary>Top-N of |S| from the GreBsmo-style low-rank + sparse decomposition of the pretrained W (the paper's method).</summary>
    Decomposition,
    /// <summary>Top-N of |W| (the original's ablation).</summary>
    Magnitude,
    /// <summary>N entries uniformly at random (the original's ablation).</summary>
    Random,
}

/// <summary>How the final model is made sparse, once, part-way through training.</summary>
public enum DseePruning
{
    /// <summary>Global magnitude pruning in two pools, each at its own ratio (the scripts' setting).</summary>
    Unstructured,
    /// <summary>Per layer, physical removal of the attention heads whose query and value updates are smallest.</summary>
    Heads,
    /// <summary>No pruning: only the dually sparse update.</summary>
    None,
}

/// <summary>What ranks the query and value weights in the second pool of unstructured pruning.</summary>
public enum DseeUpdateScore
{
    /// <summary>|ΔW| (the original's prune_mode ABS, the scripts' setting).</summary>
    Update,
    /// <summary>|W + ΔW| (the original's prune_mode WABS).</summary>
    WeightPlusUpdate,
}

/// <summary>
/// DSEE options (Chen et al., ACL 2023, "DSEE: Dually Sparsity-embedded Efficient Tuning of Pre-trained Language
/// Models"). Defaults follow the original scripts (VITA-Group/DSEE scripts/rte_unstructured_0.2.sh and
/// rte_structured_3.sh): r = 16, alpha = 32, N = 16, pruning ratios 0.2 and 0.2, 3 of 12 heads.
/// </summary>
public sealed record DseeOptions : IMethodOptions
{
    /// <summary>--lora_r: r, the inner dimension of B·A.</summary>
    public int Rank { get; init; } = 16;

    /// <summary>--lora_alpha: the whole update (B·A and S) is scaled by alpha / r.</summary>
    public double Alpha { get; init; } = 32;

    /// <summary>--num_sparse: N, the entries of Ω (and trained values of S) per targeted matrix.</summary>
    public int SparseEntries { get; init; } = 16;

    public DseeSupport Support { get; init; } = DseeSupport.Decomposition;

    /// <summary>Seed of the decomposition's random start and of the random support (a generator of its own).</summary>
    public int SupportSeed { get; init; } = 0;

    /// <summary>Rounds of the decomposition loop (the original: 100; the rank grows by 5 each round).</summary>
    public int DecompositionRounds { get; init; } = 100;

    /// <summary>|S| below this absolute value is set to zero in each decomposition step (the original: 0.01).</summary>
    public double DecompositionThreshold { get; init; } = 0.01;

    public DseePruning Prune { get; init; } = DseePruning.Unstructured;

    /// <summary>
    /// The share of the optimizer steps trained before pruning; the rest re-trains the same tensors. The RTE scripts
    /// tune 5 epochs, prune, then re-tune 10: a third.
    /// </summary>
    public double PruneAt { get; init; } = 1.0 / 3;

    /// <summary>
    /// Epochs of a separate re-tuning phase after pruning, as the original's second script: the run as planned
    /// (--epochs or --max-steps) tunes, then pruning, then this many epochs re-tune the same tensors with a fresh AdamW
    /// and a fresh schedule (the RTE scripts: --epochs 5 --retune-epochs 10). 0 (the default): one run, one schedule,
    /// pruned after the <see cref="PruneAt"/> share of its steps.
    /// </summary>
    public int RetuneEpochs { get; init; }

    /// <summary>Unstructured, pool 1: the share of the key, attention-output and FFN weights pruned, ranked globally by |W|.</summary>
    public double BackboneSparsity { get; init; } = 0.2;

    /// <summary>Unstructured, pool 2: the share of the query and value weights pruned, ranked globally by <see cref="QueryValueScore"/>.</summary>
    public double QueryValueSparsity { get; init; } = 0.2;

    public DseeUpdateScore QueryValueScore { get; init; } = DseeUpdateScore.Update;

    /// <summary>Heads: the share of each layer's heads removed, rounded to the nearest head (3 of 12 for the default).</summary>
    public double HeadShare { get; init; } = 0.25;

    /// <summary>alpha / r, the factor on B·A + S.</summary>
    public double Scaling => Alpha / Rank;

    /// <summary>The step after which pruning runs: ⌊PruneAt·total⌉, at least 1 and at most total.</summary>
    public int PruneStep(int totalSteps) => Math.Clamp((int)Math.Round(PruneAt * totalSteps, MidpointRounding.AwayFromZero), 1, Math.Max(1, totalSteps));

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (Rank < 1) problems.Add($"rank r must be at least 1 (got {Rank})");
        if (!(Alpha > 0) || double.IsInfinity(Alpha)) problems.Add($"alpha must be positive (got {Alpha})");
        if (SparseEntries < 0) problems.Add($"--num-sparse must not be negative (got {SparseEntries})");
        if (DecompositionRounds < 1) problems.Add($"--decomposition-rounds must be at least 1 (got {DecompositionRounds})");
        if (!(DecompositionThreshold >= 0) || double.IsInfinity(DecompositionThreshold)) problems.Add($"the decomposition threshold must be finite and not negative (got {DecompositionThreshold})");
        if (RetuneEpochs < 0) problems.Add($"--retune-epochs must not be negative (got {RetuneEpochs})");
        if (RetuneEpochs > 0 && Prune == DseePruning.None) problems.Add("--retune-epochs needs pruning (--prune unstructured or heads): without it there is nothing to re-tune after");
        if (!(PruneAt > 0 && PruneAt < 1)) problems.Add($"--prune-at must be in (0, 1), a share of the steps (got {PruneAt})");
        if (!(BackboneSparsity >= 0 && BackboneSparsity < 1)) problems.Add($"--prune-ratio must be in [0, 1) (got {BackboneSparsity})");
        if (!(QueryValueSparsity >= 0 && QueryValueSparsity < 1)) problems.Add($"--qv-prune-ratio must be in [0, 1) (got {QueryValueSparsity})");
        if (!(HeadShare > 0 && HeadShare < 1)) problems.Add($"--prune-heads-share must be in (0, 1) (got {HeadShare})");
        return problems;
    }
}
