using SparseTune.Training;

namespace SparseTune.Tests.Support;

/// <summary>Calls back on the reporting thread (Progress&lt;T&gt; would post to the thread pool).</summary>
public sealed class RecordingProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value) => report(value);
}

/// <summary>Simulates a crash: throws <see cref="OperationCanceledException"/> when training step <paramref name="step"/> is reported.</summary>
public sealed class CrashAtStep(int step) : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value)
    {
        if (value.Phase == "train" && value.Step == step) throw new OperationCanceledException($"simulated crash at step {step}");
    }
}
