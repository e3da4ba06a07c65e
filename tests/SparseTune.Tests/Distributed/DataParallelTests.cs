using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using SparseTune.Cli.Commands;
using SparseTune.IO;
using SparseTune.Tests.Support;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.Distributed;

/// <summary>
/// Data parallelism over MPI, on loopback: the built CLI under <c>mpirun --oversubscribe -np 2</c>. Without mpirun on
/// the PATH these tests say so and pass (CI's .ci/run installs openmpi-bin).
/// </summary>
public class DataParallelTests(ITestOutputHelper output)
{
    [Fact]
    public void MpiCheck_TwoRanksAllReduceAndBroadcastKnownNumbers()
    {
        if (Mpirun() is not { } mpirun) { output.WriteLine("skipped: mpirun not found (apt-get install openmpi-bin)"); return; }
        var (code, text) = Launch(mpirun, 2, ["mpi-check"]);
        Assert.True(code == 0, text);
        var lines = JsonLines(text);
        Assert.Equal([0, 1], lines.Select(l => l.GetProperty("rank").GetInt32()).Order());
        foreach (var line in lines)
        {
            Assert.Equal(2, line.GetProperty("size").GetInt32());
            Assert.True(line.GetProperty("ok").GetBoolean(), text);
            Assert.Equal(3, line.GetProperty("sum").GetDouble());   // 1 + 2
            Assert.Equal(0, line.GetProperty("mean_max_error").GetDouble());
        }
    }

    /// <summary>
    /// The issue's test: two ranks at --batch-size b train as one process at 2b — the same loss at every step and the
    /// same trainable tensors after 5 steps (dropout off: the model's and LoRA's), through the whole finetune command.
    /// SIFT selects its indices from the first batch's gradients (averaged over the ranks); PST's masks follow the scores.
    /// </summary>
    [Theory]
    [InlineData("lora", "bert")]
    [InlineData("full", "bert")]
    [InlineData("sift", "bert")]
    [InlineData("pst", "bert")]
    [InlineData("dsee", "bert")]
    [InlineData("light-peft", "bert")]
    [InlineData("lora", "gpt2")]
    public void TwoRanksAtBatchB_TrainAsOneProcessAtBatch2B(string method, string family)
    {
        if (Mpirun() is not { } mpirun) { output.WriteLine("skipped: mpirun not found (apt-get install openmpi-bin)"); return; }
        string dir = Fixtures.TempDirectory("dp-" + method);
        try
        {
            var (model, train, data) = Setup(dir, family);
            // --adam-epsilon 1e-6: BERT's key bias has a gradient that is zero in exact arithmetic (a softmax does not see a
            // shift common to all scores of a query), so what backward computes for it is rounding noise, different in
            // any two summation orders; AdamW at ε = 1e-8 turns that noise into steps of ±lr. A larger ε keeps the noise noise.
            string[] Args(int batch, string outDir, int steps = 5) =>
            [
                "finetune", "--model", model, "--train", train, "--data", data, "--method", method, "--max-steps", steps.ToString(), "--max-length", "32",
                "--batch-size", batch.ToString(), "--no-baseline", "--save-every", "5", "--warmup-ratio", "0", "--lr", "1e-3", "--adam-epsilon", "1e-6",
                "--output", Path.Combine(dir, outDir), .. MethodArguments(method),
            ];
            var (oneCode, oneText) = Launch(null, 1, [.. Args(4, "one"), "--distributed", "none"]);
            Assert.True(oneCode == 0, oneText);
            var (twoCode, twoText) = Launch(mpirun, 2, Args(2, "two"));
            Assert.True(twoCode == 0, twoText);
            Assert.Contains("data parallel: 2 ranks", twoText);

            var oneLosses = Losses(Path.Combine(dir, "one"));
            var twoLosses = Losses(Path.Combine(dir, "two"));
            Assert.Equal(5, oneLosses.Length);
            Assert.Equal(5, twoLosses.Length);
            double lossDiff = oneLosses.Zip(twoLosses, (a, b) => Math.Abs(a - b)).Max();

            double tensorDiff = 0;
            string worst = "";
            using (var scope = NewDisposeScope())
            {
                var one = SafeTensors.Load(Path.Combine(dir, "one", "checkpoint", "trainable.safetensors"));
                var two = SafeTensors.Load(Path.Combine(dir, "two", "checkpoint", "trainable.safetensors"));
                Assert.Equal(one.Keys.Order(), two.Keys.Order());
                foreach (var (name, tensor) in one)
                {
                    if (!tensor.is_floating_point() || tensor.numel() == 0) continue;
                    double d = (tensor - two[name]).abs().max().item<float>();
                    if (d > tensorDiff) (tensorDiff, worst) = (d, name);
                }
            }
            output.WriteLine($"{method} {family}: max |loss diff| {lossDiff:E2}, max |tensor diff| {tensorDiff:E2} ({worst})");
            Assert.True(lossDiff <= 1e-5, $"losses differ by {lossDiff}: one {string.Join(", ", oneLosses)}; two {string.Join(", ", twoLosses)}");
            Assert.True(tensorDiff <= 1e-5, $"{worst} differs by {tensorDiff}");
            // Rank 0 alone wrote the run's files; its checkpoint records the rank count, and resuming with another is refused.
            var state = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "two", "checkpoint", "trainer_state.json")))!;
            Assert.Equal(2, state["world_size"]!.GetValue<int>());
            var resumed = CliRun.Invoke(output, [.. Args(4, "two", steps: 6), "--resume", Path.Combine(dir, "two", "checkpoint"), "--distributed", "none"]);
            Assert.Contains("written by 2 processes, this run has 1", CliRun.AssertOneLineError(resumed));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>
    /// A rank that dies mid-run (SIGKILL at the start of step 5, no MPI_Finalize) ends the job: mpirun exits non-zero
    /// within a minute instead of leaving the other rank waiting in its all-reduce. The step-3 checkpoint it left,
    /// resumed with two ranks, reproduces the uninterrupted two-rank run: the same losses, bit for bit, and the same
    /// trained tensors.
    /// </summary>
    [Fact]
    public void KilledRank_EndsTheJob_AndTheTwoRankCheckpointResumesExactly()
    {
        if (Mpirun() is not { } mpirun) { output.WriteLine("skipped: mpirun not found (apt-get install openmpi-bin)"); return; }
        string dir = Fixtures.TempDirectory("dp-resume");
        try
        {
            var (model, train, data) = Setup(dir, "bert");
            string[] Args(string outDir) =>
            [
                "finetune", "--model", model, "--train", train, "--data", data, "--method", "lora", "--lora-dropout", "0", "--max-steps", "6",
                "--max-length", "32", "--batch-size", "2", "--no-baseline", "--save-every", "3", "--warmup-ratio", "0", "--lr", "1e-3",
                "--output", Path.Combine(dir, outDir),
            ];
            var (wholeCode, wholeText) = Launch(mpirun, 2, Args("whole"));
            Assert.True(wholeCode == 0, wholeText);

            var kill = new Dictionary<string, string> { ["SPARSETUNE_TEST_KILL_RANK"] = "1", ["SPARSETUNE_TEST_KILL_AT_STEP"] = "5" };
            var clock = Stopwatch.StartNew();
            var (cutCode, cutText) = Launch(mpirun, 2, Args("cut"), kill, TimeSpan.FromSeconds(60));
            output.WriteLine($"killed run: exit {cutCode} after {clock.Elapsed.TotalSeconds:0.0} s\n{cutText}");
            Assert.NotEqual(0, cutCode);
            var state = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "cut", "checkpoint", "trainer_state.json")))!;
            Assert.Equal(3, state["step"]!.GetValue<int>());

            var (resumedCode, resumedText) = Launch(mpirun, 2, [.. Args("cut"), "--resume", Path.Combine(dir, "cut", "checkpoint")]);
            Assert.True(resumedCode == 0, resumedText);
            Assert.Equal(Losses(Path.Combine(dir, "whole")), Losses(Path.Combine(dir, "cut")));
            Assert.Equal(LossLines(Path.Combine(dir, "whole")), LossLines(Path.Combine(dir, "cut")));
            using var scope = NewDisposeScope();
            var whole = SafeTensors.Load(Path.Combine(dir, "whole", "checkpoint", "trainable.safetensors"));
            var cut = SafeTensors.Load(Path.Combine(dir, "cut", "checkpoint", "trainable.safetensors"));
            Assert.Equal(whole.Keys.Order(), cut.Keys.Order());
            foreach (var (name, tensor) in whole) Assert.True(tensor.eq(cut[name]).all().item<bool>(), name);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>
    /// bench --distributed under 2 ranks: one row per method; LoRA all-reduces exactly its trainable values in float32 and
    /// full fine-tuning every model parameter, plus 8 bytes per scalar (the micro-batch's loss share, the step's loss
    /// and tokens, one "has a gradient" flag per trainable tensor). Without mpirun it refuses in one line.
    /// </summary>
    [Fact]
    public void BenchDistributed_CountsTheTrainableGradientsAllReducedPerStep()
    {
        var refused = CliRun.Invoke(output, "bench", "--distributed", "--preset", "tiny");
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("needs mpirun", CliRun.AssertOneLineError(refused));
        if (Mpirun() is not { } mpirun) { output.WriteLine("skipped: mpirun not found (apt-get install openmpi-bin)"); return; }

        string dir = Fixtures.TempDirectory("bench-distributed");
        try
        {
            string json = Path.Combine(dir, "bench.json");
            var (code, text) = Launch(mpirun, 2, ["bench", "--distributed", "--preset", "tiny", "--steps", "2", "--warmup", "1", "--batch-size", "2", "--seq-len", "32", "--json", json]);
            Assert.True(code == 0, text);
            output.WriteLine(text);
            // Rank 0 alone prints: one table, one "wrote" line.
            Assert.Equal(1, text.Split('\n').Count(l => l.StartsWith("wrote ", StringComparison.Ordinal)));
            using var document = JsonDocument.Parse(File.ReadAllText(json));
            var rows = document.RootElement.GetProperty("methods").EnumerateArray().ToDictionary(r => r.GetProperty("method").GetString()!);
            // The CLI's methods: the built-in ones (tests register more in this process).
            var builtIn = SparseTune.Tuners.MethodRegistry.All.Where(m => m.GetType().Assembly == typeof(SparseTune.Tuners.MethodRegistry).Assembly).Select(m => m.Name);
            Assert.Equal(builtIn.Order(), rows.Keys.Order());
            Assert.Equal(2, document.RootElement.GetProperty("ranks").GetInt32());

            // The trainable tensors of LoRA and of the model, counted here on the same preset.
            var (config, head) = SparseTune.Benchmarks.BenchPresets.Get("tiny");
            var built = SparseTune.Benchmarks.MethodBenchmark.Build(config, head, "lora");
            using var model = built.Model;
            using var tuner = built.Tuner;
            long modelParameters = model.ParameterCount();
            int modelTensors = model.parameters().Count();
            tuner.Attach(model);
            var loraTrainable = tuner.TrainableParameters().ToList();
            long loraValues = loraTrainable.Sum(t => t.Parameter.numel());

            var lora = rows["lora"];
            Assert.Equal(loraValues, lora.GetProperty("trainable_parameters").GetInt64());
            Assert.Equal(4.0 * loraValues, lora.GetProperty("gradient_bytes_per_step").GetDouble());
            Assert.Equal(8.0 * (3 + loraTrainable.Count), lora.GetProperty("scalar_bytes_per_step").GetDouble());
            var full = rows["full"];
            Assert.Equal(modelParameters, full.GetProperty("trainable_parameters").GetInt64());
            Assert.Equal(4.0 * modelParameters, full.GetProperty("gradient_bytes_per_step").GetDouble());
            Assert.Equal(8.0 * (3 + modelTensors), full.GetProperty("scalar_bytes_per_step").GetDouble());
            Assert.Equal(1.0, full.GetProperty("gradient_bytes_relative_to_full").GetDouble());
            Assert.Equal(loraValues / (double)modelParameters, lora.GetProperty("gradient_bytes_relative_to_full").GetDouble(), 12);
            foreach (var (method, row) in rows)
            {
                Assert.True(row.GetProperty("step_ratio").GetDouble() > 0, method);
                Assert.True(row.GetProperty("single_process_step_seconds").GetDouble() > 0, method);
                Assert.True(row.GetProperty("all_reduce_seconds_per_step").GetDouble() > 0, method);
                Assert.True(row.GetProperty("gradient_bytes_per_step").GetDouble() > 0, method);
            }
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>
    /// Dropout off, and the pruning methods prune within the 5 steps: DSEE after 2 (unstructured, from |W| and the
    /// update; its sparse support by |W|, which skips the slow 100-round decomposition), Light-PEFT after a 2-step estimation (heads, FFN neurons, LoRA modules and ranks from the masks).
    /// </summary>
    static string[] MethodArguments(string method) => method switch
    {
        "lora" => ["--lora-dropout", "0"],
        "dsee" => ["--prune-at", "0.4", "--support", "magnitude"],
        "light-peft" => ["--lora-dropout", "0", "--estimate-steps", "2", "--estimate-ratio", "0.5"],
        _ => [],
    };

    /// <summary>A copy of the bundled demo model with dropout off, its training file, and the --data kind.</summary>
    static (string Model, string Train, string Data) Setup(string dir, string family)
    {
        string source = family == "gpt2" ? Demo.Gpt2ModelDirectory() : Demo.ModelDirectory();
        string model = Path.Combine(dir, "model");
        Directory.CreateDirectory(model);
        foreach (string file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        string configPath = Path.Combine(model, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        foreach (string key in new[] { "hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop" })
            if (config.ContainsKey(key)) config[key] = 0.0;
        File.WriteAllText(configPath, config.ToJsonString());
        if (family != "gpt2") return (model, Demo.TrainFile(), "classification");
        // Plain text for the language model: the fortunes themselves.
        string text = Path.Combine(dir, "fortunes.txt");
        File.WriteAllLines(text, File.ReadLines(Demo.TrainFile()).Take(200).Select(l => JsonNode.Parse(l)!["text"]!.GetValue<string>()));
        return (model, text, "text");
    }

    static double[] Losses(string runDir) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(runDir, "checkpoint", "trainer_state.json")))!["losses"]!.AsArray()
            .Select(pair => pair![1]!.GetValue<double>()).ToArray();

    /// <summary>metrics.jsonl's training lines: (step, loss) as written.</summary>
    static (int Step, double Loss)[] LossLines(string runDir) =>
        File.ReadLines(Path.Combine(runDir, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!).Where(n => n["loss"] is not null)
            .Select(n => (n["step"]!.GetValue<int>(), n["loss"]!.GetValue<double>())).ToArray();

    static List<JsonElement> JsonLines(string text) =>
        text.Split('\n').Select(l => l.IndexOf('{') is int at and >= 0 ? l[at..].Trim() : null).OfType<string>()
            .Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();

    static string? Mpirun() =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists);

    /// <summary>Runs the built CLI (under mpirun with <paramref name="ranks"/> ranks when given); exit code and all it printed.</summary>
    (int Code, string Text) Launch(string? mpirun, int ranks, string[] arguments, Dictionary<string, string>? environment = null, TimeSpan? limit = null)
    {
        var within = limit ?? TimeSpan.FromMinutes(5);
        string cli = Path.Combine(AppContext.BaseDirectory, OperatingSystem.IsWindows() ? "SparseTune.Cli.exe" : "SparseTune.Cli");
        var start = new ProcessStartInfo(mpirun ?? cli);
        if (mpirun is not null)
            foreach (string a in new[] { "--oversubscribe", "--bind-to", "none", "-np", ranks.ToString(), cli }) start.ArgumentList.Add(a);
        foreach (string a in arguments) start.ArgumentList.Add(a);
        // Containers run as root; Open MPI refuses that unless told twice.
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        foreach (var (key, value) in environment ?? []) start.Environment[key] = value;
        var result = ChildProcess.Run(start, within);
        output.WriteLine($"$ {start.FileName} {string.Join(' ', start.ArgumentList)} → exit {result.ExitCode} in {result.Elapsed.TotalSeconds:0.0} s");
        return (result.ExitCode, result.Text);
    }
}
