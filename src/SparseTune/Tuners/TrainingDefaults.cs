using SparseTune.Training;

namespace SparseTune.Tuners;

/// <summary>The two kinds of run whose original scripts differ: classification (NLU: GLUE, QA, multiple choice) and generation (NLG, LM).</summary>
public enum TaskFamily { Classification, Generation }

/// <summary>
/// Training options a method's original scripts used, declared by its <see cref="MethodDescriptor"/> per
/// <see cref="TaskFamily"/>. A null field keeps SparseTune's common default. The CLI applies a field only where the
/// user gave no flag for it, and says so in the log.
/// </summary>
public sealed record TrainingDefaults
{
    public static readonly TrainingDefaults None = new();

    /// <summary>Where the values come from (a script of the original), for the log line.</summary>
    public string Source { get; init; } = "";
    public double? WeightDecay { get; init; }
    /// <summary>0: no clipping.</summary>
    public double? MaxGradNorm { get; init; }
    public double? AdamEpsilon { get; init; }
    /// <summary>Warm-up steps; the trainer caps them at the run's length.</summary>
    public int? WarmupSteps { get; init; }
    public double? WarmupRatio { get; init; }
    public double? LabelSmoothing { get; init; }

    public static TaskFamily FamilyOf(TaskKind task) =>
        task is TaskKind.Classification or TaskKind.Regression or TaskKind.QuestionAnswering or TaskKind.MultipleChoice ? TaskFamily.Classification : TaskFamily.Generation;

    /// <summary>
    /// <paramref name="options"/> with every declared value whose flag (--weight-decay, --max-grad-norm, --adam-epsilon,
    /// --warmup-steps / --warmup-ratio, --label-smoothing) <paramref name="userGave"/> says was not given; returns the
    /// flags it set, as "--flag value", for the log.
    /// </summary>
    public (TrainingOptions Options, IReadOnlyList<string> Applied) ApplyTo(TrainingOptions options, Func<string, bool> userGave)
    {
        var applied = new List<string>();
        bool Use<T>(string flag, T? value) where T : struct
        {
            if (value is null || userGave(flag)) return false;
            applied.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{flag} {value}"));
            return true;
        }
        if (Use("--weight-decay", WeightDecay)) options = options with { WeightDecay = WeightDecay!.Value };
        if (Use("--max-grad-norm", MaxGradNorm)) options = options with { MaxGradNorm = MaxGradNorm!.Value };
        if (Use("--adam-epsilon", AdamEpsilon)) options = options with { AdamEpsilon = AdamEpsilon!.Value };
        bool warmupGiven = userGave("--warmup-steps") || userGave("--warmup-ratio");
        if (!warmupGiven && Use("--warmup-steps", WarmupSteps)) options = options with { WarmupSteps = WarmupSteps };
        else if (!warmupGiven && Use("--warmup-ratio", WarmupRatio)) options = options with { WarmupRatio = WarmupRatio!.Value, WarmupSteps = null };
        if (Use("--label-smoothing", LabelSmoothing)) options = options with { LabelSmoothing = LabelSmoothing!.Value };
        return (options, applied);
    }
}
