using SparseTune.Data;
using SparseTune.Evaluation;
using SparseTune.Models;
using SparseTune.Tokenization;
using SparseTune.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Inference;

/// <summary>
/// One question's pick: the chosen choice's index and text, and a score per choice — the softmax probability across
/// choices for an encoder's multiple-choice head, the summed log-likelihood of the choice's tokens for a decoder.
/// </summary>
public sealed record ChoiceAnswer(MultipleChoiceItem Item, int Choice, IReadOnlyList<double> Scores)
{
    public string Text => Item.Choices[Choice];
}

/// <summary>A file's picks in file order, the accuracy when every question has a label, and the rows skipped.</summary>
public sealed record ChoiceFilePredictions(IReadOnlyList<ChoiceAnswer> Answers, double? Accuracy, int SkippedRows, IReadOnlyList<string> SkippedReasons);

/// <summary>
/// Multiple choice with a fine-tuned model: an encoder's multiple-choice head, or a causal LM that picks the choice
/// whose tokens it finds most likely after the prompt (<see cref="MultipleChoiceEvaluation"/>); a run's model/, or a base
/// model with any method's artifact merged in memory. Questions are encoded as fine-tuning encoded them.
/// </summary>
public sealed class MultipleChoicePredictor : IDisposable
{
    readonly TransformerModel model;
    readonly TokenizerEncoder encoder;

    MultipleChoicePredictor(TransformerModel model, TokenizerEncoder encoder, int maxLength, int batchSize)
    {
        this.model = model;
        this.encoder = encoder;
        MaxLength = Math.Min(maxLength, TaskModel.UsablePositions(model.Config));
        BatchSize = batchSize;
    }

    /// <exception cref="InvalidDataException">The model is neither a multiple-choice encoder nor a causal LM.</exception>
    public static MultipleChoicePredictor Load(string modelDirectory, string? adapter = null, int maxLength = 128, int batchSize = 16,
        string device = "cpu", Nn.Precision precision = Nn.Precision.Fp32)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), "the batch size must be at least 1");
        var (model, tokenizer, _) = TaskModel.Load(modelDirectory, adapter, null, "a multiple-choice");
        try
        {
            if (model.Head is not (ModelHead.MultipleChoice or ModelHead.CausalLM))
                throw new InvalidDataException($"{modelDirectory} is a {model.Head} model: multiple choice needs a multiple-choice head (a fine-tuned encoder) or a causal LM");
            model.to(Nn.ComputeDevice.Resolve(device));
            model.Precision = precision;
            return new MultipleChoicePredictor(model, new TokenizerEncoder(tokenizer), maxLength, batchSize);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public int MaxLength { get; }
    public int BatchSize { get; }
    public TransformerModel Model => model;

    /// <summary>One pick per question, in order.</summary>
    public IReadOnlyList<ChoiceAnswer> Predict(IReadOnlyList<MultipleChoiceItem> items, string source = "questions")
    {
        if (model.Head == ModelHead.CausalLM)
        {
            var scored = MultipleChoiceEvaluation.Score(model, items, encoder, MaxLength, BatchSize);
            return scored.Predictions.Select(p => new ChoiceAnswer(p.Item, p.BySum, p.Scores.Select(s => s.LogLikelihood).ToList())).ToList();
        }
        var examples = MultipleChoiceData.EncoderExamples(source, items, encoder, MaxLength);
        var batcher = new Batcher(examples, TaskKind.MultipleChoice, encoder.PadId, new BatcherOptions { BatchSize = BatchSize, Shuffle = false });
        var answers = new ChoiceAnswer[items.Count];
        ChoiceScorer.InEvalMode(model, () =>
        {
            foreach (int[] indices in batcher.EpochBatches(0))
            {
                using var scope = NewDisposeScope();
                using var batch = batcher.Build(indices).ToTrainingBatch().To(model.Device);
                using var output = model.Forward(batch.InputIds, batch.AttentionMask, batch.TokenTypeIds);
                Tensor probabilities = output.Logits.to_type(ScalarType.Float32).softmax(-1).cpu();   // (B, choices)
                for (int row = 0; row < indices.Length; row++)
                {
                    double[] p = probabilities[row].data<float>().Select(v => (double)v).ToArray();
                    answers[indices[row]] = new ChoiceAnswer(items[indices[row]], Array.IndexOf(p, p.Max()), p);
                }
            }
        });
        return answers;
    }

    /// <summary>
    /// The accuracy over labelled questions; a decoder's also by the per-token mean log-likelihood (accuracy_norm), as
    /// fine-tuning's evaluation reports them.
    /// </summary>
    public IReadOnlyDictionary<string, double> Metrics(IReadOnlyList<MultipleChoiceItem> items, string source = "questions")
    {
        if (items.Any(i => i.Label is null)) throw new InvalidDataException($"{source}: every question needs a label to be scored");
        if (model.Head == ModelHead.CausalLM) return MultipleChoiceEvaluation.Score(model, items, encoder, MaxLength, BatchSize).Metrics;
        var answers = Predict(items, source);
        return new Dictionary<string, double> { ["accuracy"] = answers.Average(a => a.Choice == a.Item.Label ? 1.0 : 0.0) };
    }

    /// <summary>Picks for every question of a multiple-choice JSONL file (labels optional; with them, the accuracy).</summary>
    public ChoiceFilePredictions PredictFile(string path, bool skipBadRows = false)
    {
        var data = MultipleChoiceData.Read(path, skipBadRows, labelOptional: true);
        if (data.Items.Count == 0) throw new InvalidDataException($"{path}: no multiple-choice questions");
        var answers = Predict(data.Items, path);
        double? accuracy = data.Items.All(i => i.Label is not null) ? answers.Average(a => a.Choice == a.Item.Label ? 1.0 : 0.0) : null;
        return new ChoiceFilePredictions(answers, accuracy, data.SkippedRows, data.SkippedReasons);
    }

    public void Dispose() => model.Dispose();
}
