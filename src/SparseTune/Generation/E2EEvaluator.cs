using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using SparseTune.Data;
using SparseTune.IO;
using SparseTune.Models;

namespace SparseTune.Generation;

/// <summary>What the model generated for one meaning representation, next to the references it is scored against.</summary>
public sealed record E2EPrediction
{
    [JsonPropertyName("meaning_representation")] public required string MeaningRepresentation { get; init; }
    [JsonPropertyName("prediction")] public required string Prediction { get; init; }
    [JsonPropertyName("references")] public required IReadOnlyList<string> References { get; init; }
    [JsonPropertyName("tokens")] public required int[] Tokens { get; init; }
    [JsonPropertyName("log_prob")] public double LogProb { get; init; }
    [JsonPropertyName("ended_with_eos")] public bool EndedWithEos { get; init; }
}

/// <summary>Predictions for every meaning representation and the corpus BLEU over them.</summary>
public sealed record E2EEvaluation(IReadOnlyList<E2EPrediction> Predictions, BleuScore Bleu);

/// <summary>
/// The E2E NLG evaluation: one generation per distinct meaning representation (prompted exactly as in training,
/// <see cref="E2EData.PromptIds"/>), scored with corpus BLEU against all of that MR's references.
/// </summary>
public static class E2EEvaluator
{
    /// <param name="decode">Turns generated ids (without the EOS) back into text, e.g. <c>TextTokenizer.Decode</c>.</param>
    /// <param name="options">Decoding; a null <see cref="GenerationOptions.EosId"/> becomes the encoder's EOS, which ends references in training.</param>
    /// <param name="progress">Reports how many meaning representations are done.</param>
    /// <exception cref="InvalidDataException">A meaning representation too long for the model's positions.</exception>
    public static E2EEvaluation Evaluate(TransformerModel model, IReadOnlyList<E2EGroup> groups, ITextEncoder encoder,
        Func<IReadOnlyList<int>, string> decode, GenerationOptions options,
        BleuTokenizer tokenizer = BleuTokenizer.ThirteenA, bool lowercase = false, IProgress<int>? progress = null)
    {
        options = options with { EosId = options.EosId ?? encoder.EosId };
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));
        var prompts = groups.Select(g => E2EData.PromptIds(encoder, g.MeaningRepresentation)).ToList();
        int maxPositions = model.Config.MaxPositions;
        var tooLong = groups.Zip(prompts).Where(p => p.Second.Length >= maxPositions).Select(p => $"line {p.First.FirstLine} ({p.Second.Length} tokens)").ToList();
        if (tooLong.Count > 0)
            throw new InvalidDataException($"{tooLong.Count} meaning representations leave no room to generate within the model's {maxPositions} positions: {string.Join(", ", tooLong.Take(5))}");

        var predictions = new List<E2EPrediction>(groups.Count);
        for (int i = 0; i < groups.Count; i++)
        {
            GeneratedSequence output = SequenceGenerator.Generate(model, prompts[i], options);
            predictions.Add(new E2EPrediction
            {
                MeaningRepresentation = groups[i].MeaningRepresentation,
                Prediction = decode(output.Tokens).Trim(),
                References = groups[i].References,
                Tokens = output.Tokens,
                LogProb = output.LogProb,
                EndedWithEos = output.EndedWithEos,
            });
            progress?.Report(i + 1);
        }
        var bleu = Bleu.Corpus(predictions.Select(p => p.Prediction).ToList(), predictions.Select(p => p.References).ToList(), tokenizer, lowercase);
        return new E2EEvaluation(predictions, bleu);
    }

    /// <summary>Writes one JSON object a line (meaning_representation, prediction, references, tokens, log_prob, ended_with_eos), atomically.</summary>
    public static void WritePredictions(string path, IEnumerable<E2EPrediction> predictions)
    {
        var text = new StringBuilder();
        foreach (var prediction in predictions) text.Append(JsonSerializer.Serialize(prediction, JsonOptions)).Append('\n');
        AtomicFile.WriteAllText(path, text.ToString());
    }

    static readonly JsonSerializerOptions JsonOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
