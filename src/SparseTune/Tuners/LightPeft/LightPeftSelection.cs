namespace SparseTune.Tuners.LightPeft;

/// <summary>
/// Light-PEFT's pruning decisions as pure functions of the estimation's numbers, so tests can pin the counts.
/// Every selection removes a COUNT of lowest-scored units, ⌊ratio · n⌋, ties broken towards the lower index. The
/// original thresholds instead (keep the units strictly above np.quantile(scores, ratio), linear interpolation):
/// without ties that removes 1 + ⌊ratio · (n − 1)⌋ units, which differs from ⌊ratio · n⌋ only by one unit at some
/// n (e.g. 16 heads at 1/3: the quantile rule removes 6, this one 5); with ties the original removes every tied unit.
/// A count is what the options promise ("a third of the heads") and what a test can check.
/// </summary>
public static class LightPeftSelection
{
    /// <summary>⌊ratio · n⌋, never all n units (a layer keeps at least one head or neuron; one module and one rank survive).</summary>
    public static int RemovedCount(double ratio, int n) =>
        n <= 0 ? 0 : Math.Clamp((int)Math.Floor(ratio * n + 1e-9), 0, n - 1);

    /// <summary>The indices of the <paramref name="count"/> lowest scores, ties towards the lower index; sorted ascending.</summary>
    public static int[] Lowest(IReadOnlyList<double> scores, int count) =>
        Enumerable.Range(0, scores.Count).OrderBy(i => scores[i]).ThenBy(i => i).Take(count).Order().ToArray();

    /// <summary>
    /// Query heads to remove from one layer, by the raw mask value (no absolute value, as the original). Under
    /// grouped-query attention (<paramref name="groupSize"/> query heads per key/value head) the unit removed is a
    /// whole group, scored by the mean mask of its query heads; ⌊ratio · groups⌋ groups go, and all their query heads
    /// are returned. Group size 1 is the original's per-head rule.
    /// </summary>
    public static int[] HeadsToRemove(IReadOnlyList<float> headMask, int groupSize, double ratio)
    {
        if (groupSize < 1 || headMask.Count % groupSize != 0)
            throw new ArgumentException($"{headMask.Count} heads do not form groups of {groupSize}", nameof(groupSize));
        int groups = headMask.Count / groupSize;
        var groupScores = Enumerable.Range(0, groups)
            .Select(g => Enumerable.Range(g * groupSize, groupSize).Average(h => (double)headMask[h])).ToList();
        return Lowest(groupScores, RemovedCount(ratio, groups))
            .SelectMany(g => Enumerable.Range(g * groupSize, groupSize)).ToArray();
    }

    /// <summary>Each layer loses ⌊ratio · its neurons⌋ of its lowest-masked neurons.</summary>
    public static int[][] NeuronsToRemovePerLayer(IReadOnlyList<float[]> neuronMasks, double ratio) =>
        neuronMasks.Select(m => Lowest(m.Select(v => (double)v).ToList(), RemovedCount(ratio, m.Length))).ToArray();

    /// <summary>
    /// ⌊ratio · all neurons⌋ lowest-masked neurons over the whole model (the original's scripts). A neuron whose removal
    /// would empty its layer is skipped for the next lowest (the original would fail there; never seen in practice).
    /// </summary>
    public static int[][] NeuronsToRemoveGlobally(IReadOnlyList<float[]> neuronMasks, double ratio)
    {
        int total = neuronMasks.Sum(m => m.Length);
        int count = RemovedCount(ratio, total);
        var removed = neuronMasks.Select(_ => new List<int>()).ToArray();
        var order = neuronMasks.SelectMany((m, layer) => m.Select((v, i) => (Value: (double)v, Layer: layer, Index: i)))
            .OrderBy(u => u.Value).ThenBy(u => u.Layer).ThenBy(u => u.Index);
        foreach (var unit in order)
        {
            if (count == 0) break;
            if (removed[unit.Layer].Count == neuronMasks[unit.Layer].Length - 1) continue;
            removed[unit.Layer].Add(unit.Index);
            count--;
        }
        return removed.Select(r => r.Order().ToArray()).ToArray();
    }

    /// <summary>LoRA modules to drop: all but the top <paramref name="keepShare"/> by score (at least one module stays).</summary>
    public static List<string> ModulesToDrop(IReadOnlyList<(string Module, double Score)> scores, double keepShare)
    {
        int drop = RemovedCount(1 - keepShare, scores.Count);
        return Lowest(scores.Select(s => s.Score).ToList(), drop).Select(i => scores[i].Module).ToList();
    }

    /// <summary>
    /// The ranks each module keeps when the top <paramref name="keepShare"/> of all ranks (of all the given modules
    /// together, as the original's global quantile) survive; a module may keep none (it is then dropped).
    /// </summary>
    public static Dictionary<string, int[]> RanksToKeep(IReadOnlyList<(string Module, double[] Scores)> scores, double keepShare)
    {
        var flat = scores.SelectMany(s => s.Scores.Select((v, rank) => (s.Module, Rank: rank, Value: v))).ToList();
        var removed = Lowest(flat.Select(f => f.Value).ToList(), RemovedCount(1 - keepShare, flat.Count)).ToHashSet();
        return scores.ToDictionary(s => s.Module, s => flat.Select((f, i) => (f, i))
            .Where(x => x.f.Module == s.Module && !removed.Contains(x.i)).Select(x => x.f.Rank).ToArray());
    }
}
