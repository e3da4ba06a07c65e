using System.Globalization;
using System.Text;
using SparseTune.Training;
using SparseTune.Tuners;

namespace SparseTune.Benchmarks;

/// <summary>Mean and spread of one arm over seeds.</summary>
public sealed record AccuracyRow(string Label, string Method, long TrainableParameters, double WeightSparsity, string Metric,
    double Mean, double Std, IReadOnlyList<double> Values, double BaselineMean, double WallSecondsMean);

/// <summary>
/// `sparsetune bench accuracy`: fine-tunes one model on one dataset with every arm over several seeds through
/// the same <see cref="FineTuneJob"/> users run, and summarises the first eval metric as mean ± sample std.
/// </summary>
public static class AccuracyBenchmark
{
    /// <summary>
    /// Every chosen method's arms (<see cref="MethodDescriptor.AccuracyArms"/>) for a model of this size: SIFT at 1%
    /// against LoRA whose rank gives about the same trainable count, PST at its paper's sparsities, full fine-tuning.
    /// </summary>
    public static IReadOnlyList<AccuracyArm> Arms(AccuracyBudget budget, IReadOnlyList<string> methods) =>
        methods.SelectMany(m => MethodRegistry.Get(m).AccuracyArms(budget)).ToList();

    public static List<AccuracyRow> Run(FineTuneOptions template, IReadOnlyList<AccuracyArm> arms, IReadOnlyList<int> seeds,
        Func<string, double> defaultLearningRate, Action<string>? log = null)
    {
        var rows = new List<AccuracyRow>();
        foreach (var arm in arms)
        {
            var values = new List<double>();
            var baselines = new List<double>();
            var walls = new List<double>();
            long trainable = 0;
            double sparsity = 0;
            string metric = "";
            foreach (int seed in seeds)
            {
                string output = Path.Combine(template.Training.OutputDirectory, $"{arm.Method}-{Slug(arm.Label)}-seed{seed}");
                var options = template with
                {
                    Method = arm.Method,
                    MethodOptions = arm.Options,
                    Training = template.Training with { Seed = seed, OutputDirectory = output, LearningRate = arm.LearningRate ?? defaultLearningRate(arm.Method) },
                };
                var outcome = FineTuneJob.Run(options);
                var report = outcome.Report;
                metric = report.Eval.Keys.First();
                values.Add(report.Eval[metric]);
                if (report.BaselineEval is { } b && b.TryGetValue(metric, out var bv)) baselines.Add(bv);
                walls.Add(report.WallSeconds);
                trainable = report.TrainableParameters;
                sparsity = report.WeightSparsity;
                log?.Invoke($"{arm.Label} seed {seed}: {metric} {report.Eval[metric]:0.0000} ({report.WallSeconds:0} s)");
            }
            rows.Add(new AccuracyRow(arm.Label, arm.Method, trainable, sparsity, metric, values.Average(), SampleStd(values), values,
                baselines.Count > 0 ? baselines.Average() : double.NaN, walls.Average()));
        }
        return rows;
    }

    public static double SampleStd(IReadOnlyList<double> values)
    {
        if (values.Count < 2) return 0;
        double mean = values.Average();
        return Math.Sqrt(values.Sum(v => (v - mean) * (v - mean)) / (values.Count - 1));
    }

    static string Slug(string label) => new(label.Select(c => char.IsLetterOrDigit(c) ? c : '-').ToArray());

    /// <summary>Two scatter panels: metric vs trainable parameters (log scale) and metric vs final weight sparsity.</summary>
    public static void WritePlot(string path, IReadOnlyList<AccuracyRow> rows)
    {
        const int panelW = 360, h = 320, top = 40, bottom = 50, left = 60, gap = 60;
        int width = left + 2 * panelW + gap + 20;
        var svg = new StringBuilder();
        void Add(FormattableString s) => svg.Append(s.ToString(CultureInfo.InvariantCulture)).Append('\n');
        Add($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">");
        Add($"<rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        string metric = rows.FirstOrDefault()?.Metric ?? "metric";
        double yLo = rows.Min(r => r.Mean - r.Std), yHi = rows.Max(r => r.Mean + r.Std);
        if (yHi - yLo < 1e-9) { yLo -= 0.05; yHi += 0.05; }
        double pad = 0.1 * (yHi - yLo); yLo -= pad; yHi += pad;
        string[] colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
        for (int panel = 0; panel < 2; panel++)
        {
            int x0 = left + panel * (panelW + gap), plotH = h - top - bottom;
            Func<AccuracyRow, double> xOf = panel == 0 ? r => Math.Log10(Math.Max(1, r.TrainableParameters)) : r => r.WeightSparsity;
            double xLo = rows.Min(xOf), xHi = rows.Max(xOf);
            if (xHi - xLo < 1e-9) { xLo -= 0.5; xHi += 0.5; }
            double xPad = 0.1 * (xHi - xLo); xLo -= xPad; xHi += xPad;
            double X(double v) => x0 + panelW * (v - xLo) / (xHi - xLo);
            double Y(double v) => top + plotH * (1 - (v - yLo) / (yHi - yLo));
            Add($"<rect x=\"{x0}\" y=\"{top}\" width=\"{panelW}\" height=\"{plotH}\" fill=\"none\" stroke=\"#888\"/>");
            string xLabel = panel == 0 ? "trainable parameters (log10)" : "final weight sparsity";
            Add($"<text x=\"{x0 + panelW / 2}\" y=\"{h - 12}\" text-anchor=\"middle\">{xLabel}</text>");
            Add($"<text x=\"{x0}\" y=\"{top - 10}\">{metric} (mean ± std over seeds)</text>");
            for (int i = 0; i <= 4; i++)
            {
                double v = yLo + (yHi - yLo) * i / 4;
                Add($"<text x=\"{x0 - 6}\" y=\"{Y(v) + 4:F1}\" text-anchor=\"end\">{v:0.000}</text>");
            }
            for (int i = 0; i < rows.Count; i++)
            {
                var r = rows[i];
                string c = colors[i % colors.Length];
                double x = X(xOf(r));
                Add($"<line x1=\"{x:F1}\" x2=\"{x:F1}\" y1=\"{Y(r.Mean - r.Std):F1}\" y2=\"{Y(r.Mean + r.Std):F1}\" stroke=\"{c}\"/>");
                Add($"<circle cx=\"{x:F1}\" cy=\"{Y(r.Mean):F1}\" r=\"4\" fill=\"{c}\"/>");
                Add($"<text x=\"{x + 6:F1}\" y=\"{Y(r.Mean) - 6:F1}\" fill=\"{c}\">{r.Label}</text>");
            }
        }
        Add($"</svg>");
        IO.AtomicFile.WriteAllText(path, svg.ToString());
    }
}
