using SparseTune.Models;
using static TorchSharp.torch;

namespace SparseTune.Training;

/// <summary>The training loss of each task, from a forward pass's logits.</summary>
public static class Losses
{
    /// <summary>Label value that causal-LM losses skip (prompt tokens, padding), as Hugging Face's -100.</summary>
    public const long IgnoreIndex = -100;

    public static Tensor Compute(TaskKind task, ModelOutput output, Tensor labels) => task switch
    {
        TaskKind.Classification => nn.functional.cross_entropy(output.Logits, labels),
        TaskKind.Regression => nn.functional.mse_loss(output.Logits.squeeze(-1), labels),
        TaskKind.CausalLM => NextTokenLoss(output.Logits, labels),
        TaskKind.MaskedLM => nn.functional.cross_entropy(output.Logits.reshape(-1, output.Logits.shape[^1]), labels.reshape(-1), ignore_index: IgnoreIndex),
        _ => throw new ArgumentOutOfRangeException(nameof(task)),
    };

    /// <summary>Mean cross-entropy of predicting token t+1 from position t, skipping ignored labels.</summary>
    public static Tensor NextTokenLoss(Tensor logits, Tensor labels)
    {
        using var scope = NewDisposeScope();
        long vocab = logits.shape[^1];
        Tensor shiftedLogits = logits[.., ..^1, ..].reshape(-1, vocab);   // (B·(T-1), V)
        Tensor shiftedLabels = labels[.., 1..].reshape(-1);                // (B·(T-1))
        return nn.functional.cross_entropy(shiftedLogits, shiftedLabels, ignore_index: IgnoreIndex).MoveToOuterDisposeScope();
    }
}
