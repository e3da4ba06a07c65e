using SparseTune.Models;
using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Tuners.Dsee;

/// <summary>
/// DSEE's update of one block of output rows of a layer: the query or the value projection, or (GPT-2) the query or
/// value block of the fused c_attn. ΔW_block = scaling · (B·A + S⊙Ω), with S stored as N values at N fixed flat
/// indices (row-major into the block's (rows, in) slice of W), like SIFT's adapter, not as a dense masked matrix.
/// </summary>
public sealed class DseeBlock : IDisposable
{
    long[] support = [];
    Tensor? supportRows, supportColumns;    // the support split into output rows and input columns, for the forward

    internal DseeBlock(QkvPart part, long rowStart, long rows, long inFeatures, int rank, int entries, ScalarType dtype, Device device)
    {
        Part = part;
        RowStart = rowStart;
        Rows = rows;
        InFeatures = inFeatures;
        // Created outside any caller's dispose scope: the block owns these until Dispose.
        A = new Parameter(empty(rank, inFeatures, dtype: dtype, device: device), requires_grad: true);
        A.DetachFromDisposeScope();
        using (no_grad()) nn.init.normal_(A, 0, 0.02);
        B = new Parameter(zeros(rows, rank, dtype: dtype, device: device), requires_grad: true);
        B.DetachFromDisposeScope();
        Values = new Parameter(zeros(entries, dtype: dtype, device: device), requires_grad: true);
        Values.DetachFromDisposeScope();
    }

    /// <summary>Query or value.</summary>
    public QkvPart Part { get; }

    /// <summary>The block is rows RowStart … RowStart + Rows − 1 of the layer's weight (all of q_proj; a third of c_attn).</summary>
    public long RowStart { get; private set; }
    public long Rows { get; private set; }
    public long InFeatures { get; private set; }

    /// <summary>lora_A (r, in), N(0, 0.02²) at the start.</summary>
    public Parameter A { get; private set; }

    /// <summary>lora_B (rows, r), zero at the start.</summary>
    public Parameter B { get; private set; }

    /// <summary>S on Ω: one value per support index, zero at the start.</summary>
    public Parameter Values { get; private set; }

    /// <summary>Ω: ascending flat indices into the block's (rows, in) slice; empty until chosen.</summary>
    public IReadOnlyList<long> Support => support;

    /// <summary>True once Ω is set (it has as many indices as S has values).</summary>
    public bool HasSupport => support.Length == Values.shape[0] && supportRows is not null;

    /// <summary>
    /// Sets Ω. When the count differs from S's (a checkpoint written after head pruning dropped entries), S becomes a
    /// new zero vector of the right length; call this before the optimizer is built.
    /// </summary>
    public void SetSupport(IReadOnlyList<long> flatIndices)
    {
        long[] sorted = flatIndices.Order().ToArray();
        long size = Rows * InFeatures;
        if (sorted.Any(i => i < 0 || i >= size)) throw new ArgumentException($"support index outside [0, {size}) for a {Rows}×{InFeatures} block");
        if (sorted.Distinct().Count() != sorted.Length) throw new ArgumentException("support indices repeat");
        if (sorted.Length != Values.shape[0])
        {
            var old = Values;
            Values = new Parameter(zeros(sorted.Length, dtype: old.dtype, device: old.device), requires_grad: old.requires_grad);
            Values.DetachFromDisposeScope();
            old.Dispose();
        }
        support = sorted;
        supportRows?.Dispose();
        supportColumns?.Dispose();
        supportRows = tensor(sorted.Select(i => i / InFeatures).ToArray(), device: Values.device).DetachFromDisposeScope();
        supportColumns = tensor(sorted.Select(i => i % InFeatures).ToArray(), device: Values.device).DetachFromDisposeScope();
    }

    /// <summary>B·A + S⊙Ω for input <paramref name="x"/> (…, in): (…, rows), unscaled. S's path is a gather and an index_add.</summary>
    internal Tensor Path(Tensor x, ScalarType? compute = null)
    {
        Tensor z = MixedPrecision.Linear(MixedPrecision.Linear(x, A, null, compute), B, null, compute);   // (…, in) → (…, r) → (…, rows)
        if (supportRows is not null && support.Length > 0)
        {
            long last = x.dim() - 1;
            using Tensor picked = x.index_select(last, supportColumns!).mul(Values);   // (…, N): x[col_i]·s_i
            z.index_add_(last, supportRows, MixedPrecision.To(picked, z.dtype), 1.0);   // z[row_i] += x[col_i]·s_i
        }
        return z;
    }

    /// <summary>scaling · (B·A + S⊙Ω), shaped (rows, in); a new tensor without autograd history.</summary>
    public Tensor Delta(double scaling)
    {
        using var _ = no_grad();
        using Tensor indices = tensor(support, device: Values.device);
        return DseeUpdate.BlockDelta(A, B, indices, Values, scaling);
    }

    /// <summary>Output rows kept (local to the block, ascending): B's rows follow; S entries in removed rows go, the rest are renumbered.</summary>
    internal void KeepRows(long[] localRows, long newRowStart)
    {
        var newRowOf = localRows.Select((row, position) => (row, position)).ToDictionary(p => p.row, p => (long)p.position);
        var keptEntries = new List<long>();
        var renumbered = new List<long>();
        for (int i = 0; i < support.Length; i++)
        {
            if (!newRowOf.TryGetValue(support[i] / InFeatures, out long row)) continue;
            keptEntries.Add(i);
            renumbered.Add(row * InFeatures + support[i] % InFeatures);
        }
        using (Tensor rows = tensor(localRows, device: B.device)) B = Cut(B, 0, rows);
        if (HasSupport)
            using (Tensor entries = tensor(keptEntries.ToArray(), dtype: ScalarType.Int64, device: Values.device)) Values = Cut(Values, 0, entries);
        RowStart = newRowStart;
        Rows = localRows.Length;
        if (support.Length > 0) SetSupport(renumbered);
    }

    /// <summary>Input columns kept (ascending): A's columns follow; S entries in removed columns go, the rest are renumbered.</summary>
    internal void KeepColumns(long[] columns)
    {
        var newColumnOf = columns.Select((column, position) => (column, position)).ToDictionary(p => p.column, p => (long)p.position);
        var keptEntries = new List<long>();
        var renumbered = new List<long>();
        for (int i = 0; i < support.Length; i++)
        {
            if (!newColumnOf.TryGetValue(support[i] % InFeatures, out long column)) continue;
            keptEntries.Add(i);
            renumbered.Add(support[i] / InFeatures * columns.Length + column);
        }
        using (Tensor kept = tensor(columns, device: A.device)) A = Cut(A, 1, kept);
        if (HasSupport)
            using (Tensor entries = tensor(keptEntries.ToArray(), dtype: ScalarType.Int64, device: Values.device)) Values = Cut(Values, 0, entries);
        InFeatures = columns.Length;
        if (support.Length > 0) SetSupport(renumbered);
    }

    /// <summary>A sliced copy (recorded in <see cref="ParameterLineage"/>, so AdamW's moments follow); the old one is disposed.</summary>
    static Parameter Cut(Parameter source, long dim, Tensor kept)
    {
        Parameter sliced = ParameterLineage.Slice(source, dim, kept);
        source.Dispose();
        return sliced;
    }

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
        Values.Dispose();
        supportRows?.Dispose();
        supportColumns?.Dispose();
    }
}

/// <summary>
/// DSEE on one linear layer: the frozen W (possibly masked by pruning) plus the dually sparse update of its query
/// and/or value rows.
/// <code>
///   x ─────────────── W⊙M, b ─────────────────────────┐
///   │                                                 + ──► y     (rows of the block only)
///   ├─ A (r, in) ─► B (rows, r) ──┐                   │
///   └─ gather x[col_i] · s_i ─────+─► · alpha/r ──────┘
/// </code>
/// B and S start at zero, so an untrained adapter leaves the layer's output unchanged, exactly. Once merged
/// (W += ΔW) the forward pass is the plain linear layer.
/// </summary>
public sealed class DseeAdapter : ILinearAdapter
{
    readonly List<DseeBlock> blocks;

    /// <param name="blocks">The blocks of output rows to update: (part, first row, row count).</param>
    public DseeAdapter(TunableLinear layer, IReadOnlyList<(QkvPart Part, long RowStart, long Rows)> blocks, int rank, double alpha, int sparseEntries)
    {
        if (rank < 1) throw new ArgumentOutOfRangeException(nameof(rank), rank, "DSEE rank must be at least 1");
        Scaling = alpha / rank;
        this.blocks = blocks.Select(b => new DseeBlock(b.Part, b.RowStart, b.Rows, layer.InFeatures, rank, sparseEntries, layer.weight.dtype, layer.weight.device)).ToList();
    }

    /// <summary>alpha / r, on both parts of the update.</summary>
    public double Scaling { get; }

    public IReadOnlyList<DseeBlock> Blocks => blocks;

    /// <summary>True while ΔW is folded into the layer's weight.</summary>
    public bool Merged { get; private set; }

    public Tensor Forward(TunableLinear layer, Tensor x)
    {
        using var scope = NewDisposeScope();
        Tensor result = MixedPrecision.Linear(x, layer.weight, layer.bias, layer.ComputeType);
        if (Merged) return result.MoveToOuterDisposeScope();
        long last = x.dim() - 1;
        foreach (var block in blocks)
            result.narrow(last, block.RowStart, block.Rows).add_(block.Path(x, layer.ComputeType), Scaling);
        return result.MoveToOuterDisposeScope();
    }

    /// <summary>ΔW shaped like W (out, in): the blocks' updates, zero in other rows (GPT-2's key block).</summary>
    public Tensor DeltaWeight(TunableLinear layer)
    {
        using var _ = no_grad();
        var delta = zeros_like(layer.weight);
        foreach (var block in blocks)
        {
            using var part = block.Delta(Scaling);
            using var rows = delta.narrow(0, block.RowStart, block.Rows);
            rows.copy_(part);
        }
        return delta;
    }

    /// <summary>W[block rows] += ΔW_block, in the same operations as <see cref="DseeUpdate.Apply"/>; the forward then uses W alone.</summary>
    public void Merge(TunableLinear layer)
    {
        if (Merged) return;
        using var _ = no_grad();
        foreach (var block in blocks)
        {
            using var part = block.Delta(Scaling);
            using var rows = layer.weight.narrow(0, block.RowStart, block.Rows);
            rows.add_(part);
        }
        Merged = true;
    }

    /// <summary>DSEE follows head pruning: B rows, S entries and the support shrink with the layer.</summary>
    public bool CanFollowResize => !Merged;

    public void KeepRows(TunableLinear layer, Tensor rows)
    {
        if (Merged) throw new InvalidOperationException("DSEE cannot resize a merged adapter");
        long[] kept;
        using (Tensor asLong = rows.to_type(ScalarType.Int64)) kept = asLong.data<long>().ToArray();
        Array.Sort(kept);
        foreach (var block in blocks)
        {
            long[] local = kept.Where(r => r >= block.RowStart && r < block.RowStart + block.Rows).Select(r => r - block.RowStart).ToArray();
            block.KeepRows(local, kept.Count(r => r < block.RowStart));
        }
    }

    public void KeepColumns(TunableLinear layer, Tensor columns)
    {
        if (Merged) throw new InvalidOperationException("DSEE cannot resize a merged adapter");
        long[] kept;
        using (Tensor asLong = columns.to_type(ScalarType.Int64)) kept = asLong.data<long>().ToArray();
        Array.Sort(kept);
        foreach (var block in blocks) block.KeepColumns(kept);
    }

    /// <summary>Per block: "query.lora_A", "query.lora_B", "query.sparse_values" (or value.…).</summary>
    public IEnumerable<(string Name, Parameter Parameter)> TrainableParameters()
    {
        foreach (var block in blocks)
        {
            string part = DseeUpdate.PartName(block.Part);
            yield return ($"{part}.lora_A", block.A);
            yield return ($"{part}.lora_B", block.B);
            yield return ($"{part}.sparse_values", block.Values);
        }
    }

    public void Dispose()
    {
        foreach (var block in blocks) block.Dispose();
    }
}
