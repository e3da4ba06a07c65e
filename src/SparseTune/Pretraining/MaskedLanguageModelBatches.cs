using SparseTune.Training;
using static TorchSharp.torch;

namespace SparseTune.Pretraining;

/// <summary>
/// Batches for BERT's masked-language-model objective: 15% of the non-special tokens are chosen; of those 80%
/// become [MASK], 10% a random token, 10% stay; labels are -100 except at chosen positions. The choice is
/// seeded by the batch's example indices, so a batch is the same whenever it is built (needed by --resume).
/// </summary>
public sealed class MaskedLanguageModelBatches(IReadOnlyList<int[]> sequences, int batchSize, int padId, int maskId,
    IReadOnlySet<int> specialIds, int vocabSize, int seed, double maskProbability = 0.15) : IBatchSource
{
    public IReadOnlyList<int[]> EpochBatches(int epoch)
    {
        var order = Enumerable.Range(0, sequences.Count).ToArray();
        new Random(seed + epoch).Shuffle(order);
        return order.Chunk(batchSize).ToList();
    }

    public TrainingBatch Build(int[] indices)
    {
        int hash = seed;
        foreach (int i in indices) hash = HashCode.Combine(hash, i);
        var random = new Random(hash);
        int length = indices.Max(i => sequences[i].Length);
        var ids = new long[indices.Length * length];
        var mask = new long[indices.Length * length];
        var labels = new long[indices.Length * length];
        Array.Fill(ids, padId);
        Array.Fill(labels, Losses.IgnoreIndex);
        for (int row = 0; row < indices.Length; row++)
        {
            int[] seq = sequences[indices[row]];
            for (int t = 0; t < seq.Length; t++)
            {
                int at = row * length + t;
                ids[at] = seq[t];
                mask[at] = 1;
                if (specialIds.Contains(seq[t]) || random.NextDouble() >= maskProbability) continue;
                labels[at] = seq[t];
                double r = random.NextDouble();
                if (r < 0.8) ids[at] = maskId;
                else if (r < 0.9) ids[at] = random.Next(vocabSize);
            }
        }
        long[] shape = [indices.Length, length];
        return new TrainingBatch(tensor(ids, shape), tensor(mask, shape), null, tensor(labels, shape));
    }
}
