using static TorchSharp.torch;

namespace SparseTune.Nn;

/// <summary>Activation functions by their Hugging Face config names (hidden_act / activation_function).</summary>
public static class Activations
{
    public static readonly IReadOnlyList<string> Supported = ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish", "tanh"];

    public static Tensor Apply(string name, Tensor x) => name switch
    {
        // Exact erf GELU (BERT's "gelu").
        "gelu" => x.gelu(),
        // GPT-2's tanh approximation: 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³))).
        "gelu_new" or "gelu_pytorch_tanh" => x.gelu(TorchSharp.Modules.GELU.Approximate.tanh),
        "relu" => nn.functional.relu(x),
        "silu" or "swish" => nn.functional.silu(x),
        "tanh" => x.tanh(),
        _ => throw new Models.ModelConfigException($"unsupported activation '{name}'; supported: {string.Join(", ", Supported)}"),
    };
}
