using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace SparseTune.Nn;

/// <summary>
/// A language-model head that is a plain projection, logits = x Wᵀ (+ b) in <see cref="ComputeType"/> (bf16 under
/// mixed precision; null: W's own type). Models hand it out instead of the logits so that the training loss can run
/// <see cref="LinearCrossEntropy"/> and never hold the whole (tokens, vocab) logits tensor. W and b are read when used
/// (TorchSharp's Embedding hands out a new handle to its weight on every read, owned by the dispose scope open then).
/// </summary>
public sealed class LanguageModelProjection(Func<Tensor> weight, Func<Tensor?> bias, ScalarType? computeType)
{
    public LanguageModelProjection(Tensor weight, Tensor? bias, ScalarType? computeType) : this(() => weight, () => bias, computeType) { }

    public Tensor Weight => weight();
    public Tensor? Bias => bias();
    public ScalarType? ComputeType { get; } = computeType;

    /// <summary>The logits of <paramref name="hidden"/> (…, C): (…, vocab) in the compute type.</summary>
    public Tensor Logits(Tensor hidden) => MixedPrecision.Linear(hidden, Weight, Bias, ComputeType);
}

/// <summary>
/// Mean cross-entropy of a linear layer's logits, computed a block of rows at a time: the fused linear + cross-entropy
/// of Liger-Kernel and Apple's cut-cross-entropy, in plain libtorch calls. Each block's logits (about
/// <see cref="ChunkElements"/> values) give their loss and, right away, their gradient softmax − target, which goes
/// into ∂L/∂x and ∂L/∂W and is freed; backward only scales those by the incoming gradient. For GPT-2 at 4 × 512 tokens
/// the plain path holds the 2048 × 50,257 float32 logits, their log-softmax and the gradient of each (≈ 400 MB apiece);
/// this holds ∂L/∂W (vocab × C, 154 MB) and one block. The products are the same three (logits, ∂x, ∂W), in the
/// projection's compute type; the softmax, the loss and the gradients accumulate in float32.
/// Semantics are torch's cross_entropy with ignore_index and label_smoothing ε, mean over the non-ignored rows:
/// (1 − ε)·(lse − z_y) + ε·(lse − mean z).
/// </summary>
public static class LinearCrossEntropy
{
    /// <summary>Logit values per block of rows (64 MB of float32).</summary>
    public const long ChunkElements = 16L << 20;

    /// <param name="hidden">(N, C) rows.</param>
    /// <param name="labels">(N) int64 class of each row; <paramref name="ignoreIndex"/> rows do not count.</param>
    /// <param name="chunkElements">logit values per block of rows (tests make blocks small).</param>
    /// <returns>The scalar mean loss (float32), with autograd history to <paramref name="hidden"/> and the head's weight and bias.</returns>
    public static Tensor Loss(Tensor hidden, LanguageModelProjection head, Tensor labels, long ignoreIndex, double labelSmoothing = 0,
        long chunkElements = ChunkElements)
    {
        using var scope = NewDisposeScope();
        var (weight, bias) = (head.Weight, head.Bias);
        bool needsGrad = is_grad_enabled() && (hidden.requires_grad || weight.requires_grad || bias?.requires_grad == true);
        Tensor loss = needsGrad
            ? LinearCrossEntropyFunction.apply([hidden, weight, bias!, labels, ignoreIndex, labelSmoothing, head.ComputeType!, chunkElements])
            : Run(hidden, weight, bias, head.ComputeType, labels, ignoreIndex, labelSmoothing, chunkElements, null);
        return loss.MoveToOuterDisposeScope();
    }

    /// <summary>Where <see cref="Run"/> puts the gradients of the mean loss (any may be null: not wanted).</summary>
    internal sealed record Gradients(Tensor? Hidden, Tensor? Weight, Tensor? Bias);

    /// <summary>The mean loss; fills <paramref name="gradients"/> with ∂loss/∂(hidden, W, b) when given.</summary>
    internal static Tensor Run(Tensor hidden, Tensor fullWeight, Tensor? fullBias, ScalarType? computeType, Tensor labels, long ignoreIndex,
        double labelSmoothing, long chunkElements, Gradients? gradients)
    {
        using var scope = NewDisposeScope();
        long N = hidden.shape[0], vocab = fullWeight.shape[0];
        ScalarType compute = computeType ?? fullWeight.dtype;
        Tensor weight = MixedPrecision.To(fullWeight, compute);                                   // (V, C)
        Tensor? bias = fullBias is null ? null : MixedPrecision.To(fullBias, compute);            // (V)
        Tensor valid = labels.ne(ignoreIndex);                                                    // (N)
        Tensor count = valid.sum().to_type(ScalarType.Float32);                                   // rows that count
        Tensor safeLabels = labels.masked_fill(valid.logical_not(), 0);                           // (N)
        Tensor total = zeros(1, dtype: ScalarType.Float32, device: hidden.device);
        long rows = Math.Max(1, chunkElements / vocab);
        for (long from = 0; from < N; from += rows)
        {
            using var step = NewDisposeScope();
            long n = Math.Min(rows, N - from);
            Tensor x = MixedPrecision.To(hidden.narrow(0, from, n), compute);                     // (n, C)
            Tensor target = safeLabels.narrow(0, from, n).unsqueeze(1);                           // (n, 1)
            Tensor rowWeight = valid.narrow(0, from, n).to_type(ScalarType.Float32);              // (n): 1 or 0
            Tensor logits = nn.functional.linear(x, weight, bias).to_type(ScalarType.Float32);    // (n, V)
            Tensor lse = logits.logsumexp(-1);                                                    // (n)
            Tensor loss = (lse - logits.gather(1, target).squeeze(1)).mul_(1 - labelSmoothing);   // (n)
            if (labelSmoothing > 0) loss.add_((lse - logits.mean([-1])).mul_(labelSmoothing));
            total.add_((loss * rowWeight).sum());
            if (gradients is null) continue;
            // ∂loss/∂logits = (softmax − (1 − ε)·onehot − ε/V) · valid / count, built in the logits' storage.
            Tensor grad = logits.sub_(lse.unsqueeze(1)).exp_();                                   // (n, V) softmax
            grad.scatter_add_(1, target, full([n, 1], -(1 - labelSmoothing), dtype: ScalarType.Float32, device: grad.device));
            if (labelSmoothing > 0) grad.sub_(labelSmoothing / vocab);
            grad.mul_((rowWeight / count).unsqueeze(1));
            Tensor gradInCompute = MixedPrecision.To(grad, compute);                             // (n, V)
            gradients.Hidden?.narrow(0, from, n).copy_(gradInCompute.mm(weight));                 // (n, C)
            if (gradients.Weight is { } gradWeight)                                               // (V, C) += gᵀ x
                if (gradWeight.dtype == compute) gradWeight.addmm_(gradInCompute.t(), x);
                else gradWeight.add_(gradInCompute.t().mm(x));
            gradients.Bias?.add_(grad.sum(dim: 0));                                                 // (V)
        }
        return (total / count).squeeze(0).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The autograd node of <see cref="LinearCrossEntropy.Loss"/>: its forward computes the loss and the gradients (see
/// there), its backward scales them by the incoming scalar gradient. Inputs: hidden (N, C), W (V, C), b (V or null),
/// labels (N), ignore index, label smoothing, compute type (null: W's), logit values per block.
/// </summary>
public sealed class LinearCrossEntropyFunction : SingleTensorFunction<LinearCrossEntropyFunction>
{
    public override string Name => "LinearCrossEntropy";

    public override Tensor forward(AutogradContext ctx, params object[] vars)
    {
        var (hidden, weight, bias, labels) = ((Tensor)vars[0], (Tensor)vars[1], vars[2] as Tensor, (Tensor)vars[3]);
        var (ignoreIndex, labelSmoothing, compute, chunkElements) = ((long)vars[4], (double)vars[5], vars[6] as ScalarType?, (long)vars[7]);
        using var scope = NewDisposeScope();
        var gradients = new LinearCrossEntropy.Gradients(
            hidden.requires_grad ? empty_like(hidden) : null,   // every row is written, block by block
            weight.requires_grad ? zeros_like(weight) : null,
            bias?.requires_grad == true ? zeros_like(bias) : null);
        Tensor loss = LinearCrossEntropy.Run(hidden, weight, bias, compute, labels, ignoreIndex, labelSmoothing, chunkElements, gradients);
        // TorchSharp makes the saved variables after forward returns: what this scope made must outlive it.
        Tensor none = empty(0);
        Tensor[] toSave = [gradients.Hidden ?? none, gradients.Weight ?? none, gradients.Bias ?? none];
        foreach (Tensor t in toSave) t.MoveToOuterDisposeScope();
        ctx.save_for_backward([.. toSave]);
        ctx.save_data("has", new[] { gradients.Hidden is not null, gradients.Weight is not null, gradients.Bias is not null });
        return loss.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
    {
        var saved = ctx.get_saved_variables();
        var has = (bool[])ctx.get_data("has");
        // Scaled in place: a second (vocab × C) copy would come at the start of backward, when memory peaks.
        Tensor? Scaled(int i) => has[i] ? saved[i].mul_(gradOutput.to_type(saved[i].dtype)) : null;
        return [Scaled(0)!, Scaled(1)!, Scaled(2)!, null!, null!, null!, null!, null!];
    }
}
