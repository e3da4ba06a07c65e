using SparseTune.Nn;
using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace SparseTune.Tuners.Sift;

/// <summary>
/// y = x Wᵀ + b whose backward hands W's gradient only to SIFT's value vector, gathered at the selected
/// indices (and b's gradient to the bias value vector, when the bias tunes). TorchSharp has no tensor backward hooks, so instead of letting autograd accumulate a dense
/// ∂L/∂W into W.grad (as the original code's hook then discards), this function computes the dense
/// weight gradient of one layer transiently inside its own backward, gathers k entries, and frees it: no
/// dense weight gradient is ever stored in .grad or outlives the layer's backward.
///
/// The transient peak is one dense (out, in) gradient of this one layer (plus its bias gradient) while its backward
/// runs: across the model, about the size of the largest targeted matrix on top of activations.
///
/// Inputs (in order): x, W (frozen), b (frozen, may be null), values (k, trains), bias values (k_b, trains; null when
/// the bias is frozen), adapter. The forward ignores the values: they are zero whenever a forward runs, since they are
/// merged into W and b and reset right after each optimizer step.
/// </summary>
public sealed class SparseGradientLinear : SingleTensorFunction<SparseGradientLinear>
{
    public override string Name => nameof(SparseGradientLinear);

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var x = (Tensor)vars[0];
        var weight = (Tensor)vars[1];
        var bias = vars[2] as Tensor;
        ctx.save_for_backward(bias is null ? [x, weight] : [x, weight, bias]);
        ctx.save_data("adapter", vars[5]);
        ctx.save_data("x_requires_grad", x.requires_grad);
        return MixedPrecision.Linear(x, weight, bias, x.dtype);   // x's type: bf16 under mixed precision
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
    {
        var adapter = (SiftAdapter)ctx.get_data("adapter");
        bool inputNeedsGrad = (bool)ctx.get_data("x_requires_grad");
        using var scope = NewDisposeScope();
        var saved = ctx.get_saved_variables();
        Tensor x = saved[0], weight = saved[1];
        Tensor? bias = saved.Count > 2 ? saved[2] : null;
        long outFeatures = weight.shape[0], inFeatures = weight.shape[1];
        Tensor gradOut2d = gradOutput.reshape(-1, outFeatures);                 // (N, out)
        Tensor x2d = x.reshape(-1, inFeatures);                                 // (N, in)

        // Under mixed precision the products run in x's type (bf16) and the gradients SIFT keeps are float32.
        Tensor? gradInput = inputNeedsGrad ? gradOut2d.mm(MixedPrecision.To(weight, x.dtype)).view(x.shape) : null;   // (…, in)
        Tensor denseWeightGrad = MixedPrecision.To(gradOut2d.t().mm(x2d), weight.dtype);   // (out, in), this layer only
        Tensor? denseBiasGrad = adapter.BiasComponents > 0 ? MixedPrecision.To(gradOut2d.sum(dim: 0), weight.dtype) : null;   // (out)
        // (k), (k_b), or nulls while selecting; the adapter may keep or overwrite the dense gradients, the scope frees them.
        var (gradValues, gradBiasValues) = adapter.ConsumeDenseGradient(denseWeightGrad, denseBiasGrad, weight, bias);

        gradInput?.MoveToOuterDisposeScope();
        gradValues?.MoveToOuterDisposeScope();
        gradBiasValues?.MoveToOuterDisposeScope();
        return [gradInput!, null!, null!, gradValues!, gradBiasValues!, null!];
    }
}
