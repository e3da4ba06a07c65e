using System.Globalization;

namespace SparseTune.Tuners.Pst;

/// <summary>PST (Li et al., IJCAI 2022): the method's name, flags, learning rates, bench arms and reader of its sparse weights.</summary>
public sealed class PstMethod : MethodDescriptor<PstOptions>
{
    /// <summary>Final sparsities of the accuracy arms: the ones the paper reports (50%, 70%, 90% zeros in the block linears).</summary>
    public static readonly IReadOnlyList<double> AccuracySparsities = [0.5, 0.7, 0.9];

    public override string Name => "pst";
    public override string Summary => "PST (Li et al. 2022): learned low-rank + structured importance prunes each block linear; writes a pruned model";
    /// <summary>The original GPT-2 script's learning rate (a sweep at 5e-3 destroyed the model).</summary>
    public override double DefaultLearningRate => 1e-4;
    public override double DemoLearningRate => 1e-3;

    public override IReadOnlyList<MethodFlag> Flags =>
    [
        Flag("--sparsity", "PST: final fraction of each targeted weight matrix pruned to zero.", o => o.FinalSparsity, (o, v) => o with { FinalSparsity = v }),
        Flag("--initial-sparsity", "PST: sparsity before the cubic schedule starts.", o => o.InitialSparsity, (o, v) => o with { InitialSparsity = v }),
        Flag("--sparsity-warmup", "PST: share of steps at the initial sparsity.", o => o.WarmupRatio, (o, v) => o with { WarmupRatio = v }),
        Flag("--sparsity-cooldown", "PST: share of final steps at the final sparsity.", o => o.CooldownRatio, (o, v) => o with { CooldownRatio = v }),
        Flag("--pst-rank", "PST: rank of the weight update U·V.", o => o.UpdateRank, (o, v) => o with { UpdateRank = v }),
        Flag("--importance-rank", "PST: rank of the learned importance A·B.", o => o.ImportanceRank, (o, v) => o with { ImportanceRank = v }),
        Flag("--target-modules", "PST: comma-separated layer names to sparsify.", o => o.TargetModules, (o, v) => o with { TargetModules = v },
            defaultText: "every linear of the blocks"),
    ];

    public override IReadOnlyList<AccuracyArm> AccuracyArms(AccuracyBudget budget) =>
        AccuracySparsities.Select(s => new AccuracyArm(string.Create(CultureInfo.InvariantCulture, $"pst {s * 100:0}%"), Name, new PstOptions { FinalSparsity = s })).ToList();

    /// <summary>
    /// The original scripts' optimizer and loss settings. NLU (run_glue.py): transformers' AdamW with its defaults
    /// (weight decay 0, ε 1e-6), no clipping, no warm-up. NLG (gpt2_ft.py, README command): --weight_decay 0.0,
    /// --clip 0.0, --warmup_step 500, --label_smooth 0.1, and the LoRA-derived optimizer's --adam_epislon default 1e-6.
    /// </summary>
    public override TrainingDefaults DefaultTraining(TaskFamily task) => task == TaskFamily.Classification
        ? new TrainingDefaults { Source = "PST NLU/run_glue.py", WeightDecay = 0, AdamEpsilon = 1e-6, MaxGradNorm = 0, WarmupSteps = 0 }
        : new TrainingDefaults { Source = "PST NLG/src/gpt2_ft.py", WeightDecay = 0, AdamEpsilon = 1e-6, MaxGradNorm = 0, WarmupSteps = 500, LabelSmoothing = 0.1 };

    public override IArtifactReader ArtifactReader => SparseMatrixFile.Reader;

    protected override Tuner Create(PstOptions options) => new PstTuner(options);
}
