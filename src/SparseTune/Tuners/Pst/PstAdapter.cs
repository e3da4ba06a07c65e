using SparseTune.Nn;
using SparseTune.Tuners.Lora;
using SparseTune.Tuners.Masking;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Tuners.Pst;

/// <summary>
/// PST on one linear layer. W (out, in) stays frozen; the layer computes with a masked, low-rank-updated weight:
/// <code>
///   W' = W + β·U·V                                   U (out, r), V (r, in)            weight update
///   S  = |W'| + α1·A·B + α2·(R·1ᵀ + 1·Cᵀ)            A (out, r'), B (r', in), R (out), C (in)
///   M  = top-(1 − s) of S per matrix                 straight-through gradient to S
///   y  = x (W' ⊙ M)ᵀ + b
/// </code>
/// U·V is a <see cref="LoraAdapter"/> used as the low-rank factor pair (U = lora_B, V = lora_A, scaling β),
/// initialised as the original does: U ~ N(0, 1), V = 0 (the opposite sides of LoRA's), A ~ N(0, 1), B = 0,
/// R = C = 0, so the untrained layer is W masked by magnitude.
/// <para>
/// The mask is computed once per optimizer step (lazily, after <see cref="InvalidateMask"/> or a change of
/// <see cref="Sparsity"/>), because S depends only on parameters that change at optimizer steps; every forward
/// still sends gradients to U, V, A, B, R, C through <see cref="PstLinearFunction"/>.
/// </para>
/// </summary>
public sealed class PstAdapter : ILinearAdapter
{
    readonly LoraAdapter update;
    Tensor? mask;              // boolean keep mask for the current sparsity and parameters; null when stale
    double sparsity;

    /// <param name="maskGroups">Equal row blocks masked independently (3 for GPT-2's fused q|k|v c_attn).</param>
    public PstAdapter(TunableLinear layer, PstOptions options, int maskGroups = 1)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems), nameof(options));
        if (maskGroups < 1 || layer.OutFeatures % maskGroups != 0)
            throw new ArgumentOutOfRangeException(nameof(maskGroups), maskGroups, $"cannot split {layer.OutFeatures} rows into {maskGroups} equal blocks");
        UpdateScale = options.UpdateScale;
        LowRankScoreScale = options.LowRankScoreScale;
        StructuredScoreScale = options.StructuredScoreScale;
        MaskGroups = maskGroups;
        sparsity = options.InitialSparsity;

        // LoRA's scaling is alpha / r: alpha = β·r gives the factor β on U·V.
        update = new LoraAdapter(layer, options.UpdateRank, options.UpdateScale * options.UpdateRank, dropout: 0);
        var dtype = layer.weight.dtype;
        var device = layer.weight.device;
        using (no_grad())
        {
            U.normal_();
            V.zero_();
        }
        A = NewParameter(randn(layer.OutFeatures, options.ImportanceRank, dtype: dtype, device: device));
        B = NewParameter(zeros(options.ImportanceRank, layer.InFeatures, dtype: dtype, device: device));
        R = NewParameter(zeros(layer.OutFeatures, dtype: dtype, device: device));
        C = NewParameter(zeros(layer.InFeatures, dtype: dtype, device: device));

        static Parameter NewParameter(Tensor value)
        {
            // Created outside any caller's dispose scope: the adapter owns these until Dispose.
            var p = new Parameter(value, requires_grad: true);
            p.DetachFromDisposeScope();
            return p;
        }
    }

    /// <summary>weight_U (out, r).</summary>
    public Parameter U => update.LoraB;

    /// <summary>weight_V (r, in).</summary>
    public Parameter V => update.LoraA;

    /// <summary>mask_scores_A (out, r').</summary>
    public Parameter A { get; }

    /// <summary>mask_scores_B (r', in).</summary>
    public Parameter B { get; }

    /// <summary>mask_scores_R (out): one score per output row.</summary>
    public Parameter R { get; }

    /// <summary>mask_scores_C (in): one score per input column.</summary>
    public Parameter C { get; }

    public double UpdateScale { get; }
    public double LowRankScoreScale { get; }
    public double StructuredScoreScale { get; }
    public int MaskGroups { get; }

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

    /// <summary>
    /// S = |W + β·U·V| + α1·A·B + α2·(R·1ᵀ + 1·Cᵀ), without autograd history, built in a single (out, in) tensor.
    /// </summary>
    public Tensor Score(TunableLinear layer)
    {
        using var _ = no_grad();
        var score = layer.weight.addmm(U, V, beta: 1, alpha: (float)UpdateScale).abs_();       // |W'|: data-free part
        score.addmm_(A, B, beta: 1, alpha: (float)LowRankScoreScale);                          // low-rank data-driven part
        score.add_(R.unsqueeze(1), StructuredScoreScale).add_(C.unsqueeze(0), StructuredScoreScale);  // structured part
        return score;
    }

    public Tensor Forward(TunableLinear layer, Tensor x)
    {
        Tensor keep = Mask(layer);
        if (is_grad_enabled() && TrainableParameters().Any(p => p.Parameter.requires_grad))
            return PstLinearFunction.apply(x, layer.weight, layer.bias!, U, V, A, B, R, C, keep, this);
        using var scope = NewDisposeScope();
        Tensor weight = layer.weight.addmm(U, V, beta: 1, alpha: (float)UpdateScale).mul_(keep);
        return F.linear(x, weight, layer.bias).MoveToOuterDisposeScope();
    }

    /// <summary>(W + β·U·V) ⊙ M − W at the current sparsity, shaped like W; no autograd history.</summary>
    public Tensor DeltaWeight(TunableLinear layer)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        Tensor effective = layer.weight.addmm(U, V, beta: 1, alpha: (float)UpdateScale);
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
        Tensor delta = update.DeltaWeight(layer);                 // β·U·V
        layer.weight.add_(delta);
        MaskedWeights.ZeroPruned(layer.weight, keep);
        InvalidateMask();
        return keep.reshape(-1).nonzero().view(-1).MoveToOuterDisposeScope();
    }

    /// <summary>Trainable tensors, named as the original's SparseLinear parameters.</summary>
    public IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() =>
        [("weight_U", U), ("weight_V", V), ("mask_scores_A", A), ("mask_scores_B", B), ("mask_scores_R", R), ("mask_scores_C", C)];

    /// <summary>(out + in)·(r + r' + 1): U, V, A, B, R and C of one (out, in) layer.</summary>
    public static long ParameterCount(long outFeatures, long inFeatures, int updateRank, int importanceRank) =>
        (outFeatures + inFeatures) * (updateRank + importanceRank + 1);

    public void Dispose()
    {
        update.Dispose();
        A.Dispose();
        B.Dispose();
        R.Dispose();
        C.Dispose();
        InvalidateMask();
    }
}
