namespace SparseTune.Training;

/// <summary>Which way a metric improves.</summary>
public enum MetricGoal { Maximize, Minimize }

/// <summary>What one evaluation means for the run.</summary>
public enum EvaluationVerdict
{
    /// <summary>The best so far (the first finite value always is).</summary>
    Improved,
    /// <summary>Not better than the best; training goes on.</summary>
    Continue,
    /// <summary>Not better for <see cref="EarlyStopping.Patience"/> evaluations in a row: training stops here.</summary>
    Stop,
}

/// <summary>The tracker's state, as a checkpoint carries it.</summary>
public sealed record EarlyStoppingState(int? BestStep, double BestValue, int EvaluationsSinceBest, int? StoppedAtStep);

/// <summary>
/// The best evaluation so far and the early-stopping rule, as transformers' EarlyStoppingCallback counts: an evaluation
/// improves when its metric is strictly better than the best so far (larger for <see cref="MetricGoal.Maximize"/>,
/// smaller for <see cref="MetricGoal.Minimize"/>); after <see cref="Patience"/> evaluations in a row without improvement
/// the run stops. A value that is not finite never improves. Without a patience it only tracks the best (for --keep-best).
/// Pure: it sees steps and numbers, never a model.
/// </summary>
public sealed class EarlyStopping
{
    public EarlyStopping(MetricGoal goal, int? patience = null)
    {
        if (patience is < 1) throw new ArgumentOutOfRangeException(nameof(patience), "patience must be at least 1");
        Goal = goal;
        Patience = patience;
    }

    public MetricGoal Goal { get; }

    /// <summary>Evaluations in a row without improvement that stop the run; null: never stop.</summary>
    public int? Patience { get; }

    /// <summary>Step of the best evaluation; null before the first finite one.</summary>
    public int? BestStep { get; private set; }

    public double BestValue { get; private set; } = double.NaN;

    public int EvaluationsSinceBest { get; private set; }

    /// <summary>The step whose evaluation stopped the run; null while it goes on.</summary>
    public int? StoppedAtStep { get; private set; }

    /// <summary>Takes the evaluation after <paramref name="step"/> optimizer steps; once stopped, every further call says Stop.</summary>
    public EvaluationVerdict Observe(int step, double metric)
    {
        if (StoppedAtStep is not null) return EvaluationVerdict.Stop;
        if (IsBetter(metric))
        {
            BestStep = step;
            BestValue = metric;
            EvaluationsSinceBest = 0;
            return EvaluationVerdict.Improved;
        }
        EvaluationsSinceBest++;
        if (EvaluationsSinceBest >= Patience)
        {
            StoppedAtStep = step;
            return EvaluationVerdict.Stop;
        }
        return EvaluationVerdict.Continue;
    }

    /// <summary>True when <paramref name="metric"/> would improve on the best so far.</summary>
    public bool IsBetter(double metric) =>
        double.IsFinite(metric) && (BestStep is null || (Goal == MetricGoal.Maximize ? metric > BestValue : metric < BestValue));

    /// <summary>Forgets the best and the count (the model it described no longer exists: a method changed its structure).</summary>
    public void Reset()
    {
        BestStep = null;
        BestValue = double.NaN;
        EvaluationsSinceBest = 0;
    }

    public EarlyStoppingState State => new(BestStep, BestValue, EvaluationsSinceBest, StoppedAtStep);

    /// <summary>Continues from a checkpoint's state.</summary>
    public void Restore(EarlyStoppingState state)
    {
        BestStep = state.BestStep;
        BestValue = state.BestStep is null ? double.NaN : state.BestValue;
        EvaluationsSinceBest = state.EvaluationsSinceBest;
        StoppedAtStep = state.StoppedAtStep;
    }
}
