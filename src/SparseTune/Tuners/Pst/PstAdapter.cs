using SparseTune.Nn;
using SparseTune.Tuners.Masking;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Tuners.Pst;

/// <summary>
/// The PST tensors of one row block of a layer, as the original's SparseLinear holds them for one nn.Linear:
/// U (rows, r), V (r, in), A (rows, r'), B (r', in), R (rows), C (in). A plain layer has one; GPT-2's fused c_attn has
/// three (q, k, v), so each projection gets its own update and importance as the original's separate layers do.
/// </summary>
public sealed class PstFactors : IDisposable
{
    internal PstFactors(string name, long rowOffset, long rows, long inFeatures, PstOptions options, ScalarType dtype, Device device)
    {
        Name = name;
        RowOffset = rowOffset;
        Rows = rows;
        // The original's initialisation: U ~ N(0, 1), V = 0, A ~ N(0, 1), B = 0, R = C = 0: the untrained layer is W
        // masked by magnitude.
        U = NewParameter(randn(rows, options.UpdateRank, dtype: dtype, device: device));
        V = NewParameter(zeros(options.UpdateRank, inFeatures, dtype: dtype, device: device));
        A = NewParameter(randn(rows, options.ImportanceRank, dtype: dtype, device: device));
        B = NewParameter(zeros(options.ImportanceRank, inFeatures, dtype: dtype, device: device));
        R = NewParameter(zeros(rows, dtype: dtype, device: device));
        C = NewParameter(zeros(inFeatures, dtype: dtype, device: device));

        static Parameter NewParameter(Tensor value)
        {
            // Created outside any caller's dispose scope: the adapter owns these until Dispose.
            var p = new Parameter(value, requires_grad: true);
            p.DetachFromDisposeScope();
            return p;
        }
    }

    /// <summary>"" for a plain layer; "q", "k" or "v" for a block of GPT-2's c_attn (a prefix of the tensor names).</summary>
    public string Name { get; }
    /// <summary>First row of the layer's weight this block covers.</summary>
    public long RowOffset { get; }
    public long Rows { get; }

    /// <summary>weight_U (rows, r).</summary>
    public Parameter U { get; }
    /// <summary>weight_V (r, in).</summary>
    public Parameter V { get; }
    /// <summary>mask_scores_A (rows, r').</summary>
    public Parameter A { get; }
    /// <summary>mask_scores_B (r', in).</summary>
    public Parameter B { get; }
    /// <summary>mask_scores_R (rows): one score per output row.</summary>
    public Parameter R { get; }
    /// <summary>mask_scores_C (in): one score per input column.</summary>
    public Parameter C { get; }

    /// <summary>The six tensors in PstLinearFunction's input order.</summary>
    internal Tensor[] All => [U, V, A, B, R, C];

    /// <summary>This block's rows of an (out, in) tensor, as a view.</summary>
    internal Tensor RowsOf(Tensor matrix) => matrix.narrow(0, RowOffset, Rows);

    /// <summary>Trainable tensors, named as the original's SparseLinear parameters (prefixed by the block name).</summary>
    public IEnumerable<(string Name, Parameter Parameter)> TrainableParameters()
    {
        string prefix = Name.Length == 0 ? "" : Name + ".";
        return [(prefix + "weight_U", U), (prefix + "weight_V", V), (prefix + "mask_scores_A", A), (prefix + "mask_scores_B", B),
            (prefix + "mask_scores_R", R), (prefix + "mask_scores_C", C)];
    }

    public void Dispose()
    {
        foreach (var t in All) t.Dispose();
    }
}

/// <summary>
/// PST on one linear layer. W (out, in) stays frozen; the layer computes with a masked, low-rank-updated weight, per
/// row block g (one block, or q/k/v of GPT-2's fused c_attn, each with its own factors):
/// <code>
///   W'_g = W_g + β·U_g·V_g                              U_g (rows, r), V_g (r, in)            weight update
///   S_g  = |W'_g| + α1·A_g·B_g + α2·(R_g·1ᵀ + 1·C_gᵀ)    A_g (rows, r'), B_g (r', in), R_g, C_g
///   M_g  = top-(1 − s) of S_g per block                 straight-through gradient to S
///   y    = x (W' ⊙ M)ᵀ + b
/// </code>
/// initialised as the original does (<see cref="PstFactors"/>), so the untrained layer is W masked by magnitude.
/// <para>
/// The mask is computed once per optimizer step (lazily, after <see cref="InvalidateMask"/> or a change of
/// <see cref="Sparsity"/>), because S depends only on parameters that change at optimizer steps; every forward
/// still sends gradients to every factor through <see cref="PstLinearFunction"/>.
/// </para>
/// </summary>
public sealed class PstAdapter : ILinearAdapter
{
    readonly List<PstFactors> groups = [];
    Tensor? mask;              // boolean keep mask for the current sparsity and parameters; null when stale
    double sparsity;

    /// <param name="groupNames">
    /// Names of equal consecutive row blocks that each get their own factors and mask (["q", "k", "v"] for GPT-2's fused
    /// c_attn); null: the whole layer is one block.
    /// </param>
    public PstAdapter(TunableLinear layer, PstOptions options, IReadOnlyList<string>? groupNames = null)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems), nameof(options));
        groupNames ??= [""];
        int count = groupNames.Count;
        if (count < 1 || layer.OutFeatures % count != 0)
            throw new ArgumentOutOfRangeException(nameof(groupNames), count, $"cannot split {layer.OutFeatures} rows into {count} equal blocks");
        UpdateScale = options.UpdateScale;
        LowRankScoreScale = options.LowRankScoreScale;
        StructuredScoreScale = options.StructuredScoreScale;
        sparsity = options.InitialSparsity;
        long rows = layer.OutFeatures / count;
        for (int g = 0; g < count; g++)
            groups.Add(new PstFactors(groupNames[g], g * rows, rows, layer.InFeatures, options, layer.weight.dtype, layer.weight.device));
    }

    /// <summary>The factor sets, one per row block, in row order.</summary>
    public IReadOnlyList<PstFactors> Groups => groups;

    /// <summary>Row blocks masked (and factorised) independently.</summary>
    public int MaskGroups => groups.Count;

    PstFactors Single => groups.Count == 1 ? groups[0] : throw new InvalidOperationException($"this layer has {groups.Count} factor sets; use Groups");

    /// <summary>weight_U (out, r) of a one-block layer.</summary>
    public Parameter U => Single.U;
    /// <summary>weight_V (r, in) of a one-block layer.</summary>
    public Parameter V => Single.V;
    /// <summary>mask_scores_A (out, r') of a one-block layer.</summary>
    public Parameter A => Single.A;
    /// <summary>mask_scores_B (r', in) of a one-block layer.</summary>
    public Parameter B => Single.B;
    /// <summary>mask_scores_R (out) of a one-block layer.</summary>
    public Parameter R => Single.R;
    /// <summary>mask_scores_C (in) of a one-block layer.</summary>
    public Parameter C => Single.C;

    public double UpdateScale { get; }
    public double LowRankScoreScale { get; }
    public double StructuredScoreScale { get; }

    /// <summary>The fraction of W pruned in forward passes; setting a new value makes the mask stale.</summary>
    public double Sparsity
    {
        get => sparsity;
        set
        {
            if (!(value >= 0 && value < 1)) throw new ArgumentOutOfRangeException(nameof(value), value, "sparsity must be in [0, 1)");
            if (value == sparsity) return;
            sparsity = value;
            InvalidateMask();
        }
    }

    /// <summary>Marks the cached mask stale (the parameters changed); the next forward recomputes it.</summary>
    public void InvalidateMask()
    {
        mask?.Dispose();
        mask = null;
    }

    /// <summary>The keep mask (bool, out × in) for the current sparsity and parameters; owned by the adapter.</summary>
    public Tensor Mask(TunableLinear layer) => mask ??= KeepMask(layer, sparsity).DetachFromDisposeScope();

    /// <summary>A new keep mask at <paramref name="atSparsity"/> from the current parameters (the cache is untouched).</summary>
    public Tensor KeepMask(TunableLinear layer, double atSparsity)
    {
        using var scope = NewDisposeScope();
        Tensor score = Score(layer);
        return TopKMask.Keep(score, atSparsity, MaskGroups).MoveToOuterDisposeScope();
    }

    /// <summary>W' = W + β·U_g·V_g per block, a new (out, in) tensor (autograd history only if the caller records it).</summary>
    internal static Tensor Effective(Tensor weight, IReadOnlyList<Tensor> factors, int groupCount, float beta)
    {
        Tensor effective = weight.clone();
        long rows = weight.shape[0] / groupCount;
        for (int g = 0; g < groupCount; g++)
            effective.narrow(0, g * rows, rows).addmm_(factors[6 * g], factors[6 * g + 1], beta: 1, alpha: beta);
        return effective;
    }

    Tensor[] AllFactors => groups.SelectMany(g => g.All).ToArray();

    /// <summary>
    /// S = |W + β·U·V| + α1·A·B + α2·(R·1ᵀ + 1·Cᵀ) per block, without autograd history, built in a single (out, in) tensor.
    /// </summary>
    public Tensor Score(TunableLinear layer)
    {
        using var _ = no_grad();
        var score = Effective(layer.weight, AllFactors, groups.Count, (float)UpdateScale).abs_();    // |W'|: data-free part
        foreach (var g in groups)
        {
            using var block = g.RowsOf(score);
            block.addmm_(g.A, g.B, beta: 1, alpha: (float)LowRankScoreScale);                           // low-rank data-driven part
            block.add_(g.R.unsqueeze(1), StructuredScoreScale).add_(g.C.unsqueeze(0), StructuredScoreScale);  // structured part
        }
        return score;
    }

    public Tensor Forward(TunableLinear layer, Tensor x)
    {
        Tensor keep = Mask(layer);
        // Under mixed precision the products run in bf16; the mask, scores and factors stay float32.
        if (layer.ComputeType is { } compute) x = MixedPrecision.To(x, compute);
        if (is_grad_enabled() && TrainableParameters().Any(p => p.Parameter.requires_grad))
            return PstLinearFunction.apply([x, layer.weight, layer.bias!, keep, .. AllFactors, this]);
        using var scope = NewDisposeScope();
        Tensor weight = Effective(layer.weight, AllFactors, groups.Count, (float)UpdateScale).mul_(keep);
        return MixedPrecision.Linear(x, weight, layer.bias, x.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>(W + β·U·V) ⊙ M − W at the current sparsity, shaped like W; no autograd history.</summary>
    public Tensor DeltaWeight(TunableLinear layer)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        Tensor effective = Effective(layer.weight, AllFactors, groups.Count, (float)UpdateScale);
        MaskedWeights.ZeroPruned(effective, Mask(layer));
        return effective.sub_(layer.weight).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The final prune: W ← (W + β·U·V) ⊙ M with M at <paramref name="finalSparsity"/>, pruned entries exact zeros.
    /// Returns the kept flat indices (int64, ascending). The adapter stays attached; the caller detaches it.
    /// </summary>
    public Tensor MergeAndPrune(TunableLinear layer, double finalSparsity)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        Tensor keep = KeepMask(layer, finalSparsity);
        foreach (var g in groups)
        {
            using var block = g.RowsOf(layer.weight);
            block.addmm_(g.U, g.V, beta: 1, alpha: (float)UpdateScale);        // + β·U_g·V_g
        }
        MaskedWeights.ZeroPruned(layer.weight, keep);
        InvalidateMask();
        return keep.reshape(-1).nonzero().view(-1).MoveToOuterDisposeScope();
    }

    /// <summary>Trainable tensors, named as the original's SparseLinear parameters (block-prefixed when the layer has several).</summary>
    public IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() => groups.SelectMany(g => g.TrainableParameters());

    /// <summary>groups·(out/groups + in)·(r + r' + 1): U, V, A, B, R and C of each row block of one (out, in) layer.</summary>
    public static long ParameterCount(long outFeatures, long inFeatures, int updateRank, int importanceRank, int groups = 1) =>
        groups * (outFeatures / groups + inFeatures) * (updateRank + importanceRank + 1);

    public void Dispose()
    {
        foreach (var g in groups) g.Dispose();
        groups.Clear();
        InvalidateMask();
    }
}
