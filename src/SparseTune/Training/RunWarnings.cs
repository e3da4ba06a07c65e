using System.Globalization;

namespace SparseTune.Training;

/// <summary>
/// Signs that a run collapsed although it ended normally: a final evaluation no better than the untuned model, or a
/// smoothed training loss that ends no lower than it began. Said at the end of the run and in report.json.
/// </summary>
public static class RunWarnings
{
    /// <param name="mainMetric">The metric the evaluations are ranked by; null: the task's (<see cref="Metrics.MetricSet.MainMetric"/>).</param>
    public static IReadOnlyList<string> For(TrainingResult result, TaskKind task, double learningRate, string? mainMetric = null)
    {
        var warnings = new List<string>();
        string lr = learningRate.ToString("G3", CultureInfo.InvariantCulture);
        string metric = mainMetric ?? Metrics.MetricSet.MainMetric(task);
        if (result.BaselineEval is { } baseline && baseline.TryGetValue(metric, out double before) && result.Eval.TryGetValue(metric, out double after)
            && double.IsFinite(before) && double.IsFinite(after))
        {
            bool noBetter = Metrics.MetricSet.GoalOf(metric) == MetricGoal.Minimize ? after >= before : after <= before;
            if (noBetter)
                warnings.Add(string.Create(CultureInfo.InvariantCulture,
                    $"the final {metric} {after:0.0000} is no better than the untuned model's {before:0.0000}: the run may have collapsed; the learning rate ({lr}) is the usual cause, try a lower --lr"));
        }
        var losses = result.LossCurve.Select(l => l.Loss).Where(double.IsFinite).ToList();
        if (losses.Count >= 10)
        {
            // Means of the first and last tenth of the steps smooth out batch-to-batch noise.
            int window = Math.Max(1, losses.Count / 10);
            double first = losses.Take(window).Average(), last = losses.TakeLast(window).Average();
            if (last >= first)
                warnings.Add(string.Create(CultureInfo.InvariantCulture,
                    $"the training loss ended at {last:0.0000} (mean of the last {window} steps), no lower than it began ({first:0.0000}): the run did not learn; the learning rate ({lr}) is the usual cause, try a lower --lr"));
        }
        return warnings;
    }
}
