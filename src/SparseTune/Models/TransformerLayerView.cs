using SparseTune.Nn;
using static TorchSharp.torch;

namespace SparseTune.Models;

/// <summary>A linear layer with its state-dict prefix (e.g. "bert.encoder.layer.0.attention.self.query").</summary>
public sealed record NamedLinear(string Name, TunableLinear Layer);

/// <summary>Which of the three attention inputs a projection (or a block of GPT-2's fused c_attn) computes.</summary>
public enum QkvPart { Query, Key, Value }

/// <summary>What head pruning and head gating need of an attention module; each family's attention implements it.</summary>
internal interface IHeadedAttention
{
    int NumHeads { get; }
    int NumKeyValueHeads { get; }
    int HeadDim { get; }
    Tensor? HeadGate { get; set; }
    void SetHeadCounts(int heads, int keyValueHeads);
}

/// <summary>What neuron gating needs of a feed-forward module.</summary>
internal interface IGatedFeedForward
{
    Tensor? NeuronGate { get; set; }
}

/// <summary>Shape checks for the multiplicative gates (<see cref="AttentionView.HeadGate"/>, <see cref="FeedForwardView.NeuronGate"/>).</summary>
internal static class Gates
{
    /// <summary>The gate itself when it is null or a vector of <paramref name="size"/> entries; throws otherwise.</summary>
    public static Tensor? Check(Tensor? gate, long size, string what)
    {
        if (gate is not null && (gate.dim() != 1 || gate.shape[0] != size))
            throw new ArgumentException($"{what} must have shape [{size}], got [{string.Join(", ", gate.shape)}]");
        return gate;
    }
}

/// <summary>
/// One transformer block as methods see it: its attention and its feed-forward, with the linear layers under
/// their state-dict names. A live view: after pruning it reports the current shapes.
/// </summary>
public sealed class TransformerLayerView
{
    internal TransformerLayerView(int index, AttentionView attention, FeedForwardView feedForward)
    {
        Index = index;
        Attention = attention;
        FeedForward = feedForward;
    }

    public int Index { get; }
    public AttentionView Attention { get; }
    public FeedForwardView FeedForward { get; }
}

/// <summary>
/// The attention of one layer: q, k, v and output projections (or GPT-2's fused c_attn, whose output rows are
/// three blocks [q | k | v] of nh·hs rows each), the head counts, which original heads are still present, and
/// the optional head gate. Row and column helpers give, for a head in the CURRENT numbering, the rows of the
/// projection computing its query, key or value and the columns of the output projection reading its context.
/// </summary>
public sealed class AttentionView
{
    readonly IHeadedAttention module;
    readonly List<int> presentHeads;

    internal AttentionView(int layer, IHeadedAttention module, NamedLinear? query, NamedLinear? key, NamedLinear? value,
        NamedLinear? fusedQkv, NamedLinear output)
    {
        Layer = layer;
        this.module = module;
        Query = query;
        Key = key;
        Value = value;
        FusedQkv = fusedQkv;
        Output = output;
        OriginalNumHeads = module.NumHeads;
        presentHeads = Enumerable.Range(0, module.NumHeads).ToList();
    }

    public int Layer { get; }

    /// <summary>The query projection (C → nh·hs); null for GPT-2, where <see cref="FusedQkv"/> computes q, k and v.</summary>
    public NamedLinear? Query { get; }
    /// <summary>The key projection (C → n_kv·hs); null for GPT-2.</summary>
    public NamedLinear? Key { get; }
    /// <summary>The value projection (C → n_kv·hs); null for GPT-2.</summary>
    public NamedLinear? Value { get; }
    /// <summary>GPT-2's c_attn (C → 3·nh·hs, rows [q | k | v]); null for the other families.</summary>
    public NamedLinear? FusedQkv { get; }
    /// <summary>The output projection (nh·hs → C): c_proj, attention.output.dense or o_proj.</summary>
    public NamedLinear Output { get; }

    /// <summary>Query heads present now.</summary>
    public int NumHeads => module.NumHeads;
    /// <summary>Key/value heads present now (equal to <see cref="NumHeads"/> outside grouped-query attention).</summary>
    public int NumKeyValueHeads => module.NumKeyValueHeads;
    public int HeadDim => module.HeadDim;
    /// <summary>Query heads served by each key/value head (1 outside grouped-query attention).</summary>
    public int GroupSize => module.NumHeads / module.NumKeyValueHeads;
    /// <summary>Heads the layer was built with.</summary>
    public int OriginalNumHeads { get; }

    /// <summary>The original index of each head present, in current order: PresentHeads[h] is current head h's original index.</summary>
    public IReadOnlyList<int> PresentHeads => presentHeads;

    /// <summary>
    /// Multiplies each head's context output before the output projection: y (B, nh, T, hs) · gate.view(1, nh, 1, 1).
    /// Shape (nh); null (the default) runs the ungated code path. Set by a method, which owns the tensor; it is
    /// not registered in the module tree, so the state dict keeps the checkpoint keys. Head pruning replaces a set
    /// gate by its kept entries (a new Parameter, recorded in <see cref="ParameterLineage"/>, requires_grad kept)
    /// and disposes the old one, as it does a pruned weight: read the gate back after pruning.
    /// </summary>
    public Tensor? HeadGate
    {
        get => module.HeadGate;
        set => module.HeadGate = value;
    }

    /// <summary>True for GPT-2's fused c_attn.</summary>
    public bool IsFused => FusedQkv is not null;

    /// <summary>The layer computing <paramref name="part"/>: q_proj/query/…, or c_attn for every part when fused.</summary>
    public NamedLinear ProjectionOf(QkvPart part) => FusedQkv ?? part switch
    {
        QkvPart.Query => Query!,
        QkvPart.Key => Key!,
        _ => Value!,
    };

    /// <summary>The key/value head serving query head <paramref name="head"/> (current numbering): head / group size.</summary>
    public int KeyValueHeadOf(int head)
    {
        CheckHead(head);
        return head / GroupSize;
    }

    /// <summary>
    /// The output rows of <see cref="ProjectionOf"/>(<paramref name="part"/>) that belong to query head
    /// <paramref name="head"/> (current numbering). For the key and value under grouped-query attention these are
    /// the rows of the key/value head serving it, shared with the rest of its group. For GPT-2's fused c_attn the
    /// rows lie in the part's block of the 3·nh·hs rows.
    /// </summary>
    public long[] HeadRows(QkvPart part, int head)
    {
        CheckHead(head);
        int unit = part == QkvPart.Query ? head : head / GroupSize;
        long blockStart = IsFused ? (long)part * NumHeads * HeadDim : 0;
        return Enumerable.Range(0, HeadDim).Select(i => blockStart + (long)unit * HeadDim + i).ToArray();
    }

    /// <summary>The input columns of <see cref="Output"/> that read head <paramref name="head"/>'s context.</summary>
    public long[] OutputColumns(int head)
    {
        CheckHead(head);
        return Enumerable.Range(0, HeadDim).Select(i => (long)head * HeadDim + i).ToArray();
    }

    /// <summary>The linear layers head pruning resizes.</summary>
    public IReadOnlyList<NamedLinear> Linears => IsFused ? [FusedQkv!, Output] : [Query!, Key!, Value!, Output];

    void CheckHead(int head)
    {
        if (head < 0 || head >= NumHeads)
            throw new ArgumentOutOfRangeException(nameof(head), head, $"layer {Layer} has {NumHeads} heads");
    }

    internal void SetPresentHeads(IEnumerable<int> keptCurrent, int keyValueHeads)
    {
        var kept = keptCurrent.Select(h => presentHeads[h]).ToList();
        presentHeads.Clear();
        presentHeads.AddRange(kept);
        module.SetHeadCounts(kept.Count, keyValueHeads);
    }
}

/// <summary>
/// The feed-forward of one layer: its input linear(s) (c_fc; intermediate.dense; gate_proj and up_proj), whose
/// output rows are the neurons, and its output linear (mlp.c_proj; output.dense; down_proj), whose input columns
/// read them.
/// </summary>
public sealed class FeedForwardView
{
    readonly IGatedFeedForward module;
    readonly List<int> presentNeurons;

    internal FeedForwardView(int layer, IGatedFeedForward module, IReadOnlyList<NamedLinear> inputs, NamedLinear output)
    {
        Layer = layer;
        this.module = module;
        Inputs = inputs;
        Output = output;
        OriginalIntermediateSize = IntermediateSize;
        presentNeurons = Enumerable.Range(0, OriginalIntermediateSize).ToList();
    }

    public int Layer { get; }
    /// <summary>c_fc | intermediate.dense | gate_proj, up_proj: neuron n is output row n of each.</summary>
    public IReadOnlyList<NamedLinear> Inputs { get; }
    /// <summary>mlp.c_proj | output.dense | down_proj: neuron n is input column n.</summary>
    public NamedLinear Output { get; }

    /// <summary>Neurons present now.</summary>
    public int IntermediateSize => (int)Output.Layer.InFeatures;
    public int OriginalIntermediateSize { get; }

    /// <summary>
    /// The original index of each neuron present, in current order (as <see cref="AttentionView.PresentHeads"/>). A
    /// model built from a neuron-pruned config knows only the sizes (sparsetune_intermediate_sizes), so it numbers
    /// its neurons 0 … size − 1.
    /// </summary>
    public IReadOnlyList<int> PresentNeurons => presentNeurons;

    /// <summary>
    /// Multiplies each neuron's activation before the output projection (for SwiGLU after act(gate) · up). Shape (I);
    /// null runs the ungated path. Owned and pruned as <see cref="AttentionView.HeadGate"/>.
    /// </summary>
    public Tensor? NeuronGate
    {
        get => module.NeuronGate;
        set => module.NeuronGate = value;
    }

    /// <summary>The linear layers neuron pruning resizes.</summary>
    public IReadOnlyList<NamedLinear> Linears => [.. Inputs, Output];

    internal void SetPresentNeurons(IEnumerable<int> keptCurrent)
    {
        var kept = keptCurrent.Select(n => presentNeurons[n]).ToList();
        presentNeurons.Clear();
        presentNeurons.AddRange(kept);
    }
}
