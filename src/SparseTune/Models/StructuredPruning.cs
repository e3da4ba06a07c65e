using System.Globalization;
using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Models;

// Structured pruning as a model capability: whole attention heads and whole FFN neurons are removed
// physically (rows of the layers producing them, columns of the layer reading them), so the pruned model is a
// smaller dense model. Every family goes through the same two methods; the per-family facts (fused c_attn,
// grouped-query attention, which linears form the FFN) live in each family's CreateLayerViews.
//
//   head h (current numbering), head size hs:
//     q/k/v (or each of c_attn's three blocks)  rows    h·hs … (h+1)·hs − 1     ← removed
//     output projection                          columns h·hs … (h+1)·hs − 1     ← removed
//   neuron n:
//     c_fc | intermediate.dense | gate_proj, up_proj   row n (and bias entry n)   ← removed
//     mlp.c_proj | output.dense | down_proj            column n                  ← removed
//
// Removing a head is the same function as multiplying its context by 0 before the output projection (a zero
// head gate); removing a neuron is the same as a zero neuron gate. The tests pin both equalities.

public abstract partial class TransformerModel
{
    IReadOnlyList<TransformerLayerView>? layerViews;

    /// <summary>
    /// The transformer blocks as methods see them: per layer the attention (q, k, v and output linears with their
    /// state-dict names, or GPT-2's fused c_attn; head counts; which original heads are present; the head gate)
    /// and the feed-forward (input and output linears, intermediate size, the neuron gate). Live views: they
    /// follow pruning.
    /// </summary>
    public IReadOnlyList<TransformerLayerView> Layers => layerViews ??= CreateLayerViews();

    /// <summary>Builds <see cref="Layers"/> once, from the family's module tree.</summary>
    protected abstract IReadOnlyList<TransformerLayerView> CreateLayerViews();

    /// <summary>
    /// Physically removes attention heads of one layer: their rows of q, k and v (for GPT-2 the matching rows in
    /// each of c_attn's q, k and v blocks), their columns of the output projection, their entries of a set head
    /// gate; the attention's head counts drop, and <see cref="Config"/> records the removed heads by their
    /// ORIGINAL index (pruned_heads for gpt2/bert/roberta as transformers reads it, sparsetune_pruned_heads for
    /// the llama family), so a saved model reloads with these shapes.
    /// <para>
    /// <b>Grouped-query attention</b> (llama family with num_key_value_heads &lt; num_attention_heads): the unit
    /// of removal is a whole group, i.e. a key/value head together with all the query heads it serves
    /// (query heads g·k … g·k + g − 1 for key/value head k, g = nh / n_kv); <paramref name="heads"/> lists
    /// query heads and must be a union of whole groups. Removing only some query heads of a group is refused:
    /// the groups would become unequal, which repeat_kv cannot express. With n_kv == nh every head is its own
    /// group and heads are removed one by one.
    /// </para>
    /// <para>
    /// A linear layer that carries an adapter is resized only if the adapter can follow
    /// (<see cref="ILinearAdapter.CanFollowResize"/>; LoRA can). All checks run before anything is modified: an
    /// invalid request throws and leaves the model untouched.
    /// </para>
    /// </summary>
    /// <param name="layer">block index</param>
    /// <param name="heads">query heads to remove, in the layer's CURRENT numbering (0 … NumHeads − 1); empty: nothing happens.</param>
    /// <exception cref="ArgumentException">layer or head out of range, duplicates, every head of the layer, a
    /// partial key/value group, or an adapter that cannot follow; the message names layer and indices.</exception>
    public void PruneHeads(int layer, IReadOnlyCollection<int> heads)
    {
        AttentionView attention = LayerAt(layer).Attention;
        int[] removed = CheckUnits(layer, heads, attention.NumHeads, "head", nameof(heads));
        if (removed.Length == 0) return;
        int group = attention.GroupSize;
        var broken = new List<string>();
        foreach (int kv in removed.Select(h => h / group).Distinct())
        {
            int[] members = Enumerable.Range(kv * group, group).ToArray();
            if (!members.All(removed.Contains))
                broken.Add($"key/value head {kv} serves query heads [{string.Join(", ", members)}]");
        }
        if (broken.Count > 0)
            throw new ArgumentException($"layer {layer}: removing heads [{string.Join(", ", removed)}] breaks grouped-query attention: " +
                $"{string.Join("; ", broken)}; remove all heads of a group or none", nameof(heads));
        CheckAdapters(layer, attention.Linears);

        int[] kept = Enumerable.Range(0, attention.NumHeads).Except(removed).ToArray();
        int[] keptKeyValue = kept.Where(h => h % group == 0).Select(h => h / group).ToArray();   // whole groups survive
        long width = (long)attention.NumHeads * attention.HeadDim;
        Tensor? gate = attention.HeadGate;
        attention.HeadGate = null;   // re-set below, once the head count has dropped
        using (var scope = NewDisposeScope())
        {
            Device device = attention.Output.Layer.weight.device;
            Tensor queryRows = UnitRows(kept, attention.HeadDim, device);    // (kept·hs)
            if (attention.FusedQkv is { } qkv)
                qkv.Layer.KeepRows(cat([queryRows, queryRows + width, queryRows + 2 * width]));   // [q | k | v] blocks
            else
            {
                Tensor keyValueRows = UnitRows(keptKeyValue, attention.HeadDim, device);
                attention.Query!.Layer.KeepRows(queryRows);
                attention.Key!.Layer.KeepRows(keyValueRows);
                attention.Value!.Layer.KeepRows(keyValueRows);
            }
            attention.Output.Layer.KeepColumns(queryRows);
            attention.SetPresentHeads(kept, keptKeyValue.Length);
            if (gate is not null) attention.HeadGate = SliceGate(gate, kept);
        }
        RecordPruning();
    }

    /// <summary>
    /// Physically removes FFN neurons of one layer: their rows (and bias entries) of the input linear(s)
    /// (c_fc; intermediate.dense; gate_proj and up_proj), their columns of the output linear (mlp.c_proj;
    /// output.dense; down_proj), their entries of a set neuron gate. <see cref="Config"/> records the new
    /// intermediate size of every layer in sparsetune_intermediate_sizes. Validation and adapters as in
    /// <see cref="PruneHeads"/>: an invalid request throws and leaves the model untouched.
    /// </summary>
    /// <param name="layer">block index</param>
    /// <param name="neurons">neurons to remove, in the layer's CURRENT numbering; empty: nothing happens.</param>
    public void PruneNeurons(int layer, IReadOnlyCollection<int> neurons)
    {
        FeedForwardView ffn = LayerAt(layer).FeedForward;
        int[] removed = CheckUnits(layer, neurons, ffn.IntermediateSize, "neuron", nameof(neurons));
        if (removed.Length == 0) return;
        CheckAdapters(layer, ffn.Linears);

        int[] kept = Enumerable.Range(0, ffn.IntermediateSize).Except(removed).ToArray();
        Tensor? gate = ffn.NeuronGate;
        ffn.NeuronGate = null;
        using (var scope = NewDisposeScope())
        {
            Tensor index = UnitRows(kept, 1, ffn.Output.Layer.weight.device);
            foreach (NamedLinear input in ffn.Inputs) input.Layer.KeepRows(index);
            ffn.Output.Layer.KeepColumns(index);
            ffn.SetPresentNeurons(kept);
            if (gate is not null) ffn.NeuronGate = SliceGate(gate, kept);
        }
        RecordPruning();
    }

    /// <summary>
    /// Called at the end of each family's constructor: applies the pruning that the config records (shapes
    /// only, as transformers does with pruned_heads in post_init), so checkpoint loading and its strict shape
    /// checks see the pruned shapes. The config keeps the record exactly as it was read.
    /// </summary>
    protected void ApplyConfiguredPruning()
    {
        IReadOnlyList<TransformerLayerView> layers = Layers;   // built now, so "original" means the config's shapes
        ModelConfig recorded = Config;
        if (recorded.RemovedHeads is null && recorded.IntermediateSizes is null) return;
        string headKey = recorded.UsesHuggingFacePrunedHeads ? "pruned_heads" : "sparsetune_pruned_heads";
        try
        {
            foreach (var (key, heads) in recorded.RemovedHeads ?? new Dictionary<string, int[]>())
            {
                if (!int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out int layer))
                    throw new ModelConfigException($"{headKey}: '{key}' is not a layer index");
                PruneHeads(layer, heads);   // a fresh model: original numbering is the current numbering
            }
            for (int i = 0; i < (recorded.IntermediateSizes?.Length ?? 0); i++)
            {
                int size = recorded.IntermediateSizes![i], full = layers[i].FeedForward.IntermediateSize;
                if (size > full)
                    throw new ModelConfigException($"sparsetune_intermediate_sizes: layer {i} has {size} > intermediate size {full}");
                PruneNeurons(i, Enumerable.Range(size, full - size).ToArray());
            }
        }
        catch (ArgumentException e)
        {
            throw new ModelConfigException($"the pruning recorded in config.json does not fit this {recorded.ModelType} model: {e.Message}");
        }
        Config = recorded;
    }

    /// <summary>Rewrites the config's pruning record from the present shapes (null keys when nothing is pruned).</summary>
    void RecordPruning()
    {
        var heads = new Dictionary<string, int[]>();
        foreach (TransformerLayerView view in Layers)
        {
            AttentionView a = view.Attention;
            if (a.NumHeads < a.OriginalNumHeads)
                heads[view.Index.ToString(CultureInfo.InvariantCulture)] =
                    Enumerable.Range(0, a.OriginalNumHeads).Except(a.PresentHeads).Order().ToArray();
        }
        int[] sizes = Layers.Select(l => l.FeedForward.IntermediateSize).ToArray();
        bool neuronsPruned = Layers.Any(l => l.FeedForward.IntermediateSize != l.FeedForward.OriginalIntermediateSize);
        Config = Config.WithRemovedHeads(heads.Count > 0 ? heads : null) with { IntermediateSizes = neuronsPruned ? sizes : null };
    }

    TransformerLayerView LayerAt(int layer)
    {
        if (layer < 0 || layer >= Layers.Count)
            throw new ArgumentException($"layer {layer} does not exist: this {Config.ModelType} model has {Layers.Count} layers", nameof(layer));
        return Layers[layer];
    }

    /// <summary>The sorted indices to remove; throws naming the layer and every bad index.</summary>
    static int[] CheckUnits(int layer, IReadOnlyCollection<int> units, int count, string unit, string parameter)
    {
        ArgumentNullException.ThrowIfNull(units, parameter);
        var problems = new List<string>();
        int[] outside = units.Where(u => u < 0 || u >= count).Distinct().ToArray();
        if (outside.Length > 0) problems.Add($"{unit} {string.Join(", ", outside)} out of range (the layer has {count} {unit}s, 0 … {count - 1})");
        int[] repeated = units.GroupBy(u => u).Where(g => g.Count() > 1).Select(g => g.Key).ToArray();
        if (repeated.Length > 0) problems.Add($"{unit} {string.Join(", ", repeated)} listed more than once");
        if (problems.Count == 0 && units.Count == count) problems.Add($"removing all {count} {unit}s would leave the layer without any");
        if (problems.Count > 0) throw new ArgumentException($"layer {layer}: {string.Join("; ", problems)}", parameter);
        return units.Order().ToArray();
    }

    /// <summary>Refuses (before any change) when a layer to resize carries an adapter that cannot follow.</summary>
    static void CheckAdapters(int layer, IEnumerable<NamedLinear> linears)
    {
        string[] refused = linears.Where(l => l.Layer.Adapter is { CanFollowResize: false })
            .Select(l => $"{l.Name} carries a {l.Layer.Adapter!.GetType().Name}, which cannot follow a resize").ToArray();
        if (refused.Length > 0) throw new ArgumentException($"layer {layer}: cannot prune: {string.Join("; ", refused)}");
    }

    /// <summary>Indices u·size … u·size + size − 1 for each unit u, in order, as an int64 tensor.</summary>
    static Tensor UnitRows(IEnumerable<int> units, long size, Device device) =>
        tensor(units.SelectMany(u => Enumerable.Range(0, (int)size).Select(i => u * size + i)).ToArray(), device: device);

    /// <summary>
    /// The gate's entries for <paramref name="kept"/> as a new Parameter (lineage recorded when the gate was one,
    /// requires_grad kept), outside any dispose scope; the old gate is disposed like a pruned weight.
    /// </summary>
    static Parameter SliceGate(Tensor gate, int[] kept)
    {
        using Tensor index = tensor(kept.Select(k => (long)k).ToArray(), device: gate.device);
        Parameter sliced;
        if (gate is Parameter parameter) sliced = ParameterLineage.Slice(parameter, 0, index);
        else
        {
            using (no_grad()) sliced = new Parameter(gate.detach().index_select(0, index).contiguous(), gate.requires_grad);
            sliced.DetachFromDisposeScope();
        }
        gate.Dispose();
        return sliced;
    }
}
