using SparseTune.Tuners;
using static TorchSharp.torch;

namespace SparseTune.Models;

/// <summary>
/// Forward FLOPs per token of the transformer blocks — the part that structured and unstructured pruning shrink
/// (embeddings and the task head are left out): 2 per multiply-add of every block linear, plus the attention products
/// QKᵀ and AV, 4·T·(heads·head size) per layer at sequence length T. With <c>skipZeros</c> a weight that is exactly
/// zero costs nothing (the count a sparse kernel would run; unstructured pruning saves only in that view).
/// </summary>
public static class InferenceFlops
{
    /// <summary>The sequence length the attention term is counted at: the seeds' GLUE scripts' max_seq_length.</summary>
    public const int ReferenceSequenceLength = 128;

    public static double PerToken(TransformerModel model, bool skipZeros, int sequenceLength = ReferenceSequenceLength)
    {
        double flops = 0;
        using (no_grad())
        {
            foreach (var (_, layer) in ModuleSelection.BlockLinears(model))
            {
                using var scope = NewDisposeScope();
                flops += 2.0 * (skipZeros ? layer.weight.count_nonzero().item<long>() : layer.weight.numel());
            }
        }
        foreach (TransformerLayerView view in model.Layers)
            flops += 4.0 * sequenceLength * view.Attention.NumHeads * view.Attention.HeadDim;
        return flops;
    }
}
