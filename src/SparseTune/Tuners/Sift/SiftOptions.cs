namespace SparseTune.Tuners.Sift;

/// <summary>How SIFT picks the k components of each matrix it updates.</summary>
public enum SiftSelection
{
    /// <summary>Top-k of |∂L/∂W| summed over the first SelectionBatches batches of training (the paper's method).</summary>
    Gradient,
    /// <summary>k components uniformly at random (the paper's comparison).</summary>
    Random,
    /// <summary>Top-k of |W| (the original code's starting point before gradient selection).</summary>
    Magnitude,
}

/// <summary>
/// SIFT options. Defaults follow song-wx/SIFT: 1% of the components of every targeted matrix (and of its bias),
/// indices from the gradient of the first training batch only, which is spent on choosing them.
/// </summary>
public sealed record SiftOptions : IMethodOptions
{
    /// <summary>Fraction x of each targeted matrix that trains: k = min(⌊x · numel(W)⌋ + 1, numel(W)) components, the
    /// original's count (one more than ⌈x·n⌉ would give whenever x·n is whole).</summary>
    public double SparseRate { get; init; } = 0.01;

    /// <summary>Linear layers updated sparsely (PEFT-style name suffixes); null: every linear in the blocks
    /// (llama-family q/k/v/o/gate/up/down; BERT/RoBERTa/GPT-2 attention and FFN).</summary>
    public IReadOnlyList<string>? TargetModules { get; init; }

    public SiftSelection Selection { get; init; } = SiftSelection.Gradient;

    /// <summary>
    /// Micro-batches whose gradients choose the indices: the first ones of training, each spent on choosing (no
    /// gradient reaches the sparse values from them; modules trained in full still learn from them), as the original
    /// code spends its first one. More than one ranks Σ_b |∂L/∂W_b| and holds a score the size of every targeted weight
    /// until the last of them.
    /// </summary>
    public int SelectionBatches { get; init; } = 1;

    /// <summary>
    /// Keeps the targeted layers' biases frozen. Default false: each bias tunes sparsely too, with k_b = min(⌊x·n_b⌋ + 1, n_b)
    /// components chosen like the weight's, because the original matches parameters by substring ("query" also
    /// matches "query.bias").
    /// </summary>
    public bool FreezeBiases { get; init; }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (!(SparseRate > 0 && SparseRate <= 1)) problems.Add("--sparse-rate must be in (0, 1]");
        if (SelectionBatches < 1) problems.Add("--selection-batches must be at least 1");
        return problems;
    }

    /// <summary>k for a matrix of <paramref name="numel"/> components.</summary>
    public long ComponentsFor(long numel) => Math.Min(numel, (long)Math.Floor(SparseRate * numel) + 1);
}
