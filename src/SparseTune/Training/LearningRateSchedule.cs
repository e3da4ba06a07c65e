namespace SparseTune.Training;

public enum ScheduleKind { Linear, Cosine, Constant }

/// <summary>
/// Learning rate at an optimizer step, as transformers' get_{linear,cosine}_schedule_with_warmup:
/// a linear warm-up from 0 to the peak over <c>warmup</c> steps, then linear decay to 0 or a half cosine.
/// </summary>
public sealed record LearningRateSchedule(ScheduleKind Kind, double PeakLearningRate, int WarmupSteps, int TotalSteps)
{
    public double At(int step)
    {
        if (step < WarmupSteps) return PeakLearningRate * step / Math.Max(1, WarmupSteps);
        if (Kind == ScheduleKind.Constant) return PeakLearningRate;
        double progress = (double)(step - WarmupSteps) / Math.Max(1, TotalSteps - WarmupSteps);
        progress = Math.Clamp(progress, 0, 1);
        return Kind == ScheduleKind.Linear
            ? PeakLearningRate * (1 - progress)
            : PeakLearningRate * 0.5 * (1 + Math.Cos(Math.PI * progress));
    }
}
