using System.Text.Json;
using SparseTune.Cli;
using SparseTune.Cli.Commands;
using SparseTune.Generation;
using SparseTune.Tests.Support;
using SparseTune.Training;
using Xunit;

namespace SparseTune.Tests.Generation;

/// <summary>Text in, text out on the bundled GPT-2 demo model: the library's <see cref="TextGenerator"/> and `sparsetune generate`.</summary>
public sealed class TextGeneratorTests : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("generate");
    static string Gpt2 => Demo.Gpt2ModelDirectory();

    public void Dispose() => Directory.Delete(temp, recursive: true);

    [Fact]
    public void Greedy_IsTheSameWithAndWithoutTheCache_AndSamplingRepeatsWithASeed()
    {
        using var generator = TextGenerator.Load(Gpt2);
        string[] prompts = ["The cat", "A programmer is someone who"];
        var options = new GenerationOptions { MaxNewTokens = 24 };
        var cached = generator.Generate(prompts, options);
        var recomputed = generator.Generate(prompts, options with { UseCache = false });
        Assert.Equal(cached.Select(c => c.Text), recomputed.Select(r => r.Text));
        Assert.All(cached, c => Assert.True(c.NewTokens > 0));

        var sample = options with { DoSample = true, TopK = 40, Temperature = 0.9, Seed = 11 };
        var first = generator.Generate(prompts, sample);
        var again = generator.Generate(prompts, sample);
        var other = generator.Generate(prompts, sample with { Seed = 12 });
        Assert.Equal(first.Select(f => f.Text), again.Select(a => a.Text));
        Assert.NotEqual(first.Select(f => f.Text), other.Select(o => o.Text));
    }

    [Fact]
    public void StopStrings_CutTheText_AndTheStreamAddsUpToIt()
    {
        using var generator = TextGenerator.Load(Gpt2);
        var options = new GenerationOptions { MaxNewTokens = 40 };
        string free = generator.Generate(["The cat"], options)[0].Text;
        // A stop string taken from the middle of the free completion.
        string stop = free.Trim().Split(' ')[2];
        int at = free.IndexOf(stop, StringComparison.Ordinal);
        var streamed = new System.Text.StringBuilder();

        var result = generator.Generate(["The cat"], options, [stop], (row, text) => { Assert.Equal(0, row); streamed.Append(text); })[0];

        Assert.Equal(free[..at], result.Text);
        Assert.Equal(FinishReason.Stop, result.Finish);
        Assert.Equal(result.Text, streamed.ToString());
        Assert.True(result.NewTokens < generator.Generate(["The cat"], options)[0].NewTokens);
    }

    [Theory]
    [InlineData("Hello wor", new[] { "world" }, 6)]      // "wor" may still become the stop string
    [InlineData("Hello world and", new[] { "world" }, 6)] // cut before it
    [InlineData("abc\uFFFD", new string[0], 3)]          // an unfinished UTF-8 character waits
    [InlineData("abc", new[] { "x" }, 3)]
    public void SafeToShow_HoldsBackWhatCouldStillChange(string text, string[] stops, int expected) =>
        Assert.Equal(expected, TextGenerator.SafeToShow(text, stops));

    [Fact]
    public void InstructionTuning_StoresTheAlpacaTemplate_AndGenerateWrapsPromptsInIt()
    {
        string data = Path.Combine(temp, "alpaca.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 8).Select(i => JsonSerializer.Serialize(new { instruction = $"Count to {i}", input = "", output = string.Join(" ", Enumerable.Range(1, i + 1)) })));
        var outcome = FineTuneJob.Run(new FineTuneOptions
        {
            ModelDirectory = Gpt2, TrainFile = data, Method = "lora",
            Training = new TrainingOptions { MaxSteps = 2, BatchSize = 4, EvaluateBaseline = false, OutputDirectory = Path.Combine(temp, "run") },
        });
        string adapter = outcome.Outputs["adapter"];
        Assert.True(File.Exists(Path.Combine(adapter, PromptTemplate.FileName)));
        Assert.True(File.Exists(outcome.Outputs["prompt_template"]));

        using var tuned = TextGenerator.Load(Gpt2, adapter);
        Assert.Equal("alpaca", tuned.Template?.Name);
        Assert.Equal(tuned.Tokenizer.Encode(PromptTemplate.Alpaca.Apply("Count to 3")), tuned.EncodePrompt("Count to 3"));
        using (var plain = TextGenerator.Load(Gpt2)) Assert.Null(plain.Template);

        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.Equal(0, SparseTuneCli.Run(["generate", "--model", Gpt2, "--adapter", adapter, "--prompt", "Count to 3", "--max-new-tokens", "5"], stdout, stderr));
        Assert.Contains("alpaca template", stderr.ToString());
        Assert.Equal(tuned.Generate(["Count to 3"], new GenerationOptions { MaxNewTokens = 5 })[0].Text + Environment.NewLine, stdout.ToString());
    }

    [Fact]
    public void GenerateCommand_WritesCompletionsToStdout_AndJsonl()
    {
        string prompts = Path.Combine(temp, "prompts.txt");
        File.WriteAllLines(prompts, ["The cat", "", "A dog"]);
        string output = Path.Combine(temp, "out.jsonl");
        var stdout = new StringWriter();
        var stderr = new StringWriter();

        int exit = SparseTuneCli.Run(["generate", "--model", Gpt2, "--prompts", prompts, "--prompt", "Hello", "--max-new-tokens", "6", "--output", output], stdout, stderr);

        Assert.Equal(0, exit);
        var rows = File.ReadAllLines(output).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["Hello", "The cat", "A dog"], rows.Select(r => r.GetProperty("prompt").GetString()));
        Assert.All(rows, r => Assert.InRange(r.GetProperty("new_tokens").GetInt32(), 0, 6));
        string expected = string.Concat(rows.Select(r => r.GetProperty("completion").GetString() + Environment.NewLine + Environment.NewLine));
        Assert.Equal(expected, stdout.ToString());
        Assert.Contains("tokens/s", stderr.ToString());
    }

    [Fact]
    public void DeviceAuto_FallsBackToTheCpu_WithOneLineSayingSo()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int exit = SparseTuneCli.Run(["generate", "--model", Gpt2, "--prompt", "The cat", "--max-new-tokens", "4", "--device", "auto"], stdout, stderr);
        Assert.Equal(0, exit);
        Assert.Single(stderr.ToString().Split('\n'), l => l.Contains("no CUDA device available, running on the CPU"));
        using var generator = TextGenerator.Load(Gpt2);
        Assert.Equal(generator.Generate(["The cat"], new GenerationOptions { MaxNewTokens = 4 })[0].Text + Environment.NewLine, stdout.ToString());
    }

    [Fact]
    public void GenerateCommand_BadInputs_GiveOneLineErrors()
    {
        string empty = Path.Combine(temp, "empty.txt");
        File.WriteAllText(empty, "\n  \n");
        string longPrompt = string.Join(' ', Enumerable.Repeat("word", 200));
        (string[] Args, string Message)[] cases =
        [
            (["generate", "--model", Path.Combine(temp, "nope"), "--prompt", "x"], "folder not found"),
            (["generate", "--model", Gpt2], "give --prompt TEXT"),
            (["generate", "--model", Gpt2, "--prompts", empty], "no prompts"),
            (["generate", "--model", Gpt2, "--prompt", longPrompt], "leaves no room within the model's 128 positions"),
            (["generate", "--model", Gpt2, "--prompt", " "], "prompt 1 is empty"),
            (["generate", "--model", Gpt2, "--prompt", "x", "--top-p", "1.5"], "top-p must be in (0, 1]"),
            (["generate", "--model", Fixtures.Model("bert-tiny"), "--prompt", "x"], "tokenizer"),
            (["generate", "--model", Gpt2, "--prompt", "x", "--device", "cuda"], "no CUDA device is available"),
            (["generate", "--model", Gpt2, "--prompt", "x", "--device", "gpu"], "--device: unknown 'gpu'"),
        ];
        foreach (var (args, message) in cases)
        {
            var stderr = new StringWriter();
            int exit = SparseTuneCli.Run(args, new StringWriter(), stderr);
            Assert.NotEqual(0, exit);
            Assert.Contains(message, stderr.ToString());
            Assert.Single(stderr.ToString().Trim().Split('\n'));
        }
    }
}
