namespace SparseTune.Metrics;

/// <summary>
/// Evaluation metrics, computed as scikit-learn / SciPy do. Empty input gives NaN; so does a correlation with a
/// constant series (SciPy warns and returns nan).
/// </summary>
public static class Metric
{
    /// <summary>Fraction of predictions equal to the labels.</summary>
    public static double Accuracy(IReadOnlyList<int> labels, IReadOnlyList<int> predictions)
    {
        CheckLengths(labels.Count, predictions.Count);
        if (labels.Count == 0) return double.NaN;
        int correct = 0;
        for (int i = 0; i < labels.Count; i++) if (labels[i] == predictions[i]) correct++;
        return (double)correct / labels.Count;
    }

    /// <summary>Unweighted mean of the per-class F1 over the classes in labels ∪ predictions, as
    /// sklearn's <c>f1_score(average="macro")</c>.</summary>
    public static double MacroF1(IReadOnlyList<int> labels, IReadOnlyList<int> predictions)
    {
        CheckLengths(labels.Count, predictions.Count);
        if (labels.Count == 0) return double.NaN;
        var (classes, matrix) = Confusion(labels, predictions);
        double sum = 0;
        for (int c = 0; c < classes.Length; c++)
        {
            long truePositive = matrix[c, c], actual = 0, predicted = 0;
            for (int k = 0; k < classes.Length; k++) { actual += matrix[c, k]; predicted += matrix[k, c]; }
            // F1 = 2TP / (2TP + FP + FN) = 2TP / (actual + predicted); never 0/0 for a class that occurs.
            sum += 2.0 * truePositive / (actual + predicted);
        }
        return sum / classes.Length;
    }

    /// <summary>Matthews correlation coefficient, multiclass (Gorodkin's R_K) as sklearn's <c>matthews_corrcoef</c>:
    /// (c·s − Σ p_k t_k) / √((s² − Σ p_k²)(s² − Σ t_k²)), and 0 when a denominator term is 0.</summary>
    public static double MatthewsCorrelation(IReadOnlyList<int> labels, IReadOnlyList<int> predictions)
    {
        CheckLengths(labels.Count, predictions.Count);
        if (labels.Count == 0) return double.NaN;
        var (classes, matrix) = Confusion(labels, predictions);
        double samples = labels.Count, correct = 0, truePredicted = 0, predictedSquares = 0, trueSquares = 0;
        for (int c = 0; c < classes.Length; c++)
        {
            double t = 0, p = 0;
            for (int k = 0; k < classes.Length; k++) { t += matrix[c, k]; p += matrix[k, c]; }
            correct += matrix[c, c];
            truePredicted += t * p;
            predictedSquares += p * p;
            trueSquares += t * t;
        }
        double covariance = correct * samples - truePredicted;
        double predictedVariance = samples * samples - predictedSquares;
        double trueVariance = samples * samples - trueSquares;
        if (predictedVariance * trueVariance == 0) return 0;
        return covariance / Math.Sqrt(trueVariance * predictedVariance);
    }

    /// <summary>Pearson's correlation coefficient.</summary>
    public static double Pearson(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        CheckLengths(x.Count, y.Count);
        int n = x.Count;
        if (n < 2) return double.NaN;
        double meanX = 0, meanY = 0;
        for (int i = 0; i < n; i++) { meanX += x[i]; meanY += y[i]; }
        meanX /= n; meanY /= n;
        double sxy = 0, sxx = 0, syy = 0;
        for (int i = 0; i < n; i++)
        {
            double dx = x[i] - meanX, dy = y[i] - meanY;
            sxy += dx * dy; sxx += dx * dx; syy += dy * dy;
        }
        if (sxx == 0 || syy == 0) return double.NaN;
        return Math.Clamp(sxy / Math.Sqrt(sxx * syy), -1, 1);
    }

    /// <summary>Spearman's rank correlation: Pearson's over the ranks, ties given their average rank.</summary>
    public static double Spearman(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        CheckLengths(x.Count, y.Count);
        return Pearson(Ranks(x), Ranks(y));
    }

    /// <summary>Perplexity from the mean negative log-likelihood per token (natural log): exp(nll).</summary>
    public static double Perplexity(double meanTokenNll) => Math.Exp(meanTokenNll);

    /// <summary>1-based ranks, ties averaged (SciPy's <c>rankdata(method="average")</c>).</summary>
    public static double[] Ranks(IReadOnlyList<double> values)
    {
        int n = values.Count;
        int[] order = Enumerable.Range(0, n).OrderBy(i => values[i]).ToArray();
        var ranks = new double[n];
        for (int start = 0; start < n;)
        {
            int end = start;
            while (end + 1 < n && values[order[end + 1]] == values[order[start]]) end++;
            double rank = (start + end) / 2.0 + 1;
            for (int k = start; k <= end; k++) ranks[order[k]] = rank;
            start = end + 1;
        }
        return ranks;
    }

    /// <summary>The sorted classes of labels ∪ predictions and the confusion matrix [true, predicted] over them.</summary>
    static (int[] Classes, long[,] Matrix) Confusion(IReadOnlyList<int> labels, IReadOnlyList<int> predictions)
    {
        int[] classes = labels.Concat(predictions).Distinct().Order().ToArray();
        var index = new Dictionary<int, int>();
        for (int i = 0; i < classes.Length; i++) index[classes[i]] = i;
        var matrix = new long[classes.Length, classes.Length];
        for (int i = 0; i < labels.Count; i++) matrix[index[labels[i]], index[predictions[i]]]++;
        return (classes, matrix);
    }

    static void CheckLengths(int a, int b)
    {
        if (a != b) throw new ArgumentException($"the inputs differ in length ({a} and {b})");
    }
}
