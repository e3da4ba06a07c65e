using static TorchSharp.torch;

namespace SparseTune.Models;

// A structurally pruned model (StructuredPruning.cs) saves with SparseTune's own config keys:
// sparsetune_intermediate_sizes (every family) and sparsetune_pruned_heads (llama family), which Hugging Face
// transformers does not read, so it cannot load those shapes. The export writes the same function in the shapes of
// the unpruned config instead, with the removed units put back as zeros:
//
//   FFN neuron n (removed):   input linear(s) row n and bias entry n = 0   (c_fc | intermediate.dense | gate_proj, up_proj)
//                             output linear column n = 0                   (mlp.c_proj | output.dense | down_proj)
//     The neuron's pre-activation is 0, and every supported activation has act(0) = 0 (gelu, gelu_new, relu,
//     silu, tanh; SwiGLU: silu(0)·0 = 0); the zero output column alone already removes whatever it computes.
//   Attention head h (removed), when heads are padded (always for the llama family, which transformers cannot
//   prune; on request for gpt2/bert/roberta):
//                             q, k, v rows of the head (of its key/value group) and their bias entries = 0
//                             output projection columns of the head = 0
//     Its query and key are 0 (rotary keeps 0 at 0), so its scores are 0 and its softmax is uniform; its values
//     are 0, so its context is 0; and the zero output columns discard the context anyway. Under grouped-query
//     attention pruning removes whole groups, so a padded key/value head serves only padded query heads.
//   Otherwise gpt2/bert/roberta keep their smaller attention and pruned_heads, which transformers 4.x applies
//   when it builds the model (transformers 5 no longer reads pruned_heads: pad the heads for it).
//
// Zeros go to the ORIGINAL positions of the removed units where the model knows them (PresentHeads,
// PresentNeurons); a model loaded from a neuron-pruned folder knows only its sizes, so its zeros are appended.
// Either way the outputs are those of the pruned model.

/// <summary>Writes a structurally pruned model as a checkpoint folder Hugging Face transformers loads with its standard config.</summary>
public static class HuggingFaceExport
{
    /// <summary>
    /// Writes config.json and model.safetensors into <paramref name="directory"/> (through
    /// <see cref="PretrainedModel"/>'s writer; tokenizer files are the caller's, as for <see cref="PretrainedModel.Save(TransformerModel, string, long)"/>):
    /// every FFN back at the config's intermediate size, llama-family heads (and with <paramref name="padHeads"/>
    /// every family's) back at the config's head count, the removed units zero; config.json without
    /// sparsetune_intermediate_sizes and sparsetune_pruned_heads (and without pruned_heads when heads are padded).
    /// The model itself is not changed. An unpruned model is written as <see cref="PretrainedModel.Save(TransformerModel, string, long)"/> writes it.
    /// </summary>
    public static void Save(TransformerModel model, string directory, bool padHeads = false, long maxShardBytes = long.MaxValue)
    {
        bool headsPadded = padHeads || !model.Config.UsesHuggingFacePrunedHeads;
        Dictionary<string, Padding> padding = PaddingOf(model, headsPadded);
        PretrainedModel.Save(model, ExportedConfig(model.Config, headsPadded), directory, maxShardBytes,
            (name, t) => padding.TryGetValue(name, out Padding? p) ? p.Apply(t) : t);
    }

    /// <summary>The config without SparseTune's pruning keys (and without pruned_heads when the heads are padded back).</summary>
    static ModelConfig ExportedConfig(ModelConfig config, bool headsPadded)
    {
        ModelConfig exported = config with
        {
            IntermediateSizes = null,
            SparseTunePrunedHeads = null,
            OtherKeys = config.OtherKeys?.Where(k => !k.Key.StartsWith("sparsetune_", StringComparison.Ordinal)).ToDictionary(),
        };
        return headsPadded ? exported with { PrunedHeads = null } : exported;
    }

    /// <summary>Places a pruned tensor's entries along <paramref name="Dim"/> at <paramref name="Positions"/> of a zero tensor <paramref name="FullSize"/> long there.</summary>
    sealed record Padding(int Dim, long FullSize, long[] Positions)
    {
        public Tensor Apply(Tensor pruned)
        {
            long[] shape = pruned.shape;
            shape[Dim] = FullSize;
            Tensor full = zeros(shape, pruned.dtype, pruned.device);
            using Tensor index = tensor(Positions, device: pruned.device);
            full.index_copy_(Dim, index, pruned);
            return full;
        }
    }

    /// <summary>Parameter name → how it is padded, for every parameter that pruning shrank (and that is padded).</summary>
    static Dictionary<string, Padding> PaddingOf(TransformerModel model, bool headsPadded)
    {
        var padding = new Dictionary<string, Padding>();
        void Add(NamedLinear linear, int dim, long fullSize, long[] positions)
        {
            if (positions.Length == fullSize) return;   // nothing removed here
            padding[linear.Name + ".weight"] = new Padding(dim, fullSize, positions);
            if (dim == 0 && linear.Layer.bias is not null) padding[linear.Name + ".bias"] = new Padding(0, fullSize, positions);
        }

        foreach (TransformerLayerView layer in model.Layers)
        {
            FeedForwardView ffn = layer.FeedForward;
            long[] neurons = ffn.PresentNeurons.Select(n => (long)n).ToArray();
            foreach (NamedLinear input in ffn.Inputs) Add(input, 0, ffn.OriginalIntermediateSize, neurons);
            Add(ffn.Output, 1, ffn.OriginalIntermediateSize, neurons);

            AttentionView a = layer.Attention;
            if (!headsPadded || a.NumHeads == a.OriginalNumHeads) continue;
            int hs = a.HeadDim, group = a.GroupSize;   // pruning removes whole groups: the group size never changes
            long queryWidth = (long)a.OriginalNumHeads * hs;
            long[] queryRows = Rows(a.PresentHeads, hs, 0);
            if (a.FusedQkv is { } qkv)   // GPT-2's c_attn: blocks [q | k | v], each queryWidth rows originally
                Add(qkv, 0, 3 * queryWidth, [.. queryRows, .. Rows(a.PresentHeads, hs, queryWidth), .. Rows(a.PresentHeads, hs, 2 * queryWidth)]);
            else
            {
                long[] keyValueRows = Rows(a.PresentHeads.Where(h => h % group == 0).Select(h => h / group).ToList(), hs, 0);
                Add(a.Query!, 0, queryWidth, queryRows);
                Add(a.Key!, 0, queryWidth / group, keyValueRows);
                Add(a.Value!, 0, queryWidth / group, keyValueRows);
            }
            Add(a.Output, 1, queryWidth, queryRows);
        }
        return padding;
    }

    /// <summary>offset + u·size … offset + u·size + size − 1 for each unit u, in order.</summary>
    static long[] Rows(IReadOnlyList<int> units, int size, long offset) =>
        units.SelectMany(u => Enumerable.Range(0, size).Select(i => offset + (long)u * size + i)).ToArray();
}
