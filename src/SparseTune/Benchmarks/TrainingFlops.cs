using SparseTune.Models;

namespace SparseTune.Benchmarks;

/// <summary>
/// Model FLOPs of one training step, the numerator of MFU (PaLM, appendix B):
///   FLOPs = 6 · N · tokens + 12 · L · d · T · tokens
/// where N counts the parameters of every matrix multiply (all weights except embeddings' lookup tables, plus the
/// LM head when it projects to the vocabulary), L is the layer count, d the hidden size and T the sequence
/// length: 2 FLOPs per multiply-add, ×3 for forward + the two backward products, and the attention score and
/// value products (QKᵀ and AV) that parameter counts miss. Methods that skip work (frozen weights need no
/// weight gradient) still count the full-model FLOPs, so MFU compares them on the same scale as ratios of time.
/// </summary>
public static class TrainingFlops
{
    public static double PerStep(TransformerModel model, int batch, int sequenceLength)
    {
        long tokens = (long)batch * sequenceLength;
        long matmulParameters = model.NamedLinears().Sum(l => l.Layer.weight.numel());
        var config = model.Config;
        if (model.Head is ModelHead.CausalLM or ModelHead.MaskedLM && !model.NamedLinears().Any(l => l.Layer.OutFeatures == config.VocabSize))
            matmulParameters += (long)config.VocabSize * config.HiddenSize; // tied output projection
        double attention = 12.0 * config.NumLayers * config.HiddenSize * sequenceLength;
        return (6.0 * matmulParameters + attention) * tokens;
    }
}
