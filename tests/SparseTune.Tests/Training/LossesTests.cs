using Xunit;
using SparseTune.Training;
using static TorchSharp.torch;

namespace SparseTune.Tests.TrainingLoop;

public sealed class LossesTests
{
    [Fact]
    public void NextTokenLoss_IsTheMeanNllOfTheFollowingTokenOverUnignoredLabels()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        Tensor logits = randn(2, 4, 7);
        long[,] labels = { { 3, 1, -100, 6 }, { 0, 2, 5, -100 } };
        // By hand: position t predicts labels[t+1]; pairs (b, t → label): (0,0→1) (0,2→6) (1,0→2) (1,1→5); the
        // ignored label at (0,2) and (1,3) count nothing, and the last position predicts nothing.
        var logProbs = nn.functional.log_softmax(logits, -1);
        (int b, int t, int label)[] used = [(0, 0, 1), (0, 2, 6), (1, 0, 2), (1, 1, 5)];
        double expected = -used.Average(u => logProbs[u.b, u.t, u.label].item<float>());

        double loss = Losses.NextTokenLoss(logits, tensor(labels)).item<float>();
        Assert.Equal(expected, loss, 1e-6);
    }

    [Fact]
    public void LabelSmoothingMixesTheNllWithTheMeanOverClassesOfMinusLogP()
    {
        // PST's NLG script trains with --label_smooth 0.1: (1 − ε)·NLL + ε·mean_c(−log p_c), over the unignored positions.
        using var scope = NewDisposeScope();
        manual_seed(7);
        Tensor logits = randn(2, 4, 7);
        long[,] labels = { { 3, 1, -100, 6 }, { 0, 2, 5, -100 } };
        var logProbs = nn.functional.log_softmax(logits, -1);
        (int b, int t, int label)[] used = [(0, 0, 1), (0, 2, 6), (1, 0, 2), (1, 1, 5)];
        const double eps = 0.1;
        double expected = used.Average(u =>
            (1 - eps) * -logProbs[u.b, u.t, u.label].item<float>() + eps * -logProbs[u.b, u.t].mean().item<float>());
        double loss = Losses.NextTokenLoss(logits, tensor(labels), eps).item<float>();
        Assert.Equal(expected, loss, 1e-5);

        Tensor classLogits = randn(3, 4);
        long[] classes = [2, 0, 3];
        var classLogProbs = nn.functional.log_softmax(classLogits, -1);
        double expectedClass = classes.Select((c, i) => (1 - eps) * -classLogProbs[i, c].item<float>() + eps * -classLogProbs[i].mean().item<float>()).Average();
        var output = new SparseTune.Models.ModelOutput(classLogits.alias(), classLogits);   // the scope frees both
        Assert.Equal(expectedClass, Losses.Compute(TaskKind.Classification, output, tensor(classes), eps).item<float>(), 1e-5);
        Assert.True(Losses.Compute(TaskKind.Classification, output, tensor(classes)).item<float>() != Losses.Compute(TaskKind.Classification, output, tensor(classes), eps).item<float>());
    }
}
