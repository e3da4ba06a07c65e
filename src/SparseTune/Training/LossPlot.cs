using System.Globalization;
using System.Text;

namespace SparseTune.Training;

/// <summary>
/// Writes the training-loss curve (left axis) and one eval metric (right axis) as a standalone SVG file.
/// Hand-written because the chart libraries on NuGet pull native renderers; an SVG opens in any browser.
/// </summary>
public static class LossPlot
{
    const int Width = 720, Height = 400, Left = 70, Right = 70, Top = 40, Bottom = 50;

    public static void WriteSvg(string path, IReadOnlyList<(int Step, double Loss)> loss,
        IReadOnlyList<(int Step, double Value)> metric, string metricName, string title)
    {
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{Height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{Escape(title)}</text>\n");
        int plotW = Width - Left - Right, plotH = Height - Top - Bottom;
        svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{Left}\" y=\"{Top}\" width=\"{plotW}\" height=\"{plotH}\" fill=\"none\" stroke=\"#888\"/>\n");

        var finiteLoss = loss.Where(p => double.IsFinite(p.Loss)).ToList();
        int maxStep = Math.Max(1, Math.Max(finiteLoss.Count > 0 ? finiteLoss.Max(p => p.Step) : 1, metric.Count > 0 ? metric.Max(p => p.Step) : 1));
        double X(int step) => Left + plotW * (double)step / maxStep;
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left + plotW / 2}\" y=\"{Height - 12}\" text-anchor=\"middle\">optimizer step (0 – {maxStep})</text>\n");

        if (finiteLoss.Count > 0)
        {
            var (lo, hi) = Range(finiteLoss.Select(p => p.Loss));
            double Y(double v) => Top + plotH * (1 - (v - lo) / (hi - lo));
            Polyline(svg, finiteLoss.Select(p => (X(p.Step), Y(p.Loss))), "#1f77b4");
            Axis(svg, Left - 8, "end", lo, hi, Y, "#1f77b4");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Left}\" y=\"{Top - 8}\" fill=\"#1f77b4\">train loss</text>\n");
        }
        if (metric.Count > 0)
        {
            var (lo, hi) = Range(metric.Select(p => p.Value));
            double Y(double v) => Top + plotH * (1 - (v - lo) / (hi - lo));
            Polyline(svg, metric.Select(p => (X(p.Step), Y(p.Value))), "#d62728");
            foreach (var p in metric)
                svg.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{X(p.Step):F1}\" cy=\"{Y(p.Value):F1}\" r=\"3\" fill=\"#d62728\"/>\n");
            Axis(svg, Width - Right + 8, "start", lo, hi, Y, "#d62728");
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{Width - Right}\" y=\"{Top - 8}\" text-anchor=\"end\" fill=\"#d62728\">eval {Escape(metricName)}</text>\n");
        }
        svg.Append("</svg>\n");
        IO.AtomicFile.WriteAllText(path, svg.ToString());
    }

    static (double Lo, double Hi) Range(IEnumerable<double> values)
    {
        var list = values.ToList();
        double lo = list.Min(), hi = list.Max();
        if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
        double pad = 0.05 * (hi - lo);
        return (lo - pad, hi + pad);
    }

    static void Polyline(StringBuilder svg, IEnumerable<(double X, double Y)> points, string color)
    {
        string joined = string.Join(" ", points.Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.X:F1},{p.Y:F1}")));
        svg.Append(CultureInfo.InvariantCulture, $"<polyline points=\"{joined}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"/>\n");
    }

    static void Axis(StringBuilder svg, int x, string anchor, double lo, double hi, Func<double, double> y, string color)
    {
        for (int i = 0; i <= 4; i++)
        {
            double v = lo + (hi - lo) * i / 4;
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{x}\" y=\"{y(v) + 4:F1}\" text-anchor=\"{anchor}\" fill=\"{color}\">{v:G4}</text>\n");
        }
    }

    static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;");
}
