using SparseTune.Models;
using SparseTune.Tokenization;
using SparseTune.Tuners;

namespace SparseTune.Inference;

/// <summary>Loading a fine-tuned model for use: a run's model/ folder, or a base model with any method's artifact merged in memory.</summary>
public static class TaskModel
{
    /// <summary>
    /// The model of <paramref name="modelDirectory"/> with its own head, or the base with <paramref name="adapter"/>
    /// (any method's artifact, or a run folder holding one) applied; the tokenizer comes from the model folder.
    /// </summary>
    /// <param name="head">The head the caller needs; null: any.</param>
    /// <param name="what">How an error names the model the caller needs ("an extractive question-answering").</param>
    /// <exception cref="InvalidDataException">The model (or the artifact) has another head.</exception>
    public static (TransformerModel Model, TextTokenizer Tokenizer, string? Artifact) Load(string modelDirectory, string? adapter, ModelHead? head, string what)
    {
        if (!Directory.Exists(modelDirectory)) throw new DirectoryNotFoundException($"model folder not found: {modelDirectory}");
        var tokenizer = TextTokenizer.FromFolder(modelDirectory);
        var config = ModelConfig.Load(modelDirectory);
        TokenizerChecks.AgainstModel(tokenizer, config, modelDirectory);
        if (adapter is null)
        {
            ModelHead own = PretrainedModel.HeadOf(config);
            if (head is { } needed && own != needed)
                throw new InvalidDataException(
                    $"{modelDirectory} is a {own} model ({string.Join(", ", config.Architectures ?? [])}), not {what} model; pass a fine-tuned run's model/ or the base model with the run's artifact as adapter");
            return (PretrainedModel.Load(modelDirectory), tokenizer, null);
        }
        var model = MethodArtifacts.LoadWithArtifact(modelDirectory, adapter, out string artifact);
        if (head is { } wanted && model.Head != wanted)
        {
            model.Dispose();
            throw new InvalidDataException($"{artifact} was trained for {model.Head}, not as {what} model");
        }
        return (model, tokenizer, artifact);
    }

    /// <summary>Tokens a model can take: RoBERTa's positions start after its pad id (padding_idx + 1, as Hugging Face numbers them).</summary>
    public static int UsablePositions(ModelConfig config) =>
        config is BertConfig { IsRoberta: true } ? config.MaxPositions - (config.PadTokenId ?? 1) - 1 : config.MaxPositions;
}
