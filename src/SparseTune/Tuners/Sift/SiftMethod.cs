namespace SparseTune.Tuners.Sift;

/// <summary>SIFT (Song et al., ICML 2024): the method's name, flags, learning rates, bench arm and delta reader.</summary>
public sealed class SiftMethod : MethodDescriptor<SiftOptions>
{
    public override string Name => "sift";
    public override string Summary => "SIFT (Song et al. 2024): only the top x% components by early gradient train; writes a sparse delta";
    public override double DefaultLearningRate => 5e-4;
    public override double DemoLearningRate => 1e-2;

    public override IReadOnlyList<MethodFlag> Flags =>
    [
        Flag("--sparse-rate", "SIFT: fraction of each targeted matrix that trains.", o => o.SparseRate, (o, v) => o with { SparseRate = v }),
        Flag("--selection", "SIFT: how components are chosen (gradient, random, magnitude).", o => o.Selection, (o, v) => o with { Selection = v }),
        Flag("--selection-batches", "SIFT: first training micro-batches whose gradients choose the components (spent on choosing, as the original's one).", o => o.SelectionBatches, (o, v) => o with { SelectionBatches = v }),
        Flag("--freeze-biases", "SIFT: keep the targeted layers' biases frozen (default: they tune sparsely too, as in the original).", o => o.FreezeBiases, (o, v) => o with { FreezeBiases = v }),
        Flag("--target-modules", "SIFT: comma-separated layer names updated sparsely.", o => o.TargetModules, (o, v) => o with { TargetModules = v },
            defaultText: "every linear of the blocks"),
    ];

    public override IReadOnlyList<AccuracyArm> AccuracyArms(AccuracyBudget budget) => [new("sift 1%", Name, new SiftOptions { SparseRate = 0.01 })];

    public override IArtifactReader ArtifactReader => SparseMatrixFile.Reader;

    protected override Tuner Create(SiftOptions options) => new SiftTuner(options);
}
