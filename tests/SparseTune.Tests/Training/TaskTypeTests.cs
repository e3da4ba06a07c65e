using System.Text.Json;
using SparseTune.Cli.Commands;
using SparseTune.Data;
using SparseTune.Evaluation;
using SparseTune.Inference;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Training;
using Xunit;
using Xunit.Abstractions;

namespace SparseTune.Tests.TrainingLoop;

/// <summary>
/// The seeds' other task types end to end on the bundled examples: extractive QA (demo/squad) and multiple choice
/// (demo/multiple-choice) fine-tune through the one job, their run folders reload with the right head, and
/// `eval` / `predict` reproduce the scores fine-tuning reported.
/// </summary>
public sealed class TaskTypeTests(ITestOutputHelper output) : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("tasks");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    FineTuneOutcome Run(string model, string train, string eval, string method, DataKind data = DataKind.Auto, int steps = 3, int maxLength = 128) =>
        FineTuneJob.Run(new FineTuneOptions
        {
            ModelDirectory = model, TrainFile = train, EvalFile = eval, Method = method, Data = data, MaxLength = maxLength,
            Training = new TrainingOptions { MaxSteps = steps, BatchSize = 8, LearningRate = 1e-3, OutputDirectory = Path.Combine(temp, method + "-" + data) },
        }, log: output.WriteLine);

    [Fact]
    public void Squad_FineTunesAnEncoderWithASpanHead_AndEvalAndPredictReproduceItsScores()
    {
        string train = Demo.Bundled("squad", "train.json"), dev = Demo.Bundled("squad", "dev.jsonl");
        Assert.Equal(DataKind.Squad, DataKinds.Detect(train));
        Assert.Equal(DataKind.Squad, DataKinds.Detect(dev));
        var outcome = Run(Demo.ModelDirectory(), train, dev, "full", steps: 4, maxLength: 96);
        var report = outcome.Report;
        Assert.Equal("QuestionAnswering", report.Task);
        Assert.InRange(report.Eval["f1"], 0, 100);
        Assert.InRange(report.Eval["exact_match"], 0, report.Eval["f1"]);
        Assert.Equal(47, report.Data!["train"]!.Examples);

        string model = outcome.Outputs["model"];
        Assert.Equal(ModelHead.QuestionAnswering, PretrainedModel.HeadOf(ModelConfig.Load(model)));
        var evaluated = DatasetEvaluation.Evaluate(new DatasetEvalOptions { ModelDirectory = model, DataFile = dev, MaxLength = 96 });
        Assert.Equal(DataKind.Squad, evaluated.Data);
        Assert.Equal(16, evaluated.Examples);
        Assert.Equal(report.Eval["f1"], evaluated.Metrics["f1"], 6);
        Assert.Equal(report.Eval["exact_match"], evaluated.Metrics["exact_match"], 6);

        // predict: one answer per question, its text exactly the context's characters at its span.
        string predictions = Path.Combine(temp, "answers.jsonl");
        var predicted = PredictCommand.RunQuestionAnswering(new PredictOptions
        {
            ModelDirectory = model, InputFile = dev, OutputFile = predictions, Predictor = new PredictorOptions { MaxLength = 96 },
        }, output.WriteLine);
        Assert.Equal(report.Eval["f1"], predicted.Scores!.F1, 6);
        var contexts = SquadData.Load(dev).Examples.ToDictionary(e => e.Id, e => e.Context);
        var lines = File.ReadAllLines(predictions);
        Assert.Equal(16, lines.Length);
        foreach (string line in lines)
        {
            using var json = JsonDocument.Parse(line);
            var root = json.RootElement;
            string id = root.GetProperty("id").GetString()!, answer = root.GetProperty("answer").GetString()!;
            int start = root.GetProperty("start").GetInt32(), end = root.GetProperty("end").GetInt32();
            Assert.NotEmpty(answer);
            Assert.Equal(answer, contexts[id][start..end]);
        }
    }

    [Fact]
    public void Squad_WithLoraOnABaseModel_TheAdapterCarriesTheSpanHeadAndPredictFindsIt()
    {
        string dev = Demo.Bundled("squad", "dev.jsonl");
        var outcome = Run(Demo.ModelDirectory(), Demo.Bundled("squad", "train.json"), dev, "lora", DataKind.Squad, steps: 2, maxLength: 96);
        var options = new PredictOptions
        {
            ModelDirectory = Demo.ModelDirectory(), AdapterPath = outcome.Outputs["adapter"], InputFile = dev, OutputFile = Path.Combine(temp, "lora.jsonl"),
            Predictor = new PredictorOptions { MaxLength = 96 },
        };
        Assert.True(PredictCommand.AnswersQuestions(options));
        var predicted = PredictCommand.RunQuestionAnswering(options, output.WriteLine);
        Assert.Equal(outcome.Report.Eval["f1"], predicted.Scores!.F1, 6);
    }

    [Fact]
    public void MultipleChoice_AnEncoderTrainsItsChoiceHead_AndEvalReproducesItsAccuracy()
    {
        string train = Demo.Bundled("multiple-choice", "train.jsonl"), dev = Demo.Bundled("multiple-choice", "eval.jsonl");
        Assert.Equal(DataKind.MultipleChoice, DataKinds.Detect(train));
        var outcome = Run(Demo.ModelDirectory(), train, dev, "lora");
        Assert.Equal("MultipleChoice", outcome.Report.Task);
        double accuracy = outcome.Report.Eval["accuracy"];
        Assert.InRange(accuracy, 0, 1);
        var evaluated = DatasetEvaluation.Evaluate(new DatasetEvalOptions { ModelDirectory = Demo.ModelDirectory(), AdapterPath = outcome.Outputs["adapter"], DataFile = dev });
        Assert.Equal(48, evaluated.Examples);
        Assert.Equal(accuracy, evaluated.Metrics["accuracy"], 9);
        // The adapter records its head, so the base model loads as a multiple-choice model with it.
        using (var model = SparseTune.Tuners.MethodArtifacts.LoadWithArtifact(Demo.ModelDirectory(), outcome.Outputs["adapter"], out _))
            Assert.Equal(ModelHead.MultipleChoice, model.Head);
        AssertPredictPicksAsEvaluated(Demo.ModelDirectory(), outcome.Outputs["adapter"], dev, accuracy, probabilities: true);
    }

    [Fact]
    public void MultipleChoice_ADecoderTrainsOnTheRightChoice_AndIsScoredByChoiceLikelihood()
    {
        string train = Demo.Bundled("multiple-choice", "train.jsonl"), dev = Demo.Bundled("multiple-choice", "eval.jsonl");
        var outcome = Run(Demo.Gpt2ModelDirectory(), train, dev, "lora", DataKind.MultipleChoice, steps: 2);
        var report = outcome.Report;
        Assert.Equal("CausalLM", report.Task);
        Assert.Equal(["accuracy", "accuracy_norm"], report.Eval.Keys.Order());
        var evaluated = DatasetEvaluation.Evaluate(new DatasetEvalOptions { ModelDirectory = Demo.Gpt2ModelDirectory(), AdapterPath = outcome.Outputs["adapter"], DataFile = dev });
        Assert.Equal(report.Eval["accuracy"], evaluated.Metrics["accuracy"], 9);
        Assert.Equal(report.Eval["accuracy_norm"], evaluated.Metrics["accuracy_norm"], 9);
        AssertPredictPicksAsEvaluated(Demo.Gpt2ModelDirectory(), outcome.Outputs["adapter"], dev, report.Eval["accuracy"], probabilities: false);
    }

    /// <summary>predict on a multiple-choice file: one pick per question whose text is its choice, the same accuracy as the evaluation.</summary>
    void AssertPredictPicksAsEvaluated(string model, string adapter, string dev, double accuracy, bool probabilities)
    {
        string path = Path.Combine(temp, $"picks-{Guid.NewGuid():N}.jsonl");
        var predicted = PredictCommand.RunMultipleChoice(new PredictOptions { ModelDirectory = model, AdapterPath = adapter, InputFile = dev, OutputFile = path }, output.WriteLine);
        Assert.Equal(accuracy, predicted.Accuracy!.Value, 9);
        var items = MultipleChoiceData.Read(dev).Items;
        var lines = File.ReadAllLines(path);
        Assert.Equal(items.Count, lines.Length);
        for (int i = 0; i < lines.Length; i++)
        {
            using var json = JsonDocument.Parse(lines[i]);
            int choice = json.RootElement.GetProperty("choice").GetInt32();
            Assert.Equal(items[i].Choices[choice], json.RootElement.GetProperty("answer").GetString());
            var scores = json.RootElement.GetProperty("scores").EnumerateArray().Select(s => s.GetDouble()).ToList();
            Assert.Equal(items[i].Choices.Count, scores.Count);
            Assert.Equal(scores.Max(), scores[choice]);
            if (probabilities) Assert.Equal(1.0, scores.Sum(), 4);
        }
    }

    [Fact]
    public void EvalCli_ResolvesTheTaskFromTheDataFile()
    {
        Assert.Equal(EvalTask.Squad, EvalCommand.ResolveTask(EvalTask.Auto, Demo.Bundled("squad", "dev-v2.json")));
        Assert.Equal(EvalTask.MultipleChoice, EvalCommand.ResolveTask(EvalTask.Auto, Demo.Bundled("multiple-choice", "eval.jsonl")));
        Assert.Equal(EvalTask.Classification, EvalCommand.ResolveTask(EvalTask.Auto, Demo.EvalFile()));
        Assert.Equal(EvalTask.Perplexity, EvalCommand.ResolveTask(EvalTask.Auto, Fixtures.TestData("data", "alpaca.jsonl")));
        Assert.Equal(EvalTask.Mmlu, EvalCommand.ResolveTask(EvalTask.Auto, Demo.Bundled("mmlu")));

        // An untuned masked-LM encoder has no multiple-choice head: one clear line.
        var refused = CliRun.Invoke(output, "eval", "--model", Demo.ModelDirectory(), "--data", Demo.Bundled("multiple-choice", "eval.jsonl"));
        Assert.Contains("multiple choice needs a multiple-choice head (a fine-tuned encoder) or a causal LM", CliRun.AssertOneLineError(refused));
        // Perplexity of the demo GPT-2 on Alpaca data, through the CLI.
        var perplexity = CliRun.Invoke(output, "eval", "--model", Demo.Gpt2ModelDirectory(), "--data", Fixtures.TestData("data", "alpaca.jsonl"), "--skip-bad-rows");
        Assert.Equal(0, perplexity.ExitCode);
        Assert.Matches(@"Alpaca: perplexity \d+\.\d{4}  loss \d\.\d{4} over \d+ examples", perplexity.Out);
    }

    [Fact]
    public void Squad_RefusesADecoder()
    {
        var error = Assert.Throws<ArgumentException>(() => Run(Demo.Gpt2ModelDirectory(), Demo.Bundled("squad", "train.json"), Demo.Bundled("squad", "dev.jsonl"), "lora"));
        Assert.Contains("extractive question answering needs an encoder (bert, roberta), not gpt2", error.Message);
    }
}
