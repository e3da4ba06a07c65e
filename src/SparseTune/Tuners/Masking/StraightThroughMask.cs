using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace SparseTune.Tuners.Masking;

/// <summary>
/// The straight-through estimator of a top-k mask (movement pruning, Sanh et al. 2020; PST's SparseBinarizer):
/// forward M = TopK(S) ∈ {0, 1}, backward ∂L/∂S = ∂L/∂M, as if the binarisation were the identity.
/// <code>
///   StraightThroughMask.apply(score, sparsity)     M from the score at that sparsity (<see cref="TopKMask.Keep"/>)
///   StraightThroughMask.apply(score, keepMask)     M given (a mask cached for this optimizer step)
/// </code>
/// The result has the score's dtype and is a new tensor. Passing a cached mask lets a method pick the top-k once
/// per optimizer step while every forward still routes its gradient to the score.
/// </summary>
public sealed class StraightThroughMask : SingleTensorFunction<StraightThroughMask>
{
    public override string Name => nameof(StraightThroughMask);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var score = (Tensor)vars[0];
        return vars[1] switch
        {
            Tensor mask => mask.to_type(score.dtype, copy: true),
            double sparsity => KeepAs(score, sparsity),
            var other => throw new ArgumentException($"StraightThroughMask: the second argument must be a mask tensor or a sparsity (double), not {other?.GetType().Name ?? "null"}"),
        };

        static Tensor KeepAs(Tensor score, double sparsity)
        {
            using var keep = TopKMask.Keep(score, sparsity);
            return keep.to_type(score.dtype);
        }
    }

    // The gradient passes unchanged; alias() hands autograd its own handle to the same storage.
    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput) => [gradOutput.alias(), null!];
}
