using Spectre.Console;
using SparseTune.Training;

namespace SparseTune.Cli;

/// <summary>
/// Renders trainer progress: a live bar with step, loss, learning rate and tokens/s on a terminal; one line per
/// log interval when output is redirected (CI logs stay readable).
/// </summary>
public sealed class TrainingProgressView : IProgress<TrainingProgress>
{
    ProgressTask? task;
    readonly bool interactive = AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;
    int lastPrinted;

    /// <summary>Runs <paramref name="work"/> with a live progress bar (or plain lines) attached to this view.</summary>
    public T Run<T>(string title, Func<T> work)
    {
        if (!interactive) return work();
        return AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                task = ctx.AddTask(Markup.Escape(title), maxValue: 1);
                return work();
            });
    }

    public void Report(TrainingProgress p)
    {
        switch (p.Phase)
        {
            case "train":
                string line = $"step {p.Step}/{p.TotalSteps}  loss {p.Loss:0.0000}  lr {p.LearningRate:0.00e+0}  {p.TokensPerSecond:0} tok/s";
                if (task is not null)
                {
                    task.MaxValue = p.TotalSteps;
                    task.Value = p.Step;
                    task.Description = Markup.Escape(line);
                }
                else if (p.Step == 1 || p.Step == p.TotalSteps || p.Step - lastPrinted >= Math.Max(1, p.TotalSteps / 20))
                {
                    lastPrinted = p.Step;
                    Console.WriteLine(line);
                }
                break;
            case "eval":
            case "baseline":
                string metrics = string.Join("  ", (p.Eval ?? new Dictionary<string, double>()).Select(kv => $"{kv.Key} {kv.Value:0.0000}"));
                string text = $"{(p.Phase == "baseline" ? "baseline (untuned)" : $"eval at step {p.Step}")}: {metrics}";
                if (task is not null) AnsiConsole.MarkupLine(Markup.Escape(text));
                else Console.WriteLine(text);
                break;
        }
    }
}
