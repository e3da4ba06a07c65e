using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Nn;

/// <summary>
/// Root-mean-square layer norm (Zhang &amp; Sennrich 2019) as LLaMA, Mistral and Qwen2 use it:
/// y = w · x / √(mean(x²) + ε), without centring or bias. Like Hugging Face's LlamaRMSNorm the statistics are
/// taken in float32 and the result is cast back before the weight is applied.
/// </summary>
public sealed class RmsNorm : nn.Module<Tensor, Tensor>
{
    public Parameter weight;
    readonly double eps;

    public RmsNorm(long size, double eps) : base(nameof(RmsNorm))
    {
        weight = new Parameter(ones(size));
        this.eps = eps;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        Tensor h = x.to_type(ScalarType.Float32);
        Tensor meanSquare = h.square().mean([-1], keepdim: true);
        return weight * (h * (meanSquare + eps).rsqrt()).to_type(x.dtype);
    }
}
