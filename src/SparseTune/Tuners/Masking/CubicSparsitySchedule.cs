namespace SparseTune.Tuners.Masking;

/// <summary>
/// The cubic sparsity schedule of Zhu &amp; Gupta (2017) as movement pruning and PST use it
/// (alibaba/AliceMind S4/PST/pst/utils.py, schedule_sparsity_ratio):
/// <code>
///   s(t) = initial                                               t ≤ warmup
///   s(t) = final + (initial − final)·(1 − (t − warmup)/(total − warmup − cooldown))³    otherwise, until
///   s(t) = final                                                 t &gt; total − cooldown
/// </code>
/// Warm-up and cool-down are in steps and may be fractional: the original scripts pass ratios of the total
/// (initial_warmup, final_warmup) and compare the step against ratio·total unrounded (<see cref="FromRatios"/>).
/// </summary>
public sealed record CubicSparsitySchedule(double InitialSparsity, double FinalSparsity, double WarmupSteps, double CooldownSteps, int TotalSteps)
{
    /// <summary>The schedule with warm-up and cool-down given as fractions of <paramref name="totalSteps"/>, as the PST scripts do.</summary>
    public static CubicSparsitySchedule FromRatios(double initialSparsity, double finalSparsity, double warmupRatio, double cooldownRatio, int totalSteps) =>
        new(initialSparsity, finalSparsity, warmupRatio * totalSteps, cooldownRatio * totalSteps, totalSteps);

    /// <summary>s(t) after <paramref name="step"/> completed optimizer steps.</summary>
    public double At(double step)
    {
        if (step <= WarmupSteps) return InitialSparsity;
        if (step > TotalSteps - CooldownSteps) return FinalSparsity;
        // Here warmup < step ≤ total − cooldown, so the denominator is positive.
        double remaining = 1 - (step - WarmupSteps) / (TotalSteps - WarmupSteps - CooldownSteps);
        return FinalSparsity + (InitialSparsity - FinalSparsity) * Math.Pow(remaining, 3);
    }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (!(InitialSparsity >= 0 && InitialSparsity < 1)) problems.Add($"initial sparsity must be in [0, 1) (got {InitialSparsity})");
        if (!(FinalSparsity >= 0 && FinalSparsity < 1)) problems.Add($"final sparsity must be in [0, 1) (got {FinalSparsity})");
        if (InitialSparsity > FinalSparsity) problems.Add($"initial sparsity {InitialSparsity} exceeds the final sparsity {FinalSparsity}");
        if (!(WarmupSteps >= 0) || !(CooldownSteps >= 0)) problems.Add("sparsity warm-up and cool-down must not be negative");
        if (TotalSteps < 1) problems.Add($"total steps must be at least 1 (got {TotalSteps})");
        return problems;
    }
}
