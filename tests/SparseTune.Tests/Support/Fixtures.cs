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
/// tokens occurs in them (classification), their next-token stream (causal LM), the span from token 1 to token 2
/// (extractive QA: labels (B, 2)), or which of two sequences holds token 1 (multiple choice: ids (B, 2, T)).
/// Deterministic per seed.
/// </summary>
public sealed class SyntheticBatches : IBatchSource
{
    readonly List<int[]> sequences = [];
    readonly List<int> labels = [];
    readonly List<(int Start, int End)> spans = [];
    readonly List<int[]> secondChoices = [];
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
            else if (task == TaskKind.QuestionAnswering)
            {
                int start = 1 + random.Next(length - 3), end = start + 1 + random.Next(length - start - 1);
                (ids[start], ids[end]) = (1, 2);   // the answer runs from token 1 to token 2
                spans.Add((start, end));
            }
            else if (task == TaskKind.MultipleChoice)
            {
                label = random.Next(2);
                var other = new int[length];
                for (int t = 0; t < length; t++) other[t] = 10 + random.Next(vocabSize - 10);
                (label == 0 ? ids : other)[random.Next(length)] = 1;   // the right choice holds token 1
                secondChoices.Add(other);
            }
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
        if (task == TaskKind.MultipleChoice) return BuildChoices(indices);
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
            TaskKind.QuestionAnswering => tensor(indices.SelectMany(i => new long[] { spans[i].Start, spans[i].End }).ToArray(), [indices.Length, 2]),
            _ => tensor(indices.Select(i => (long)labels[i]).ToArray()),
        };
        return new TrainingBatch(tensor(ids, shape), tensor(mask, shape), null, labelsTensor);
    }

    TrainingBatch BuildChoices(int[] indices)
    {
        int length = indices.Max(i => sequences[i].Length);
        var ids = new long[indices.Length * 2 * length];
        var mask = new long[indices.Length * 2 * length];
        for (int r = 0; r < indices.Length; r++)
            foreach (var (choice, c) in new[] { (sequences[indices[r]], 0), (secondChoices[indices[r]], 1) })
                for (int t = 0; t < choice.Length; t++)
                {
                    ids[(r * 2 + c) * length + t] = choice[t];
                    mask[(r * 2 + c) * length + t] = 1;
                }
        long[] shape = [indices.Length, 2, length];
        return new TrainingBatch(tensor(ids, shape), tensor(mask, shape), null, tensor(indices.Select(i => (long)labels[i]).ToArray()));
    }
}
