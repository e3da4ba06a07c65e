using SparseTune.Models;

namespace SparseTune.Distributed;

/// <summary>One method's gradient traffic per optimizer step: the values it all-reduces and the time a ring all-reduce of them takes.</summary>
/// <param name="Values">Trainable values whose gradients are averaged each step (float32 on the wire).</param>
public sealed record TrafficRow(string Method, string Setting, long Values, long BytesPerStep, double ShareOfFull, IReadOnlyDictionary<double, double> SecondsAtGbit);

/// <summary>
/// What data-parallel training sends per optimizer step, computed from a LLaMA-family shape alone (no weights are made,
/// so a 7B shape costs nothing): full fine-tuning all-reduces every parameter's gradient, LoRA its A and B matrices, SIFT
/// its selected values (the same rules the methods use: <c>k = min(⌊rate·n⌋ + 1, n)</c> per matrix of the blocks; LoRA
/// r·(in + out) per targeted matrix). A ring all-reduce moves 2·(N − 1)/N times the buffer through every link.
/// </summary>
public static class AllReduceTraffic
{
    /// <summary>Every linear of a LLaMA block as (name, out, in).</summary>
    public static IEnumerable<(string Name, long Out, long In)> BlockLinears(LlamaConfig config)
    {
        long c = config.Hidden, kv = (long)config.NumKeyValueHeads * config.AttentionHeadDim, q = (long)config.Heads * config.AttentionHeadDim, i = config.Intermediate;
        for (int layer = 0; layer < config.Layers; layer++)
        {
            yield return ("q_proj", q, c);
            yield return ("k_proj", kv, c);
            yield return ("v_proj", kv, c);
            yield return ("o_proj", c, q);
            yield return ("gate_proj", i, c);
            yield return ("up_proj", i, c);
            yield return ("down_proj", c, i);
        }
    }

    /// <summary>Every parameter of the causal LM: embeddings, blocks (linears and two RMSNorms), final norm, an untied LM head.</summary>
    public static long FullValues(LlamaConfig config) =>
        (long)config.VocabSize * config.Hidden * (config.TieWordEmbeddings ? 1 : 2)
        + BlockLinears(config).Sum(l => l.Out * l.In)
        + (2L * config.Layers + 1) * config.Hidden;

    public static long LoraValues(LlamaConfig config, int rank, IReadOnlyCollection<string> targets) =>
        BlockLinears(config).Where(l => targets.Contains(l.Name)).Sum(l => rank * (l.In + l.Out));

    public static long SiftValues(LlamaConfig config, double rate) =>
        BlockLinears(config).Sum(l => Math.Min((long)Math.Floor(rate * l.Out * l.In) + 1, l.Out * l.In));

    /// <summary>Seconds a ring all-reduce of <paramref name="bytes"/> over <paramref name="ranks"/> takes at <paramref name="gbitPerSecond"/> per link (bandwidth only).</summary>
    public static double RingSeconds(long bytes, int ranks, double gbitPerSecond) =>
        ranks < 2 ? 0 : 2.0 * (ranks - 1) / ranks * bytes * 8 / (gbitPerSecond * 1e9);

    /// <summary>Full fine-tuning, LoRA (rank <paramref name="loraRank"/> on q_proj and v_proj) and SIFT (<paramref name="siftRate"/>).</summary>
    public static IReadOnlyList<TrafficRow> Table(LlamaConfig config, int ranks, IReadOnlyList<double> gbits, int loraRank = 16, double siftRate = 0.01)
    {
        long full = FullValues(config);
        TrafficRow Row(string method, string setting, long values) => new(method, setting, values, 4 * values, (double)values / full,
            gbits.ToDictionary(g => g, g => RingSeconds(4 * values, ranks, g)));
        return
        [
            Row("full", "every parameter", full),
            Row("lora", $"r {loraRank} on q_proj, v_proj", LoraValues(config, loraRank, ["q_proj", "v_proj"])),
            Row("sift", $"{siftRate:P0} of the block linears", SiftValues(config, siftRate)),
        ];
    }
}
