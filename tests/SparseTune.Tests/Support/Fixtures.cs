using SparseTune.Training;
using static TorchSharp.torch;

namespace SparseTune.Tests.Support;

/// <summary>Paths of the committed test data and small in-memory datasets for training tests.</summary>
public static class Fixtures
{
    public static string TestData(params string[] parts) => Path.Combine([AppContext.BaseDirectory, "TestData", .. parts]);

    /// <summary>A tiny Hugging Face checkpoint folder: bert-tiny, gpt2-tiny or llama-tiny.</summary>
    public static string Model(string name) => TestData("hf-parity", name);

    public static string TempDirectory(string prefix) => Directory.CreateTempSubdirectory("sparsetune-" + prefix + "-").FullName;
}

/// <summary>
/// A learnable synthetic task: random token sequences whose label is decided by which of a few "keyword"
/// tokens occurs in them (classification), or their next-token stream (causal LM). Deterministic per seed.
/// </summary>
public sealed class SyntheticBatches : IBatchSource
{
    readonly List<int[]> sequences = [];
    readonly List<int> labels = [];
    readonly int batchSize;
    readonly int seed;
    readonly TaskKind task;

    public SyntheticBatches(TaskKind task, int vocabSize, int count, int batchSize, int classes = 3, int seed = 7, int minLength = 6, int maxLength = 12)
    {
        this.task = task;
        this.batchSize = batchSize;
        this.seed = seed;
        var random = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            int length = random.Next(minLength, maxLength + 1);
            int label = random.Next(classes);
            var ids = new int[length];
            for (int t = 0; t < length; t++) ids[t] = 10 + random.Next(vocabSize - 10);
            if (task == TaskKind.CausalLM)
                for (int t = 1; t < length; t++) ids[t] = 10 + (ids[t - 1] * 7 + 3) % (vocabSize - 10); // a learnable successor rule
            else
                ids[random.Next(length)] = 1 + label; // keyword token decides the class
            sequences.Add(ids);
            labels.Add(label);
        }
    }

    public int Count => sequences.Count;

    public IReadOnlyList<int[]> EpochBatches(int epoch)
    {
        var order = Enumerable.Range(0, sequences.Count).ToArray();
        new Random(seed * 1000 + epoch).Shuffle(order);
        return order.Chunk(batchSize).ToList();
    }

    public TrainingBatch Build(int[] indices)
    {
        int length = indices.Max(i => sequences[i].Length);
        var ids = new long[indices.Length * length];
        var mask = new long[indices.Length * length];
        var lmLabels = new long[indices.Length * length];
        Array.Fill(lmLabels, Losses.IgnoreIndex);
        for (int r = 0; r < indices.Length; r++)
        {
            var seq = sequences[indices[r]];
            for (int t = 0; t < seq.Length; t++)
            {
                ids[r * length + t] = seq[t];
                mask[r * length + t] = 1;
                lmLabels[r * length + t] = seq[t];
            }
        }
        long[] shape = [indices.Length, length];
        Tensor labelsTensor = task switch
        {
            TaskKind.CausalLM => tensor(lmLabels, shape),
            TaskKind.Regression => tensor(indices.Select(i => (float)labels[i]).ToArray()),
            _ => tensor(indices.Select(i => (long)labels[i]).ToArray()),
        };
        return new TrainingBatch(tensor(ids, shape), tensor(mask, shape), null, labelsTensor);
    }
}
