using SparseTune.Data;
using SparseTune.Training;
using Xunit;
using static TorchSharp.torch;

namespace SparseTune.Tests.Data;

public class BatcherTests
{
    const int Pad = 9;

    static Example Seq(int length, float label = 0, bool types = false) =>
        new(Enumerable.Range(100, length).ToArray(), types ? Enumerable.Repeat(1, length).ToArray() : null, label);

    static List<Example> Many(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(i => Seq(random.Next(1, 101), i % 3)).ToList();
    }

    [Fact]
    public void Classification_PadsToTheLongestInTheBatch()
    {
        var batcher = new Batcher([Seq(3, 1), Seq(5, 0), Seq(2, 2)], TaskKind.Classification, Pad, new BatcherOptions { BatchSize = 3, Shuffle = false });
        using var batch = batcher.Build([0, 1, 2]);

        Assert.Equal([3L, 5L], batch.InputIds.shape);
        Assert.Equal(ScalarType.Int64, batch.InputIds.dtype);
        Assert.Equal(ScalarType.Int64, batch.AttentionMask.dtype);
        Assert.Equal([100L, 101, 102, Pad, Pad, 100, 101, 102, 103, 104, 100, 101, Pad, Pad, Pad], batch.InputIds.data<long>().ToArray());
        Assert.Equal([1L, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], batch.AttentionMask.data<long>().ToArray());
        Assert.Null(batch.TokenTypeIds);
        Assert.Equal([3L], batch.Labels.shape);
        Assert.Equal(ScalarType.Int64, batch.Labels.dtype);
        Assert.Equal([1L, 0, 2], batch.Labels.data<long>().ToArray());
        Assert.Equal(10, batch.TokenCount);
        Assert.Equal(5, batch.Length);
    }

    [Fact]
    public void TokenTypes_ArePaddedWithZeros()
    {
        var batcher = new Batcher([Seq(2, types: true), Seq(4, types: true)], TaskKind.Classification, Pad);
        using var batch = batcher.Build([1, 0]);
        Assert.NotNull(batch.TokenTypeIds);
        Assert.Equal([2L, 4L], batch.TokenTypeIds!.shape);
        Assert.Equal([1L, 1, 1, 1, 1, 1, 0, 0], batch.TokenTypeIds.data<long>().ToArray());
        Assert.Equal([1, 0], batch.Indices);
    }

    [Fact]
    public void Regression_LabelsAreFloat32()
    {
        var batcher = new Batcher([Seq(2, 0.25f), Seq(3, 4.5f)], TaskKind.Regression, Pad);
        using var batch = batcher.Build([0, 1]);
        Assert.Equal(ScalarType.Float32, batch.Labels.dtype);
        Assert.Equal([2L], batch.Labels.shape);
        Assert.Equal([0.25f, 4.5f], batch.Labels.data<float>().ToArray());
    }

    [Fact]
    public void CausalLM_LabelsAreMinus100AtPadding()
    {
        Example[] examples =
        [
            new([5, 6, 7], LabelIds: [-100, 6, 7]),
            new([8, 9]), // no LabelIds: the input ids
        ];
        var batcher = new Batcher(examples, TaskKind.CausalLM, Pad);
        using var batch = batcher.Build([0, 1]);
        Assert.Equal([2L, 3L], batch.Labels.shape);
        Assert.Equal(ScalarType.Int64, batch.Labels.dtype);
        Assert.Equal([-100L, 6, 7, 8, 9, -100], batch.Labels.data<long>().ToArray());
        Assert.Equal([5L, 6, 7, 8, 9, Pad], batch.InputIds.data<long>().ToArray());
    }

    [Fact]
    public void Shuffle_IsAPureFunctionOfSeedAndEpoch()
    {
        var examples = Many(23, 1);
        var options = new BatcherOptions { BatchSize = 4, Seed = 42 };
        var first = new Batcher(examples, TaskKind.Classification, Pad, options).EpochBatches(3);
        var again = new Batcher(examples, TaskKind.Classification, Pad, options).EpochBatches(3);
        var nextEpoch = new Batcher(examples, TaskKind.Classification, Pad, options).EpochBatches(4);

        Assert.Equal(first.Select(b => b.ToArray()), again.Select(b => b.ToArray()));
        Assert.NotEqual(first.SelectMany(b => b), nextEpoch.SelectMany(b => b));
        Assert.Equal(6, first.Count);
        Assert.Equal([4, 4, 4, 4, 4, 3], first.Select(b => b.Length));
        Assert.Equal(Enumerable.Range(0, 23), first.SelectMany(b => b).Order());

        // Exactly System.Random(seed + epoch) over 0..n-1, cut into batches.
        int[] expected = Enumerable.Range(0, 23).ToArray();
        new Random(42 + 3).Shuffle(expected);
        Assert.Equal(expected, first.SelectMany(b => b));
    }

    [Fact]
    public void NoShuffle_KeepsFileOrder_AndDropLastDropsThePartialBatch()
    {
        var examples = Many(10, 2);
        var batches = new Batcher(examples, TaskKind.Classification, Pad, new BatcherOptions { BatchSize = 4, Shuffle = false, DropLast = true }).EpochBatches(0);
        Assert.Equal([[0, 1, 2, 3], [4, 5, 6, 7]], batches);
        Assert.Equal(2, new Batcher(examples, TaskKind.Classification, Pad, new BatcherOptions { BatchSize = 4, DropLast = true }).BatchesPerEpoch);
        Assert.Equal(3, new Batcher(examples, TaskKind.Classification, Pad, new BatcherOptions { BatchSize = 4 }).BatchesPerEpoch);
    }

    static long PaddedTokens(Batcher batcher, int epoch, IReadOnlyList<Example> examples) =>
        batcher.EpochBatches(epoch).Sum(b => (long)b.Length * b.Max(i => examples[i].InputIds.Length));

    [Fact]
    public void GroupByLength_ReducesPadding_AndStaysDeterministic()
    {
        var examples = Many(1000, 3);
        var plain = new Batcher(examples, TaskKind.Classification, Pad, new BatcherOptions { BatchSize = 8, Seed = 5 });
        var grouped = new Batcher(examples, TaskKind.Classification, Pad, new BatcherOptions { BatchSize = 8, Seed = 5, GroupByLength = true });

        long real = examples.Sum(e => (long)e.InputIds.Length);
        long plainPadding = PaddedTokens(plain, 0, examples) - real;
        long groupedPadding = PaddedTokens(grouped, 0, examples) - real;
        Assert.True(groupedPadding * 5 < plainPadding, $"grouped padding {groupedPadding} vs plain {plainPadding}");

        var epoch0 = grouped.EpochBatches(0);
        Assert.Equal(125, epoch0.Count);
        Assert.Equal(Enumerable.Range(0, 1000), epoch0.SelectMany(b => b).Order());
        Assert.Equal(epoch0, grouped.EpochBatches(0));
        Assert.NotEqual(epoch0, grouped.EpochBatches(1));
        // Within a batch, lengths are sorted longest first.
        Assert.All(epoch0, b => Assert.Equal(b.Select(i => examples[i].InputIds.Length).OrderDescending(), b.Select(i => examples[i].InputIds.Length)));
    }

    [Fact]
    public void Batches_FollowEpochBatches_AndToTrainingBatchTransfersOwnership()
    {
        var examples = Many(10, 4);
        var batcher = new Batcher(examples, TaskKind.Classification, Pad, new BatcherOptions { BatchSize = 3, Seed = 1 });
        var indices = batcher.EpochBatches(2);
        int k = 0;
        foreach (var batch in batcher.Batches(2))
        {
            using (batch) Assert.Equal(indices[k++], batch.Indices);
        }
        Assert.Equal(indices.Count, k);

        var built = batcher.Build(indices[0]);
        using (TrainingBatch training = built.ToTrainingBatch())
        {
            built.Dispose(); // no longer owns the tensors
            Assert.Equal(indices[0].Length, training.InputIds.shape[0]);
        }
        using TrainingBatch viaInterface = ((IBatchSource)batcher).Build(indices[1]);
        Assert.Equal(indices[1].Length, viaInterface.Labels.shape[0]);
    }

    [Fact]
    public void Datasets_ChooseTheLabelKind()
    {
        var data = new ClassificationDataset([Seq(2, 0.5f)], [], true, 0, []);
        using var batch = new Batcher(data, Pad).Build([0]);
        Assert.Equal(ScalarType.Float32, batch.Labels.dtype);

        var lm = new LanguageModelDataset([new Example([1, 2], LabelIds: [1, 2])], 2, 0, []);
        using var lmBatch = new Batcher(lm, Pad).Build([0]);
        Assert.Equal([1L, 2L], lmBatch.Labels.shape);
    }
}
