using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.Pst;
using Xunit;

namespace SparseTune.Tests.TrainingLoop;

/// <summary>A method declares its original scripts' training options; they apply only where the user gave no flag.</summary>
public sealed class MethodTrainingDefaultsTests
{
    static readonly MethodDescriptor Pst = MethodRegistry.Find("pst")!;

    [Fact]
    public void PstClassificationGetsTheNluScriptsOptimizer()
    {
        var (options, applied) = Pst.DefaultTraining(TaskFamily.Classification).ApplyTo(new TrainingOptions(), _ => false);
        Assert.Equal(0, options.WeightDecay);          // transformers' AdamW default, no weight_decay key in the group
        Assert.Equal(1e-6, options.AdamEpsilon);
        Assert.Equal(0, options.MaxGradNorm);          // the no_trainer loop never clips
        Assert.Equal(0, options.WarmupSteps);          // --num_warmup_steps 0
        Assert.Equal(0, options.LabelSmoothing);
        Assert.Contains("--adam-epsilon 1E-06", applied);
    }

    [Fact]
    public void PstGenerationGetsTheNlgScriptsOptionsWithWarmupCappedToTheRun()
    {
        var (options, _) = Pst.DefaultTraining(TaskFamily.Generation).ApplyTo(new TrainingOptions(), _ => false);
        Assert.Equal(0, options.WeightDecay);
        Assert.Equal(0, options.MaxGradNorm);
        Assert.Equal(500, options.WarmupSteps);
        Assert.Equal(0.1, options.LabelSmoothing);
        Assert.Equal(1e-6, options.AdamEpsilon);
        // 500 warm-up steps on a 4-step run: the schedule warms up over the run, it never leaves the learning rate at 0.
        var schedule = new LearningRateSchedule(ScheduleKind.Linear, 1.0, Math.Min(4, options.WarmupSteps!.Value), 4);
        Assert.Equal(0.75, schedule.At(3), 12);
    }

    [Fact]
    public void AFlagTheUserGaveWinsOverTheMethodsDefault()
    {
        var given = new TrainingOptions { WeightDecay = 0.05, WarmupRatio = 0.2 };
        var (options, applied) = Pst.DefaultTraining(TaskFamily.Generation).ApplyTo(given, flag => flag is "--weight-decay" or "--warmup-ratio");
        Assert.Equal(0.05, options.WeightDecay);
        Assert.Equal(0.2, options.WarmupRatio);
        Assert.Null(options.WarmupSteps);                // --warmup-ratio given: the method's warm-up steps do not apply
        Assert.Equal(0.1, options.LabelSmoothing);
        Assert.DoesNotContain(applied, a => a.StartsWith("--weight-decay", StringComparison.Ordinal));
    }

    [Fact]
    public void MethodsWithoutDeclaredDefaultsKeepTheCommonOnes()
    {
        foreach (var method in MethodRegistry.All.Where(m => m.Name != "pst"))
            foreach (var task in Enum.GetValues<TaskFamily>())
            {
                var (options, applied) = method.DefaultTraining(task).ApplyTo(new TrainingOptions(), _ => false);
                Assert.Equal(new TrainingOptions(), options);
                Assert.Empty(applied);
            }
        Assert.Equal(TaskFamily.Classification, TrainingDefaults.FamilyOf(TaskKind.Regression));
        Assert.Equal(TaskFamily.Generation, TrainingDefaults.FamilyOf(TaskKind.CausalLM));
    }
}
