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
}
