using SparseTune.Nn;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace SparseTune.Tuners.Pst;

/// <summary>
/// One PST linear layer with a hand-written backward, so that no m×n tensor is kept between forward and backward.
/// Per row block g (the whole layer, or q/k/v of a fused c_attn, each with its own factors):
/// <code>
///   W'_g = W_g + β·U_g·V_g                            (rows, in)   effective weight
///   S_g  = |W'_g| + α1·A_g·B_g + α2·(R_g·1ᵀ + 1·C_gᵀ)  (rows, in)   importance score
///   M    = TopK(S) per block                                       cached per optimizer step (<see cref="PstAdapter"/>)
///   y    = x (W' ⊙ M)ᵀ + b
/// </code>
/// Backward, with G = ∂L/∂(W' ⊙ M) = gᵀx and the straight-through estimator ∂L/∂S = ∂L/∂M:
/// <code>
///   ∂L/∂x  = g (W' ⊙ M)
///   ∂L/∂S  = G ⊙ W'
///   ∂L/∂W' = G ⊙ M + ∂L/∂S ⊙ sign(W')           (the second term: W' also enters S through |W'|)
///   per block g, on its rows of ∂L/∂W' and ∂L/∂S:
///   ∂L/∂U_g = β ∂L/∂W'_g V_gᵀ      ∂L/∂V_g = β U_gᵀ ∂L/∂W'_g
///   ∂L/∂A_g = α1 ∂L/∂S_g B_gᵀ      ∂L/∂B_g = α1 A_gᵀ ∂L/∂S_g
///   ∂L/∂R_g = α2 Σ_cols ∂L/∂S_g    ∂L/∂C_g = α2 Σ_rows ∂L/∂S_g
/// </code>
/// exactly what autograd computes for the original's SparseLinear.forward on each (separate) layer (score built from
/// the effective weight, SparseBinarizer passing the gradient through). Since the STE ignores S's value, S is never
/// formed here: forward and backward rebuild W' from the small factors and hold their m×n temporaries only while
/// this one layer runs. Saved between passes: x (as nn.Linear saves it), the frozen W, the small factors and
/// the cached boolean mask.
///
/// Inputs (in order): x, W, b (may be null), mask (bool), then U, V, A, B, R, C of each block, then the <see cref="PstAdapter"/>.
/// </summary>
public sealed class PstLinearFunction : SingleTensorFunction<PstLinearFunction>
{
    const int FactorsStart = 4;

    public override string Name => nameof(PstLinearFunction);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var bias = vars[2] as Tensor;
        var mask = (Tensor)vars[3];
        var adapter = (PstAdapter)vars[^1];
        var factors = vars[FactorsStart..^1].Cast<Tensor>().ToList();
        ctx.save_for_backward([x, weight, mask, .. factors]);
        ctx.save_data("adapter", adapter);
        ctx.save_data("x_requires_grad", x.requires_grad);
        using var scope = NewDisposeScope();
        Tensor masked = PstAdapter.Effective(weight, factors, adapter.MaskGroups, (float)adapter.UpdateScale).mul_(mask);   // (W + βUV) ⊙ M
        return MixedPrecision.Linear(x, masked, bias, x.dtype).MoveToOuterDisposeScope();   // x's type: bf16 under mixed precision
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
    {
        var adapter = (PstAdapter)ctx.get_data("adapter");
        bool inputNeedsGrad = (bool)ctx.get_data("x_requires_grad");
        float beta = (float)adapter.UpdateScale, alpha1 = (float)adapter.LowRankScoreScale, alpha2 = (float)adapter.StructuredScoreScale;
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor x = saved[0], weight = saved[1], mask = saved[2];
        var factors = saved.Skip(3).ToList();
        int groupCount = adapter.MaskGroups;
        long outFeatures = weight.shape[0], inFeatures = weight.shape[1], rows = outFeatures / groupCount;
        Tensor g = gradOutput.reshape(-1, outFeatures);                      // (N, out)
        Tensor x2d = x.reshape(-1, inFeatures);                              // (N, in)

        Tensor effective = PstAdapter.Effective(weight, factors, groupCount, beta);   // W' (out, in)
        Tensor? gradInput = null;
        if (inputNeedsGrad)
        {
            using var masked = effective.mul(mask);
            gradInput = g.mm(MixedPrecision.To(masked, x.dtype)).view(x.shape);   // (…, in)
        }
        Tensor gradMasked = MixedPrecision.To(g.t().mm(x2d), weight.dtype);  // G (out, in), float32 from here on
        Tensor gradScore = gradMasked.mul(effective);                        // ∂L/∂S = G ⊙ W'
        Tensor gradEffective = gradMasked.mul_(mask).addcmul_(gradScore, effective.sign_(), 1);  // G⊙M + ∂L/∂S⊙sign(W')

        var grads = new List<Tensor> { gradInput!, null!, null!, null! };
        for (int b = 0; b < groupCount; b++)
        {
            Tensor u = factors[6 * b], v = factors[6 * b + 1], a = factors[6 * b + 2], bb = factors[6 * b + 3];
            Tensor gE = gradEffective.narrow(0, b * rows, rows), gS = gradScore.narrow(0, b * rows, rows);   // this block's rows
            grads.Add(gE.mm(v.t()).mul_(beta));                              // U (rows, r)
            grads.Add(u.t().mm(gE).mul_(beta));                              // V (r, in)
            grads.Add(gS.mm(bb.t()).mul_(alpha1));                           // A (rows, r')
            grads.Add(a.t().mm(gS).mul_(alpha1));                            // B (r', in)
            grads.Add(gS.sum(dim: 1).mul_(alpha2));                          // R (rows)
            grads.Add(gS.sum(dim: 0).mul_(alpha2));                          // C (in); a literal 0 would bind to sum(ScalarType)
        }
        grads.Add(null!);                                                    // the adapter
        foreach (var t in grads) t?.MoveToOuterDisposeScope();
        return grads;
    }
}
