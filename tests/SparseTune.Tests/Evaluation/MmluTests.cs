using System.Text.Json;
using SparseTune.Cli;
using SparseTune.Cli.Commands;
using SparseTune.Data;
using SparseTune.Evaluation;
using SparseTune.Generation;
using SparseTune.Models;
using SparseTune.Tests.Data;
using SparseTune.Tests.Support;
using SparseTune.Tokenization;
using SparseTune.Training;
using Xunit;
using static TorchSharp.torch;

namespace SparseTune.Tests.Evaluation;

/// <summary>
/// MMLU: the release layout, evaluate.py's prompt, shots dropped to fit, the answer-letter argmax, and
/// `sparsetune eval --task mmlu` on the bundled demo/mmlu data with the bundled GPT-2 (128 positions).
/// </summary>
public sealed class MmluTests : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("mmlu");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    static string DemoMmlu => Path.Combine(Path.GetDirectoryName(Demo.Gpt2ModelDirectory())!, "mmlu");

    static MmluQuestion Question(string question, string[] choices, int answer) => new("x.csv", 1, question, choices, answer);

    static readonly MmluSubject Physics = new("high_school_physics", "x.csv",
        [Question("What falls faster in a vacuum?", ["A feather", "A stone", "Neither", "It depends"], 2)],
        [
            Question("What is the unit of force?", ["Joule", "Newton", "Watt", "Pascal"], 1),
            Question("Light is a wave of", ["sound", "water", "electromagnetism", "pressure"], 2),
            Question("Unused third shot", ["a", "b", "c", "d"], 0),
        ],
        "dev.csv");

    [Fact]
    public void Prompt_IsEvaluatePysText_ForTwoShots()
    {
        string prompt = MmluData.Prompt(Physics.Name, Physics.Dev, 2, Physics.Questions[0]);

        // format_subject puts a space before every word, hence the two spaces after "about".
        const string Expected =
            "The following are multiple choice questions (with answers) about  high school physics.\n\n" +
            "What is the unit of force?\nA. Joule\nB. Newton\nC. Watt\nD. Pascal\nAnswer: B\n\n" +
            "Light is a wave of\nA. sound\nB. water\nC. electromagnetism\nD. pressure\nAnswer: C\n\n" +
            "What falls faster in a vacuum?\nA. A feather\nB. A stone\nC. Neither\nD. It depends\nAnswer:";
        Assert.Equal(Expected, prompt);
        Assert.Equal("The following are multiple choice questions (with answers) about  anatomy.\n\n", MmluData.Header("anatomy"));
    }

    [Fact]
    public void EncodePrompt_DropsShotsFromTheEndUntilItFits_ThenCutsTheQuestionsStart()
    {
        var encoder = new CharEncoder(CharTemplate.Gpt);                      // one token a character
        int Length(int shots) => MmluData.Prompt(Physics.Name, Physics.Dev, shots, Physics.Questions[0]).Length;

        var all = MmluEvaluation.EncodePrompt(encoder, Physics, Physics.Questions[0], shots: 5, maxLength: 10_000);
        Assert.Equal(3, all.Shots);                                             // the dev file has only three
        var fits = MmluEvaluation.EncodePrompt(encoder, Physics, Physics.Questions[0], shots: 3, maxLength: Length(1));
        Assert.Equal(1, fits.Shots);
        Assert.Equal(CharEncoder.Chars(MmluData.Prompt(Physics.Name, Physics.Dev, 1, Physics.Questions[0])), fits.Ids);
        Assert.Equal(1, MmluEvaluation.EncodePrompt(encoder, Physics, Physics.Questions[0], 3, Length(2) - 1).Shots);
        Assert.Equal(0, MmluEvaluation.EncodePrompt(encoder, Physics, Physics.Questions[0], 3, Length(1) - 1).Shots);

        // Not even zero-shot fits: the start goes, "Answer:" stays; a BOS prefix stays too.
        var cut = MmluEvaluation.EncodePrompt(encoder, Physics, Physics.Questions[0], 3, 30);
        Assert.Equal((0, Length(0) - 30), (cut.Shots, cut.DroppedTokens));
        Assert.EndsWith("\nD. It depends\nAnswer:", new string(cut.Ids.Select(i => (char)i).ToArray()));
        var llama = MmluEvaluation.EncodePrompt(new CharEncoder(CharTemplate.Llama), Physics, Physics.Questions[0], 3, 30);
        Assert.Equal(30, llama.Ids.Length);
        Assert.Equal(CharEncoder.Bos, llama.Ids[0]);
        Assert.Equal(cut.Ids[1..], llama.Ids[1..]);
    }

    /// <summary>Hand computation: a plain forward of each prompt, the last position's logits of the " A" … " D" tokens.</summary>
    static (int Prediction, double[] Probabilities) ByHand(TransformerModel model, TextTokenizer tokenizer, string prompt)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        model.eval();
        long[] ids = [.. tokenizer.Encode(prompt).Select(t => (long)t)];
        using var output = model.Forward(tensor(ids, [1, ids.Length]));
        Tensor last = output.Logits[0, ids.Length - 1].to_type(ScalarType.Float64);
        double[] logits = [.. "ABCD".Select(letter => last[tokenizer.Encode(" " + letter, addSpecialTokens: false)[^1]].item<double>())];
        int best = Array.IndexOf(logits, logits.Max());
        double[] exp = [.. logits.Select(l => Math.Exp(l - logits.Max()))];
        return (best, [.. exp.Select(e => e / exp.Sum())]);
    }

    [Fact]
    public void Answers_AreTheArgmaxOfTheLetterLogits_AndAccuracyAddsUpPerSubjectAndOverall()
    {
        using var model = TextGenerator.LoadCausalLM(Demo.Gpt2ModelDirectory(), null, null);
        var tokenizer = TextTokenizer.FromFolder(Demo.Gpt2ModelDirectory());
        var subjects = MmluData.Load(DemoMmlu);
        Assert.Equal(["computer_basics", "elementary_mathematics", "world_geography"], subjects.Select(s => s.Name));
        Assert.All(subjects, s => Assert.Equal((12, 5), (s.Questions.Count, s.Dev.Count)));

        var result = MmluEvaluation.Evaluate(model, new TokenizerEncoder(tokenizer), subjects, new MmluOptions { Shots = 5, BatchSize = 5 });

        Assert.Equal(36, result.Predictions.Count);
        var correctBySubject = new Dictionary<string, int>();
        foreach (var prediction in result.Predictions)
        {
            var subject = subjects.Single(s => s.Name == prediction.Subject);
            var question = subject.Questions[prediction.Index];
            // The prompt keeps the most shots that fit the 128 positions.
            string prompt = MmluData.Prompt(subject.Name, subject.Dev, prediction.Shots, question);
            Assert.InRange(tokenizer.Encode(prompt).Count, 1, 128);
            if (prediction.Shots < 5) Assert.True(tokenizer.Encode(MmluData.Prompt(subject.Name, subject.Dev, prediction.Shots + 1, question)).Count > 128);

            var (best, probabilities) = ByHand(model, tokenizer, prompt);
            Assert.Equal(MmluData.Letters[best], prediction.Prediction);
            Assert.Equal(question.AnswerLetter, prediction.Answer);
            for (int j = 0; j < 4; j++) Assert.Equal(probabilities[j], prediction.Probabilities[j], 4);
            correctBySubject[subject.Name] = correctBySubject.GetValueOrDefault(subject.Name) + (best == question.Answer ? 1 : 0);
        }
        foreach (var s in result.Subjects)
        {
            Assert.Equal(12, s.Questions);
            Assert.Equal(correctBySubject[s.Subject], s.Correct);
            Assert.Equal(correctBySubject[s.Subject] / 12.0, s.Accuracy, 12);
        }
        Assert.Equal(36, result.Questions);
        Assert.Equal(correctBySubject.Values.Sum() / 36.0, result.Accuracy, 12);
        Assert.Equal(correctBySubject.Values.Average(c => c / 12.0), result.MacroAccuracy, 12);
        Assert.Equal(0, result.TruncatedQuestions);
    }

    [Fact]
    public void AnswerTokens_AreTheLettersTokens_ForByteLevelBpeAndSentencePiece()
    {
        var gpt2 = TextTokenizer.FromFolder(Demo.Gpt2ModelDirectory());
        int[] ids = MmluEvaluation.AnswerTokenIds(new TokenizerEncoder(gpt2));
        Assert.Equal([" A", " B", " C", " D"], ids.Select(i => gpt2.Decode([i])));

        var llama = TextTokenizer.FromFolder(Fixtures.TestData("tokenizers", "llama-sentencepiece"));
        int[] llamaIds = MmluEvaluation.AnswerTokenIds(new TokenizerEncoder(llama));
        Assert.Equal(["A", "B", "C", "D"], llamaIds.Select(i => llama.Decode([i]).Trim()));
        Assert.Equal(4, llamaIds.Distinct().Count());
    }

    string WriteLayout(string name, Dictionary<string, string> files)
    {
        string dir = Path.Combine(temp, name);
        foreach (var (path, text) in files)
        {
            string full = Path.Combine(dir, path);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            File.WriteAllText(full, text);
        }
        return dir;
    }

    [Fact]
    public void Layout_ReadsQuotedFields_AndReportsBadRowsAsFileAndLine()
    {
        var math = MmluData.Load(DemoMmlu, subjects: ["elementary_mathematics"]).Single();
        Assert.Equal("What is the next number: 2, 4, 6, 8, ...?", math.Questions[7].Question);
        Assert.Equal("Which fraction equals \"one half\"?", math.Questions[11].Question);
        Assert.Equal((12, 1), (math.Questions[11].Line, math.Questions[11].Answer));

        string dir = WriteLayout("bad-fields", new()
        {
            ["test/a_test.csv"] = "q1,1,2,3,4,A\n\"multi\nline q\",1,2,3,4,B\nq3,1,2,3,C\n",
        });
        var fields = Assert.Throws<DataFormatException>(() => MmluData.Load(dir));
        Assert.Equal($"{Path.Combine(dir, "test", "a_test.csv")}:4: expected 6 fields (question, A, B, C, D, answer), found 5", fields.Message);

        string letter = WriteLayout("bad-letter", new() { ["test/a_test.csv"] = "q1,1,2,3,4,A\nq2,1,2,3,4,E\n" });
        var answer = Assert.Throws<DataFormatException>(() => MmluData.Load(letter));
        Assert.EndsWith("a_test.csv:2: the answer 'E' is not A, B, C or D", answer.Message);

        string devBad = WriteLayout("bad-dev", new() { ["test/a_test.csv"] = "q1,1,2,3,4,A\n", ["dev/a_dev.csv"] = "q,1,2,3,4\n" });
        Assert.EndsWith("a_dev.csv:1: expected 6 fields (question, A, B, C, D, answer), found 5", Assert.Throws<DataFormatException>(() => MmluData.Load(devBad)).Message);

        Assert.StartsWith("MMLU folder not found", Assert.Throws<DirectoryNotFoundException>(() => MmluData.Load(Path.Combine(temp, "nowhere"))).Message);
        string noTest = WriteLayout("no-test", new() { ["dev/a_dev.csv"] = "q1,1,2,3,4,A\n" });
        Assert.Contains("has no test/ folder", Assert.Throws<DirectoryNotFoundException>(() => MmluData.Load(noTest)).Message);
        string empty = WriteLayout("empty", new() { ["test/readme.txt"] = "" });
        Assert.EndsWith("has no SUBJECT_test.csv files", Assert.Throws<InvalidDataException>(() => MmluData.Load(empty)).Message);
        Assert.Contains("has no subject nope (it has: computer_basics, elementary_mathematics, world_geography)",
            Assert.Throws<InvalidDataException>(() => MmluData.Load(DemoMmlu, subjects: ["nope"])).Message);

        string val = WriteLayout("val", new() { ["val/a_val.csv"] = "q1,1,2,3,4,D\n" });
        Assert.Equal(3, MmluData.Load(val, MmluSplit.Val).Single().Questions[0].Answer);
    }

    [Fact]
    public void ASubjectWithoutDevFile_IsEvaluatedZeroShot_WithAWarning_AndANonCausalModelIsRefused()
    {
        string dir = WriteLayout("no-dev", new() { ["test/pets_test.csv"] = "Which animal barks?,Cat,Dog,Fish,Bird,B\n" });
        using var model = TextGenerator.LoadCausalLM(Demo.Gpt2ModelDirectory(), null, null);
        var encoder = new TokenizerEncoder(TextTokenizer.FromFolder(Demo.Gpt2ModelDirectory()));
        var log = new List<string>();
        var result = MmluEvaluation.Evaluate(model, encoder, MmluData.Load(dir), log: log.Add);
        Assert.Equal((1, 0), (result.Questions, result.Subjects[0].Shots));
        Assert.Contains("warning: pets has no dev/pets_dev.csv; evaluating it zero-shot", log);

        using var bert = PretrainedModel.Load(Fixtures.Model("bert-tiny"), ModelHead.MaskedLM);
        var error = Assert.Throws<ArgumentException>(() => MmluEvaluation.Evaluate(bert, encoder, MmluData.Load(dir)));
        Assert.StartsWith("MMLU evaluation needs a causal-LM model, not MaskedLM", error.Message);
    }

    [Fact]
    public void EvalCommand_RunMmlu_OnTheBundledData_ReportsAccuracyAndWritesPredictions()
    {
        string output = Path.Combine(temp, "mmlu.jsonl");
        var log = new List<string>();
        var result = EvalCommand.RunMmlu(new MmluEvalOptions
        {
            ModelDirectory = Demo.Gpt2ModelDirectory(), DataDirectory = DemoMmlu, OutputFile = output,
            Evaluation = new MmluOptions { Shots = 2 },
        }, log.Add);

        Assert.Equal(36, result.Questions);
        Assert.Equal([12, 12, 12], result.Subjects.Select(s => s.Questions));
        Assert.InRange(result.Accuracy, 0, 1);
        Assert.InRange(result.MacroAccuracy, 0, 1);
        Assert.Equal(3, log.Count(l => l.Contains("] ") && l.Contains(": accuracy ")));
        var lines = File.ReadAllLines(output);
        Assert.Equal(36, lines.Length);
        using var first = JsonDocument.Parse(lines[0]);
        Assert.Equal("computer_basics", first.RootElement.GetProperty("subject").GetString());
        Assert.Equal(0, first.RootElement.GetProperty("index").GetInt32());
        Assert.Equal("C", first.RootElement.GetProperty("answer").GetString());
        Assert.Equal(1, first.RootElement.GetProperty("probabilities").EnumerateArray().Sum(p => p.GetDouble()), 6);

        var one = EvalCommand.RunMmlu(new MmluEvalOptions { ModelDirectory = Demo.Gpt2ModelDirectory(), DataDirectory = DemoMmlu, Subjects = ["world_geography"], Evaluation = new MmluOptions { Shots = 0 } });
        Assert.Equal("world_geography", one.Subjects.Single().Subject);
        Assert.Equal(12, one.Questions);

        var bad = Assert.Throws<UsageException>(() => EvalCommand.RunMmlu(new MmluEvalOptions
        {
            ModelDirectory = Demo.Gpt2ModelDirectory(), DataDirectory = Path.Combine(temp, "nowhere"), Evaluation = new MmluOptions { Shots = -1 },
        }));
        Assert.Contains("mmlu: shots must be 0 or more", bad.Message);
        Assert.Contains("--data: MMLU folder not found", bad.Message);
    }

    [Fact]
    public void EvalCommand_RunMmlu_MergesAMethodsAdapterIntoTheBaseModel()
    {
        var outcome = FineTuneJob.Run(new FineTuneOptions
        {
            ModelDirectory = Demo.Gpt2ModelDirectory(), TrainFile = Fixtures.TestData("e2e", "e2e.jsonl"), Method = "lora",
            Training = new TrainingOptions { MaxSteps = 2, BatchSize = 4, LearningRate = 1e-2, EvaluateBaseline = false, OutputDirectory = Path.Combine(temp, "run") },
        });
        var options = new MmluEvalOptions
        {
            ModelDirectory = Demo.Gpt2ModelDirectory(), DataDirectory = DemoMmlu, Subjects = ["computer_basics"], Evaluation = new MmluOptions { Shots = 0 },
        };
        var log = new List<string>();
        var plain = EvalCommand.RunMmlu(options);
        var tuned = EvalCommand.RunMmlu(options with { AdapterDirectory = outcome.Outputs["adapter"] }, log.Add);

        Assert.Contains(log, l => l.StartsWith($"merged {outcome.Outputs["adapter"]} into"));
        Assert.Equal(12, tuned.Questions);
        Assert.NotEqual(plain.Predictions[0].Probabilities, tuned.Predictions[0].Probabilities);
    }

    [Fact]
    public void EvalCli_PicksMmluForAFolder_PrintsTheTable_AndRefusesFlagsOfAnotherTask()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = SparseTuneCli.Run(["eval", "--model", Demo.Gpt2ModelDirectory(), "--data", DemoMmlu, "--shots", "1", "--subjects", "computer_basics,world_geography"], stdout, stderr);

        Assert.True(exit == 0, stderr.ToString());
        string printed = stdout.ToString();
        Assert.Contains("computer_basics", printed);
        Assert.DoesNotContain("elementary_mathematics", printed);
        Assert.Matches(@"MMLU accuracy = [01]\.\d{4} over 24 questions in 2 subjects \(macro [01]\.\d{4}\)", printed);

        var refused = new StringWriter();
        Assert.Equal(2, SparseTuneCli.Run(["eval", "--task", "mmlu", "--model", Demo.Gpt2ModelDirectory(), "--data", DemoMmlu, "--beams", "2"], new StringWriter(), refused));
        Assert.Contains("--beams applies to --task e2e, not mmlu", refused.ToString());

        var unknown = new StringWriter();
        Assert.Equal(2, SparseTuneCli.Run(["eval", "--task", "translation", "--model", Demo.Gpt2ModelDirectory(), "--data", DemoMmlu], new StringWriter(), unknown));
        Assert.Contains("--task: 'translation' is not one of auto, e2e, mmlu, classification, squad, multiple-choice, perplexity", unknown.ToString());

        Assert.Equal(EvalTask.Mmlu, EvalCommand.ResolveTask(EvalTask.Auto, DemoMmlu));
        Assert.Equal(EvalTask.E2E, EvalCommand.ResolveTask(EvalTask.Auto, Fixtures.TestData("e2e", "e2e.jsonl")));
        Assert.Equal(EvalTask.E2E, EvalCommand.ResolveTask(EvalTask.E2E, DemoMmlu));
    }
}
