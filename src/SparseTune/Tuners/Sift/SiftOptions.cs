namespace SparseTune.Tuners.Sift;

/// <summary>How SIFT picks the k components of each matrix it updates.</summary>
public enum SiftSelection
{
    /// <summary>Top-k of |∂L/∂W| accumulated over the first SelectionBatches batches (the paper's method).</summary>
    Gradient,
    /// <summary>k components uniformly at random (the paper's comparison).</summary>
    Random,
    /// <summary>Top-k of |W| (the original code's starting point before gradient selection).</summary>
    Magnitude,
}

/// <summary>
/// SIFT options. Defaults follow song-wx/SIFT: 1% of the components of every targeted matrix, indices from the
/// gradient of the first batch only.
/// </summary>
public sealed record SiftOptions : IMethodOptions
{
    /// <summary>Fraction x of each targeted matrix that trains: k = ⌈x · numel(W)⌉ components.</summary>
    public double SparseRate { get; init; } = 0.01;

    /// <summary>Linear layers updated sparsely (PEFT-style name suffixes); null: every linear in the blocks
    /// (llama-family q/k/v/o/gate/up/down; BERT/RoBERTa/GPT-2 attention and FFN).</summary>
    public IReadOnlyList<string>? TargetModules { get; init; }

    public SiftSelection Selection { get; init; } = SiftSelection.Gradient;

    /// <summary>Batches whose gradients choose the indices (the original code uses the first one).</summary>
    public int SelectionBatches { get; init; } = 1;

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (!(SparseRate > 0 && SparseRate <= 1)) problems.Add("--sparse-rate must be in (0, 1]");
        if (SelectionBatches < 1) problems.Add("--selection-batches must be at least 1");
        return problems;
    }

    /// <summary>k for a matrix of <paramref name="numel"/> components.</summary>
    public long ComponentsFor(long numel) => Math.Min(numel, (long)Math.Ceiling(SparseRate * numel - 1e-9));
}
