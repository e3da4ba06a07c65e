using System.Text.Json.Serialization;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Nn;

/// <summary>How a model computes: <c>--precision fp32|bf16|auto</c>.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<Precision>))]
public enum Precision
{
    /// <summary>Everything in float32.</summary>
    Fp32,
    /// <summary>
    /// Mixed precision with bfloat16 matrix products, the semantics of PyTorch's autocast: linears (adapters
    /// included), attention and the LM head run in bf16; embeddings, LayerNorm/RMSNorm, the residual stream,
    /// the loss and the optimizer stay float32, and so do the master weights, gradients and AdamW moments.
    /// </summary>
    Bf16,
}

/// <summary>
/// TorchSharp 0.107 does not expose libtorch's autocast, so SparseTune casts at the linear boundary itself:
/// every matrix product of a layer goes through <see cref="Linear"/> with the layer's compute type. The casts are
/// ordinary autograd operations, so gradients reach the float32 master weights as float32.
/// </summary>
public static class MixedPrecision
{
    /// <summary>The compute type of a precision: null for float32 (no casting), bf16 otherwise.</summary>
    public static ScalarType? ComputeType(Precision precision) => precision == Precision.Bf16 ? ScalarType.BFloat16 : null;

    /// <summary>y = x Wᵀ + b in <paramref name="compute"/> when given (inputs cast to it), else in W's own type.</summary>
    public static Tensor Linear(Tensor x, Tensor weight, Tensor? bias, ScalarType? compute)
    {
        ScalarType type = compute ?? weight.dtype;
        return F.linear(To(x, type), To(weight, type), bias is null ? null : To(bias, type));
    }

    /// <summary>t in <paramref name="type"/>: t itself when it already is.</summary>
    public static Tensor To(Tensor t, ScalarType type) => t.dtype == type ? t : t.to_type(type);

    /// <summary>Parses fp32, bf16 or auto (bf16 where the CPU's bf16 matrix products are natively fast).</summary>
    public static Precision Parse(string text, Func<bool>? bf16IsFast = null) => text.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" => Precision.Fp32,
        "bf16" or "bfloat16" => Precision.Bf16,
        "auto" => (bf16IsFast ?? Benchmarks.GemmPeak.Bf16IsNativelyFast)() ? Precision.Bf16 : Precision.Fp32,
        _ => throw new ArgumentException($"--precision: unknown '{text}' (choose fp32, bf16 or auto)"),
    };
}
