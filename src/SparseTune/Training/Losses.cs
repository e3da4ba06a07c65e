using SparseTune.Models;
using SparseTune.Nn;
using static TorchSharp.torch;

namespace SparseTune.Training;

/// <summary>The training loss of each task, from a forward pass's logits.</summary>
public static class Losses
{
    /// <summary>Label value that causal-LM losses skip (prompt tokens, padding), as Hugging Face's -100.</summary>
    public const long IgnoreIndex = -100;

    /// <param name="labelSmoothing">
    /// ε of torch's label smoothing for the cross-entropy losses, (1 − ε)·NLL + ε·mean over classes of −log p (PST's NLG
    /// script trains with 0.1); regression ignores it.
    /// </param>
    /// <remarks>The loss and its reduction run in float32 whatever the logits' type (bf16 under mixed precision).</remarks>
    public static Tensor Compute(TaskKind task, ModelOutput output, Tensor labels, double labelSmoothing = 0)
    {
        if (task == TaskKind.CausalLM && output is { HasLogits: false, Projection: { } head })
            return NextTokenLoss(output.LastHiddenState, head, labels, labelSmoothing);
        Tensor logits = output.Logits.dtype == ScalarType.BFloat16 ? output.Logits.to_type(ScalarType.Float32) : output.Logits;
        return task switch
        {
            TaskKind.Classification => nn.functional.cross_entropy(logits, labels, label_smoothing: labelSmoothing),
            TaskKind.Regression => nn.functional.mse_loss(logits.squeeze(-1), labels),
            TaskKind.CausalLM => NextTokenLoss(logits, labels, labelSmoothing),
            TaskKind.MaskedLM => nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]), labels.reshape(-1), ignore_index: IgnoreIndex, label_smoothing: labelSmoothing),
            TaskKind.MultipleChoice => nn.functional.cross_entropy(logits, labels, label_smoothing: labelSmoothing),
            TaskKind.QuestionAnswering => SpanLoss(logits, labels),
            _ => throw new ArgumentOutOfRangeException(nameof(task)),
        };
    }

    /// <summary>
    /// How many terms <see cref="Compute"/>'s mean divides by: the rows, or for language models the labelled tokens
    /// (next-token labels other than <see cref="IgnoreIndex"/>). Data-parallel ranks weight their losses by it, so that
    /// their average is the mean over the whole global batch. Extractive QA counts rows (an answer outside its window
    /// is rare and ignored only there).
    /// </summary>
    public static long TermCount(TaskKind task, Tensor labels)
    {
        using var scope = NewDisposeScope();
        return task switch
        {
            TaskKind.CausalLM => labels[.., 1..].ne(IgnoreIndex).sum().item<long>(),
            TaskKind.MaskedLM => labels.ne(IgnoreIndex).sum().item<long>(),
            _ => labels.shape[0],
        };
    }

    /// <summary>
    /// Extractive QA as Hugging Face's …ForQuestionAnswering: the mean of the start and end positions' cross-entropies
    /// over the tokens; positions outside the sequence are clamped to its length and ignored.
    /// </summary>
    /// <param name="logits">(B, T, 2): start and end logits of every token.</param>
    /// <param name="spans">(B, 2) int64: the answer's start and end token positions.</param>
    public static Tensor SpanLoss(Tensor logits, Tensor spans)
    {
        using var scope = NewDisposeScope();
        long T = logits.shape[1];
        Tensor positions = spans.clamp(0, T);                                          // (B, 2)
        Tensor start = nn.functional.cross_entropy(logits.select(-1, 0), positions.select(1, 0), ignore_index: T);
        Tensor end = nn.functional.cross_entropy(logits.select(-1, 1), positions.select(1, 1), ignore_index: T);
        return ((start + end) / 2).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Mean cross-entropy of predicting token t+1 from position t, skipping ignored labels. The labels move one
    /// step left (the last position gets <see cref="IgnoreIndex"/>) rather than the logits one step right: the
    /// logits stay a view, so no (B·T, vocab) copy is made — for GPT-2 at 2048 tokens that copy is 400 MB in the
    /// forward pass and again in the backward pass.
    /// </summary>
    public static Tensor NextTokenLoss(Tensor logits, Tensor labels, double labelSmoothing = 0)
    {
        using var scope = NewDisposeScope();
        long vocab = logits.shape[^1];
        return nn.functional.cross_entropy(logits.reshape(-1, vocab), NextLabels(labels), ignore_index: IgnoreIndex, label_smoothing: labelSmoothing).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The same loss from the hidden states (B, T, C) and the LM head as a projection, through
    /// <see cref="LinearCrossEntropy"/>: the (B·T, vocab) logits never exist whole (see there).
    /// </summary>
    public static Tensor NextTokenLoss(Tensor hidden, LanguageModelProjection head, Tensor labels, double labelSmoothing = 0)
    {
        using var scope = NewDisposeScope();
        return LinearCrossEntropy.Loss(hidden.reshape(-1, hidden.shape[^1]), head, NextLabels(labels), IgnoreIndex, labelSmoothing).MoveToOuterDisposeScope();
    }

    /// <summary>Labels moved one step left, the last position ignored: (B·T).</summary>
    static Tensor NextLabels(Tensor labels) => nn.functional.pad(labels[.., 1..], [0, 1], value: IgnoreIndex).reshape(-1);
}
