namespace SparseTune.Tuners.Dsee;

/// <summary>DSEE (Chen et al., ACL 2023): the method's name, flags, learning rates, bench arms and update reader.</summary>
public sealed class DseeMethod : MethodDescriptor<DseeOptions>
{
    public override string Name => "dsee";
    public override string Summary => "DSEE (Chen et al. 2023): low-rank + sparse update on query/value, then prune once and re-tune; writes a pruned model and the update";

    /// <summary>The RTE scripts' learning rate (both phases).</summary>
    public override double DefaultLearningRate => 5e-4;
    public override double DemoLearningRate => 5e-3;

    public override IReadOnlyList<MethodFlag> Flags =>
    [
        Flag("--dsee-rank", "DSEE: rank r of the low-rank part B·A.", o => o.Rank, (o, v) => o with { Rank = v }),
        Flag("--dsee-alpha", "DSEE: alpha (B·A + S is scaled by alpha/r).", o => o.Alpha, (o, v) => o with { Alpha = v }),
        Flag("--num-sparse", "DSEE: N, entries of the sparse part S per query/value matrix.", o => o.SparseEntries, (o, v) => o with { SparseEntries = v }),
        Flag("--support", "DSEE: how S's entries are chosen (decomposition, magnitude, random).", o => o.Support, (o, v) => o with { Support = v }),
        Flag("--support-seed", "DSEE: seed of the decomposition's random start and the random support.", o => o.SupportSeed, (o, v) => o with { SupportSeed = v }),
        Flag("--decomposition-rounds", "DSEE: rounds of the low-rank + sparse decomposition.", o => o.DecompositionRounds, (o, v) => o with { DecompositionRounds = v }),
        Flag("--prune", "DSEE: final-model sparsity (unstructured, heads, none).", o => o.Prune, (o, v) => o with { Prune = v }),
        Flag("--prune-at", "DSEE: share of the steps trained before pruning; the rest re-tunes.", o => o.PruneAt, (o, v) => o with { PruneAt = v }),
        Flag("--retune-epochs", "DSEE: epochs re-tuning after pruning with a fresh optimizer and schedule (0: prune at --prune-at of one run).", o => o.RetuneEpochs, (o, v) => o with { RetuneEpochs = v }),
        Flag("--prune-ratio", "DSEE unstructured: share of the key, attention-output and FFN weights pruned (global |W|).", o => o.BackboneSparsity, (o, v) => o with { BackboneSparsity = v }),
        Flag("--qv-prune-ratio", "DSEE unstructured: share of the query and value weights pruned (global score).", o => o.QueryValueSparsity, (o, v) => o with { QueryValueSparsity = v }),
        Flag("--qv-prune-score", "DSEE unstructured: query/value ranking (update = |ΔW|, weightplusupdate = |W + ΔW|).", o => o.QueryValueScore, (o, v) => o with { QueryValueScore = v }),
        Flag("--prune-heads-share", "DSEE heads: share of each layer's heads removed.", o => o.HeadShare, (o, v) => o with { HeadShare = v }),
    ];

    /// <summary>The scripts' two settings (unstructured 20% + 20%; a quarter of the heads removed) and the update alone.</summary>
    public override IReadOnlyList<AccuracyArm> AccuracyArms(AccuracyBudget budget) =>
    [
        new("dsee unstructured 20%", Name, new DseeOptions()),
        new("dsee heads 1/4", Name, new DseeOptions { Prune = DseePruning.Heads }),
        new("dsee update only", Name, new DseeOptions { Prune = DseePruning.None }),
    ];

    public override IArtifactReader ArtifactReader => DseeUpdate.Reader;

    protected override Tuner Create(DseeOptions options) => new DseeTuner(options);
}
