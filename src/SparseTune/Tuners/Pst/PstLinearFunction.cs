using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace SparseTune.Tuners.Pst;

/// <summary>
/// One PST linear layer with a hand-written backward, so that no m×n tensor is kept between forward and backward:
/// <code>
///   W' = W + β·U·V                              (out, in)   effective weight
///   S  = |W'| + α1·A·B + α2·(R·1ᵀ + 1·Cᵀ)       (out, in)   importance score
///   M  = TopK(S)                                            cached per optimizer step (<see cref="PstAdapter"/>)
///   y  = x (W' ⊙ M)ᵀ + b
/// </code>
/// Backward, with G = ∂L/∂(W' ⊙ M) = gᵀx and the straight-through estimator ∂L/∂S = ∂L/∂M:
/// <code>
///   ∂L/∂x  = g (W' ⊙ M)
///   ∂L/∂S  = G ⊙ W'
///   ∂L/∂W' = G ⊙ M + ∂L/∂S ⊙ sign(W')           (the second term: W' also enters S through |W'|)
///   ∂L/∂U  = β ∂L/∂W' Vᵀ      ∂L/∂V = β Uᵀ ∂L/∂W'
///   ∂L/∂A  = α1 ∂L/∂S Bᵀ      ∂L/∂B = α1 Aᵀ ∂L/∂S
///   ∂L/∂R  = α2 Σ_cols ∂L/∂S  ∂L/∂C = α2 Σ_rows ∂L/∂S
/// </code>
/// exactly what autograd computes for the original's SparseLinear.forward (score built from the effective
/// weight, SparseBinarizer passing the gradient through). Since the STE ignores S's value, S is never formed
/// here: forward and backward rebuild W' from the small factors and hold their m×n temporaries only while
/// this one layer runs. Saved between passes: x (as nn.Linear saves it), the frozen W, the small factors and
/// the cached boolean mask.
///
/// Inputs (in order): x, W, b (may be null), U, V, A, B, R, C, mask (bool), the <see cref="PstAdapter"/>.
/// </summary>
public sealed class PstLinearFunction : SingleTensorFunction<PstLinearFunction>
{
    public override string Name => nameof(PstLinearFunction);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var bias = vars[2] as Tensor;
        Tensor u = (Tensor)vars[3], v = (Tensor)vars[4], a = (Tensor)vars[5], b = (Tensor)vars[6];
        var mask = (Tensor)vars[9];
        var adapter = (PstAdapter)vars[10];
        ctx.save_for_backward([x, weight, u, v, a, b, mask]);
        ctx.save_data("adapter", adapter);
        ctx.save_data("x_requires_grad", x.requires_grad);
        using var scope = NewDisposeScope();
        Tensor masked = weight.addmm(u, v, beta: 1, alpha: (float)adapter.UpdateScale).mul_(mask);   // (W + βUV) ⊙ M
        return nn.functional.linear(x, masked, bias).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
    {
        var adapter = (PstAdapter)ctx.get_data("adapter");
        bool inputNeedsGrad = (bool)ctx.get_data("x_requires_grad");
        float beta = (float)adapter.UpdateScale, alpha1 = (float)adapter.LowRankScoreScale, alpha2 = (float)adapter.StructuredScoreScale;
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor x = saved[0], weight = saved[1], u = saved[2], v = saved[3], a = saved[4], b = saved[5], mask = saved[6];
        long outFeatures = weight.shape[0], inFeatures = weight.shape[1];
        Tensor g = gradOutput.reshape(-1, outFeatures);                      // (N, out)
        Tensor x2d = x.reshape(-1, inFeatures);                              // (N, in)

        Tensor effective = weight.addmm(u, v, beta: 1, alpha: beta);          // W' (out, in)
        Tensor? gradInput = null;
        if (inputNeedsGrad)
        {
            using var masked = effective.mul(mask);
            gradInput = g.mm(masked).view(x.shape);                          // (…, in)
        }
        Tensor gradMasked = g.t().mm(x2d);                                   // G (out, in)
        Tensor gradScore = gradMasked.mul(effective);                        // ∂L/∂S = G ⊙ W'
        Tensor gradEffective = gradMasked.mul_(mask).addcmul_(gradScore, effective.sign_(), 1);  // G⊙M + ∂L/∂S⊙sign(W')

        Tensor gradU = gradEffective.mm(v.t()).mul_(beta);                   // (out, r)
        Tensor gradV = u.t().mm(gradEffective).mul_(beta);                   // (r, in)
        Tensor gradA = gradScore.mm(b.t()).mul_(alpha1);                     // (out, r')
        Tensor gradB = a.t().mm(gradScore).mul_(alpha1);                     // (r', in)
        Tensor gradR = gradScore.sum(dim: 1).mul_(alpha2);                   // (out)
        Tensor gradC = gradScore.sum(dim: 0).mul_(alpha2);                   // (in); a literal 0 would bind to sum(ScalarType)

        gradInput?.MoveToOuterDisposeScope();
        foreach (var t in new[] { gradU, gradV, gradA, gradB, gradR, gradC }) t.MoveToOuterDisposeScope();
        return [gradInput!, null!, null!, gradU, gradV, gradA, gradB, gradR, gradC, null!, null!];
    }
}
