using System.Text.Json;
using SparseTune.Cli;
using SparseTune.Cli.Commands;
using SparseTune.Generation;
using SparseTune.Models;
using SparseTune.Tests.Data;
using SparseTune.Tests.Support;
using SparseTune.Training;
using Xunit;
using static TorchSharp.torch;

namespace SparseTune.Tests.Generation;

/// <summary>
/// The E2E evaluation end to end. Library level: gpt2-tiny with <see cref="CharEncoder"/> ids (all below its
/// vocabulary of 211). CLI level: gpt2-tiny's vocabulary is too small for the byte-level BPE test tokenizer
/// (293 ids), so the test builds a randomly initialised one-layer GPT-2 with that vocabulary and saves it with
/// the tokenizer files, which is all `sparsetune eval` needs.
/// </summary>
public sealed class E2EEvaluationTests(Gpt2TinyModel fixture) : IClassFixture<Gpt2TinyModel>, IDisposable
{
    readonly string temp = Fixtures.TempDirectory("e2e-eval");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    static readonly E2EGroup[] Groups =
    [
        new("a[b]", ["ab cd", "ab"], 1),
        new("c[d], e[f]", ["cd ef gh"], 3),
    ];

    /// <summary>Ids as space-separated numbers, so every generated token is one BLEU token.</summary>
    static string Numbers(IReadOnlyList<int> ids) => string.Join(' ', ids);

    [Fact]
    public void Evaluate_GeneratesFromTheTrainingPromptOfEachMr_AndScoresWithCorpusBleu()
    {
        var encoder = new CharEncoder(CharTemplate.Gpt);
        var options = new GenerationOptions { MaxNewTokens = 6, NumBeams = 2 };

        var result = E2EEvaluator.Evaluate(fixture.Model, Groups, encoder, Numbers, options);

        Assert.Equal(2, result.Predictions.Count);
        for (int i = 0; i < Groups.Length; i++)
        {
            // The prompt is the MR then EOS; the encoder's EOS (2) stops generation.
            int[] prompt = [.. CharEncoder.Chars(Groups[i].MeaningRepresentation), CharEncoder.Eos];
            var alone = SequenceGenerator.Generate(fixture.Model, prompt, options with { EosId = CharEncoder.Eos });
            Assert.Equal(alone.Tokens, result.Predictions[i].Tokens);
            Assert.Equal(Numbers(alone.Tokens), result.Predictions[i].Prediction);
            Assert.Equal(Groups[i].References, result.Predictions[i].References);
        }
        var expected = Bleu.Corpus(result.Predictions.Select(p => p.Prediction).ToList(), Groups.Select(g => g.References).ToList());
        Assert.Equal(expected.Score, result.Bleu.Score);

        // Scored against its own outputs as references, the model is perfect.
        var selfReferenced = Groups.Zip(result.Predictions, (g, p) => g with { References = [p.Prediction] }).ToList();
        var perfect = E2EEvaluator.Evaluate(fixture.Model, selfReferenced, encoder, Numbers, options);
        Assert.True(perfect.Predictions.Any(p => p.Tokens.Length >= 4), "need one output with a 4-gram");
        Assert.Equal(100, perfect.Bleu.Score, 9);
    }

    [Fact]
    public void Evaluate_RejectsMeaningRepresentationsLongerThanThePositions()
    {
        var tooLong = new E2EGroup(new string('x', 40), ["x"], 9);
        var error = Assert.Throws<InvalidDataException>(() =>
            E2EEvaluator.Evaluate(fixture.Model, [tooLong], new CharEncoder(CharTemplate.Gpt), Numbers, new GenerationOptions()));
        Assert.Contains("line 9 (41 tokens)", error.Message);
    }

    /// <summary>A one-layer GPT-2 with the byte-level BPE test tokenizer's 293 ids, saved as a Hugging Face folder.</summary>
    string BuildBpeModel()
    {
        string dir = Path.Combine(temp, "gpt2-bpe-model");
        var config = new Gpt2Config
        {
            ModelType = "gpt2", Architectures = ["GPT2LMHeadModel"], VocabSize = 293, NPositions = 128, NEmbd = 16, NLayer = 1, NHead = 2,
            BosTokenId = 292, EosTokenIdRaw = JsonDocument.Parse("292").RootElement,
        };
        manual_seed(11);
        using (var model = PretrainedModel.Create(config, ModelHead.CausalLM)) PretrainedModel.Save(model, dir);
        PretrainedModel.CopyTokenizerFiles(Fixtures.TestData("tokenizers", "gpt2-bpe"), dir);
        return dir;
    }

    [Fact]
    public void EvalCommand_WritesPredictionsAndPrintsBleu_ForAnE2EFile()
    {
        string model = BuildBpeModel();
        string predictions = Path.Combine(temp, "predictions.jsonl");
        var stdout = new StringWriter();
        var stderr = new StringWriter();

        int exit = SparseTuneCli.Run(
            ["eval", "--model", model, "--data", Fixtures.TestData("e2e", "e2e.jsonl"), "--beams", "2", "--max-new-tokens", "5",
             "--limit", "3", "--output", predictions],
            stdout, stderr);

        Assert.True(exit == 0, stderr.ToString());
        Assert.Matches(@"BLEU = \d+\.\d\d .* over 3 meaning representations", stdout.ToString());
        var lines = File.ReadAllLines(predictions);
        Assert.Equal(3, lines.Length);
        using var first = JsonDocument.Parse(lines[0]);
        Assert.Equal("name[The Eagle], eatType[coffee shop], food[French]", first.RootElement.GetProperty("meaning_representation").GetString());
        Assert.Equal(3, first.RootElement.GetProperty("references").GetArrayLength());
        Assert.InRange(first.RootElement.GetProperty("tokens").GetArrayLength(), 0, 5);
    }

    [Fact]
    public void EvalCommand_Library_MatchesTheEvaluatorOnTheSameModel()
    {
        string model = BuildBpeModel();
        var options = new EvalOptions
        {
            ModelDirectory = model, DataFile = Fixtures.TestData("e2e", "e2e.jsonl"), Limit = 2,
            Generation = new GenerationOptions { MaxNewTokens = 4, NumBeams = 1 },
        };
        var result = EvalCommand.Run(options);

        Assert.Equal(2, result.Predictions.Count);
        Assert.InRange(result.Bleu.Score, 0, 100);
        Assert.All(result.Predictions, p => Assert.True(p.Tokens.Length <= 4));
    }

    [Fact]
    public void FineTune_DetectsE2EData_AndEvalAppliesTheTrainedLoraAdapter()
    {
        string model = BuildBpeModel();
        string data = Fixtures.TestData("e2e", "e2e.jsonl");
        var outcome = FineTuneJob.Run(new FineTuneOptions
        {
            ModelDirectory = model, TrainFile = data, Method = "lora",
            Training = new TrainingOptions { MaxSteps = 2, BatchSize = 4, LearningRate = 1e-2, EvaluateBaseline = false, OutputDirectory = Path.Combine(temp, "run") },
        });
        Assert.Equal("CausalLM", outcome.Report.Task);
        using (var report = JsonDocument.Parse(File.ReadAllText(outcome.Outputs["report"])))
            Assert.Equal("E2E", report.RootElement.GetProperty("options").GetProperty("data").GetString());

        var options = new EvalOptions { ModelDirectory = model, DataFile = data, Limit = 1, Generation = new GenerationOptions { MaxNewTokens = 3 } };
        var log = new List<string>();
        var plain = EvalCommand.Run(options);
        var tuned = EvalCommand.Run(options with { AdapterDirectory = outcome.Outputs["adapter"] }, log.Add);
        Assert.Contains(log, l => l.StartsWith($"merged {outcome.Outputs["adapter"]} into"));
        Assert.NotEqual(plain.Predictions[0].LogProb, tuned.Predictions[0].LogProb);
    }

    [Fact]
    public void EvalCommand_RejectsNonE2EData_AndBadOptions_BeforeLoadingAnything()
    {
        var stderr = new StringWriter();
        int exit = SparseTuneCli.Run(
            ["eval", "--task", "e2e", "--model", Fixtures.Model("gpt2-tiny"), "--data", Fixtures.TestData("data", "alpaca.jsonl"), "--beams", "0"],
            new StringWriter(), stderr);

        Assert.Equal(2, exit);
        Assert.Contains("is not E2E JSONL", stderr.ToString());
        Assert.Contains("beams must be at least 1", stderr.ToString());
    }
}
