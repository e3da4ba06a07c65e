using SparseTune.Data;
using SparseTune.Evaluation;
using SparseTune.Metrics;
using SparseTune.Models;
using SparseTune.Tokenization;
using SparseTune.Tuners;
using TorchSharp;

namespace SparseTune.Inference;

/// <summary>A file's answers, question by question in file order, and the SQuAD scores when the file has gold answers.</summary>
public sealed record QaFilePredictions(IReadOnlyList<QaExample> Questions, IReadOnlyList<QaPrediction> Answers, SquadScores? Scores,
    int SkippedRows, IReadOnlyList<string> SkippedReasons);

/// <summary>
/// Extractive question answering with an encoder's span head: a fine-tuned run's model/, or a base model with any
/// method's artifact merged into it in memory.
/// <code>
///   using var qa = QuestionAnsweringPredictor.Load("runs/squad/model");
///   var answer = qa.Answer("Who drives the bus?", "The driver, Elsa Dahl, has run the route since 1999.");
///   Console.WriteLine($"{answer.Text} [{answer.Start}, {answer.End})");
/// </code>
/// Contexts are windowed and answers extracted exactly as fine-tuning's evaluation does (<see cref="SquadEvaluation"/>).
/// </summary>
public sealed class QuestionAnsweringPredictor : IDisposable
{
    readonly TransformerModel model;
    readonly TokenizerEncoder encoder;
    readonly bool ownsModel;

    /// <param name="maxLength">Tokens per window, as the model was fine-tuned with (finetune's --max-length).</param>
    public QuestionAnsweringPredictor(TransformerModel model, TokenizerEncoder encoder, SquadTaskOptions? options = null, int maxLength = 384,
        int batchSize = 16, bool ownsModel = false)
    {
        if (model.Head != ModelHead.QuestionAnswering) throw new ArgumentException($"extractive QA needs a question-answering model, not {model.Head}", nameof(model));
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), "the batch size must be at least 1");
        this.model = model;
        this.encoder = encoder;
        this.ownsModel = ownsModel;
        Options = options ?? new SquadTaskOptions();
        BatchSize = batchSize;
        var problems = Options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems), nameof(options));
        Windows = Options.Windows(Math.Min(maxLength, TaskModel.UsablePositions(model.Config)), encoder.PairSpecialTokenCount);
    }

    /// <summary>
    /// Loads a question-answering model folder, or a base model with <paramref name="adapter"/> (any method's artifact,
    /// or a run folder holding one) merged in memory; the tokenizer comes from <paramref name="modelDirectory"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">Neither the folder nor the artifact is a question-answering model.</exception>
    public static QuestionAnsweringPredictor Load(string modelDirectory, string? adapter = null, SquadTaskOptions? options = null, int maxLength = 384,
        int batchSize = 16, string device = "cpu", Nn.Precision precision = Nn.Precision.Fp32)
    {
        var (model, tokenizer, _) = TaskModel.Load(modelDirectory, adapter, ModelHead.QuestionAnswering, "an extractive question-answering");
        try
        {
            model.to(Nn.ComputeDevice.Resolve(device));
            model.Precision = precision;
            return new QuestionAnsweringPredictor(model, new TokenizerEncoder(tokenizer), options, maxLength, batchSize, ownsModel: true);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    public SquadTaskOptions Options { get; }
    public int BatchSize { get; }
    /// <summary>How contexts are cut into windows.</summary>
    public QaFeatureOptions Windows { get; }
    public TransformerModel Model => model;

    /// <summary>The answer to one question about one context ("" when a v2.0-style no-answer wins: see <see cref="SquadTaskOptions.NullScoreThreshold"/>).</summary>
    public QaPrediction Answer(string question, string context, bool allowNoAnswer = false) =>
        Answer([new QaExample("0", question, context, [], false)], allowNoAnswer)[0];

    /// <summary>One answer per question, in order.</summary>
    public IReadOnlyList<QaPrediction> Answer(IReadOnlyList<QaExample> questions, bool allowNoAnswer = false, IProgress<int>? progress = null)
    {
        var features = QaFeatures.Build(questions, encoder, Windows);
        var (start, end) = SquadEvaluation.SpanLogits(model, features, encoder.PadId, BatchSize, progress);
        return QaAnswerExtractor.Extract(questions, features, start, end, Options.Extraction(allowNoAnswer));
    }

    /// <summary>
    /// Answers every question of a SQuAD JSON or JSONL file; with gold answers in the file, its exact match and F1 (the
    /// v2.0 rules when the file has unanswerable questions, and then "" may be predicted).
    /// </summary>
    public QaFilePredictions PredictFile(string path, bool skipBadRows = false, IProgress<int>? progress = null)
    {
        var data = SquadData.Load(path, new SquadDataOptions { SkipBadRows = skipBadRows, AnswersOptional = true });
        if (data.Examples.Count == 0) throw new InvalidDataException($"{path}: no questions");
        var answers = Answer(data.Examples, data.Version2, progress);
        bool labelled = data.Examples.Any(e => e.Answers.Count > 0 || e.IsImpossible);
        var scores = labelled ? SquadMetric.Evaluate(data.Examples, answers.ToDictionary(a => a.Id, a => a.Text), data.Version2) : null;
        return new QaFilePredictions(data.Examples, answers, scores, data.SkippedRows, data.SkippedReasons);
    }

    public void Dispose()
    {
        if (ownsModel) model.Dispose();
    }
}
