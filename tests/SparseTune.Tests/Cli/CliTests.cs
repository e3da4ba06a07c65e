using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using SparseTune.Cli;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Tuners;
using SparseTune.Tuners.Lora;
using SparseTune.Tuners.Sift;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.Cli;

/// <summary>
/// The sparsetune command line, run in-process through <see cref="SparseTuneCli.Run"/> with stdout and stderr
/// captured: forward against the Hugging Face references, one-line errors for corrupt checkpoints and bad
/// arguments, inspect's numbers, and finetune → merge / resume round trips on the bert-tiny fixture with a
/// small WordPiece vocabulary written beside it.
/// </summary>
public sealed class CliTests(ITestOutputHelper log) : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("cli");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    // ---- helpers -------------------------------------------------------------------------------------------------

    CliResult Cli(params string[] args) => CliRun.Invoke(log, args);

    static string AssertOneLineError(CliResult result) => CliRun.AssertOneLineError(result);

    static string CopyFolder(string from, string to) => TinyModels.CopyFolder(from, to);

    /// <summary>The bert-tiny fixture with a WordPiece vocab.txt (<see cref="TinyModels.BertWithVocab"/>).</summary>
    string BertWithVocab() => TinyModels.BertWithVocab(Path.Combine(temp, "bert-vocab"));

    static readonly string[] GoodRows = TinyModels.GoodRows;

    string WriteJsonl(string name, IEnumerable<string> rows)
    {
        string path = Path.Combine(temp, name);
        File.WriteAllLines(path, rows);
        return path;
    }

    string GoodTrain() => WriteJsonl("train.jsonl", GoodRows);
    string GoodEval() => WriteJsonl("eval.jsonl", GoodRows.Take(6));

    /// <summary>Common finetune arguments for a 2-step run on the bert-tiny + vocab folder.</summary>
    string[] FinetuneArgs(string method, string? output, int steps = 2, params string[] extra) =>
    [
        "finetune", "--model", BertWithVocab(), "--train", GoodTrain(), "--method", method, .. (output is null ? [] : new[] { "--output", output }),
        "--max-steps", steps.ToString(CultureInfo.InvariantCulture), "--batch-size", "4", "--max-length", "16", "--no-baseline", .. extra,
    ];

    static double MaxAbsDiff(Tensor a, Tensor b) =>
        a.numel() == 0 ? 0 : (a.to_type(ScalarType.Float64) - b.to_type(ScalarType.Float64)).abs().max().item<double>();

    // ---- 1. forward reproduces the Hugging Face references ---------------------------------------------------------

    [Theory]
    [InlineData("bert-tiny")]
    [InlineData("gpt2-tiny")]
    [InlineData("llama-tiny")]
    public void Forward_ReproducesHuggingFaceReference(string fixture)
    {
        string dir = Fixtures.Model(fixture);
        string reference = Path.Combine(dir, "reference.safetensors");
        string output = Path.Combine(temp, "out.safetensors");

        var result = Cli("forward", "--model", dir, "--inputs", reference, "--output", output);
        Assert.Equal(0, result.ExitCode);
        Assert.Equal("", result.Err);
        Assert.Contains($"wrote logits and last_hidden_state to {output}", result.Out);

        using var scope = NewDisposeScope();
        var expected = SafeTensors.Load(reference);
        var actual = SafeTensors.Load(output);
        Assert.Equal(ScalarType.Float32, actual["logits"].dtype);
        Assert.Equal(expected["logits"].shape, actual["logits"].shape);
        Assert.Equal(expected["last_hidden_state"].shape, actual["last_hidden_state"].shape);

        Tensor real = expected["attention_mask"].to_type(ScalarType.Bool);          // (B, T)
        Assert.True(real.any().item<bool>());
        Tensor hiddenMask = real.unsqueeze(-1).expand_as(expected["last_hidden_state"]);
        double hiddenError = MaxAbsDiff(actual["last_hidden_state"].masked_select(hiddenMask), expected["last_hidden_state"].masked_select(hiddenMask));
        double logitsError = expected["logits"].dim() == 2
            ? MaxAbsDiff(actual["logits"], expected["logits"])                         // bert: class logits (B, labels), all rows
            : MaxAbsDiff(actual["logits"].masked_select(real.unsqueeze(-1).expand_as(expected["logits"])),
                         expected["logits"].masked_select(real.unsqueeze(-1).expand_as(expected["logits"])));
        log.WriteLine($"{fixture}: max |Δ| logits {logitsError:E3}, last_hidden_state {hiddenError:E3}");
        Assert.True(logitsError <= 1e-4, $"logits max abs error {logitsError}");
        Assert.True(hiddenError <= 1e-4, $"last_hidden_state max abs error {hiddenError}");
        if (fixture == "bert-tiny") Assert.Equal([2L, 3L], actual["logits"].shape);
        else Assert.Equal(3, actual["logits"].dim());
    }

    // ---- 2. corrupt checkpoints: one line naming the file -----------------------------------------------------------

    [Theory]
    [InlineData("truncated", "runs past the end of the file")]
    [InlineData("huge-header-length", "exceeds the")]
    [InlineData("garbage-json", "header is not valid JSON")]
    public void CorruptCheckpoint_IsOneLineErrorNamingTheFile(string corruption, string detail)
    {
        string dir = CopyFolder(Fixtures.Model("bert-tiny"), Path.Combine(temp, corruption));
        string weights = Path.Combine(dir, "model.safetensors");
        byte[] bytes = File.ReadAllBytes(weights);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        switch (corruption)
        {
            case "truncated":
                bytes = bytes[..100];
                break;
            case "huge-header-length":
                BinaryPrimitives.WriteUInt64LittleEndian(bytes, 1UL << 60);
                break;
            case "garbage-json":
                byte[] garbage = Encoding.ASCII.GetBytes("{\"oops\": [1, 2,, nonsense");
                for (int i = 0; i < (int)headerLength; i++) bytes[8 + i] = i < garbage.Length ? garbage[i] : (byte)' ';
                break;
        }
        File.WriteAllBytes(weights, bytes);
        string reference = Path.Combine(Fixtures.Model("bert-tiny"), "reference.safetensors");
        string output = Path.Combine(temp, "out.safetensors");

        foreach (string[] args in new[]
        {
            new[] { "inspect", "--model", dir },
            new[] { "forward", "--model", dir, "--inputs", reference, "--output", output },
        })
        {
            var result = Cli(args);
            Assert.Equal(1, result.ExitCode);
            string line = AssertOneLineError(result);
            Assert.Contains(weights, line);
            Assert.Contains("model.safetensors", line);
            Assert.Contains("invalid safetensors file", line);
            Assert.Contains(detail, line);
            Assert.False(File.Exists(output));

            var verbose = Cli([.. args, "--verbose"]);
            Assert.Equal(result.ExitCode, verbose.ExitCode);
            Assert.Equal(line, verbose.ErrLines[0]);
            Assert.True(verbose.ErrLines.Length > 2, verbose.Err);
            Assert.Contains("SafeTensorsFormatException", verbose.Err);
            Assert.Contains("   at ", verbose.Err);
        }
    }

    // ---- 3. missing paths and bad inputs ---------------------------------------------------------------------------

    [Fact]
    public void Forward_MissingModelFolder_IsUsageErrorNamingThePath()
    {
        string missing = Path.Combine(temp, "nonexistent");
        string reference = Path.Combine(Fixtures.Model("bert-tiny"), "reference.safetensors");
        var result = Cli("forward", "--model", missing, "--inputs", reference, "--output", Path.Combine(temp, "o.safetensors"));
        Assert.Equal(2, result.ExitCode);
        Assert.Equal($"error: --model: folder not found: {missing}", AssertOneLineError(result));
    }

    [Fact]
    public void Forward_MissingInputsFile_IsUsageErrorNamingThePath()
    {
        string missing = Path.Combine(temp, "no-such-inputs.safetensors");
        var result = Cli("forward", "--model", Fixtures.Model("gpt2-tiny"), "--inputs", missing, "--output", Path.Combine(temp, "o.safetensors"));
        Assert.Equal(2, result.ExitCode);
        Assert.Equal($"error: --inputs: file not found: {missing}", AssertOneLineError(result));
    }

    [Fact]
    public void Forward_InputIdsOutsideVocabulary_IsOneLineErrorNamingTheRange()
    {
        string inputs = Path.Combine(temp, "bad-ids.safetensors");
        using (var ids = tensor(new long[] { 1, 5, 500, 2, 3, 4 }, [2, 3]))
            SafeTensors.Save(inputs, [new("input_ids", ids)]);
        string output = Path.Combine(temp, "o.safetensors");
        var result = Cli("forward", "--model", Fixtures.Model("bert-tiny"), "--inputs", inputs, "--output", output);
        Assert.Equal(1, result.ExitCode);
        string line = AssertOneLineError(result);
        Assert.Equal($"error: {inputs}: input_ids outside the vocabulary [0, 223): min 1, max 500", line);
        Assert.False(File.Exists(output));
    }

    public static TheoryData<string, string> BadInputFiles => new()
    {
        { "empty", "input_ids is empty [1, 0]" },
        { "float-ids", "input_ids must hold integers, got Float32" },
        { "token-types", "token_type_ids outside [0, 2) (type_vocab_size): min 0, max 5" },
        { "mask-shape", "attention_mask is [2, 2] but input_ids is [2, 3]" },
        { "no-ids", "no input_ids tensor (found: tokens)" },
    };

    [Theory]
    [MemberData(nameof(BadInputFiles))]
    public void Forward_BadInputTensors_AreOneLineErrorsWithoutNativeTraces(string kind, string message)
    {
        string inputs = Path.Combine(temp, kind + ".safetensors");
        using (var scope = NewDisposeScope())
        {
            Tensor ids = tensor(new long[] { 5, 6, 7, 8, 9, 10 }, [2, 3]);
            SafeTensors.Save(inputs, kind switch
            {
                "empty" => [new("input_ids", zeros(1, 0, dtype: ScalarType.Int64))],
                "float-ids" => [new("input_ids", tensor(new float[] { 5.7f, 6.2f }, [1, 2]))],
                "token-types" => [new("input_ids", ids), new("token_type_ids", tensor(new long[] { 0, 0, 1, 0, 1, 5 }, [2, 3]))],
                "mask-shape" => [new("input_ids", ids), new("attention_mask", ones(2, 2, dtype: ScalarType.Int64))],
                _ => new KeyValuePair<string, Tensor>[] { new("tokens", ids) },
            });
        }
        string output = Path.Combine(temp, "o.safetensors");
        var result = Cli("forward", "--model", Fixtures.Model("bert-tiny"), "--inputs", inputs, "--output", output);
        Assert.Equal(1, result.ExitCode);
        Assert.Equal($"error: {inputs}: {message}", AssertOneLineError(result));
        Assert.False(File.Exists(output));
    }

    [Fact]
    public void CliSupport_LibtorchErrors_DropTheNativeStackTraceUnlessVerbose()
    {
        var root = SparseTuneCli.CreateRootCommand();
        foreach (bool verbose in new[] { false, true })
        {
            var parse = root.Parse(verbose ? ["inspect", "--model", temp, "--verbose"] : ["inspect", "--model", temp]);
            var stderr = new StringWriter();
            TextWriter previous = Console.Error;
            Console.SetError(stderr);
            int code;
            try
            {
                code = CliSupport.Run(parse, () =>
                {
                    using var empty = zeros(0);
                    return (int)empty.max().item<float>();   // libtorch: max() of an empty tensor
                });
            }
            finally { Console.SetError(previous); }
            string[] lines = stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(1, code);
            Assert.StartsWith("error: max(): Expected reduction dim to be specified for input.numel() == 0.", lines[0]);
            Assert.DoesNotContain("Exception raised from", lines[0]);
            Assert.DoesNotContain("frame #", lines[0]);
            if (verbose) Assert.Contains("Exception raised from", stderr.ToString());
            else Assert.Single(lines);
        }
    }

    [Fact]
    public void ParseErrors_AreOneLineUsageErrors()
    {
        var notANumber = Cli("finetune", "--max-steps", "abc");
        Assert.Equal(2, notANumber.ExitCode);
        string line = AssertOneLineError(notANumber);
        Assert.Contains("abc", line);
        Assert.Contains("--max-steps", line);
        Assert.EndsWith("(see 'sparsetune finetune --help')", line);
        Assert.Equal("", notANumber.Out);   // no help text dumped

        var missing = Cli("forward", "--model", Fixtures.Model("bert-tiny"));
        Assert.Equal(2, missing.ExitCode);
        line = AssertOneLineError(missing);
        Assert.Contains("--inputs", line);
        Assert.Contains("--output", line);

        var noCommand = Cli("frobnicate");
        Assert.Equal(2, noCommand.ExitCode);
        Assert.Contains("frobnicate", AssertOneLineError(noCommand));
    }

    // ---- 4. inspect ---------------------------------------------------------------------------------------------------

    [Fact]
    public void Inspect_BertTiny_PrintsFamilySizesAndParameterCount()
    {
        string dir = Fixtures.Model("bert-tiny");
        long total;
        using (var model = PretrainedModel.Load(dir)) total = model.ParameterCount();

        var result = Cli("inspect", "--model", dir);
        Assert.Equal(0, result.ExitCode);
        Assert.Equal("", result.Err);
        log.WriteLine(result.Out);
        Assert.Matches(new Regex(@"\bfamily\W+bert\b"), result.Out);
        Assert.Matches(new Regex(@"\blayers\W+2\b"), result.Out);
        Assert.Matches(new Regex(@"\bhidden size\W+48\b"), result.Out);
        Assert.Matches(new Regex(@"\bvocabulary\W+223\b"), result.Out);
        Assert.Matches(new Regex(@"\blabels\W+a, b, c\b"), result.Out);
        Assert.Matches(new Regex($@"\bparameters\W+{Regex.Escape(total.ToString("N0"))} \({Regex.Escape(CliSupport.HumanCount(total))}\)"), result.Out);
        Assert.DoesNotContain("\u001b[", result.Out);   // no ANSI escapes into redirected output
    }

    // ---- 5. finetune argument and data errors; a clean run's outputs ------------------------------------------------

    [Fact]
    public void Finetune_AnotherMethodsFlag_IsUsageErrorNamingItsOwner()
    {
        var result = Cli(FinetuneArgs("lora", Path.Combine(temp, "run"), 2, "--sparse-rate", "0.1", "--lora-rank", "x"));
        Assert.Equal(2, result.ExitCode);
        string line = AssertOneLineError(result);
        Assert.Contains("--sparse-rate is an option of sift, not of --method lora", line);
        Assert.Contains("--lora-rank: 'x' is not an integer", line);
        Assert.False(Directory.Exists(Path.Combine(temp, "run")));
    }

    [Fact]
    public void Finetune_OnlyTheChosenMethodsOptionsAreValidated()
    {
        // A PST value out of range does not stop a LoRA run it does not apply to; it is named when PST runs.
        var pst = Cli(FinetuneArgs("pst", Path.Combine(temp, "pst"), 1, "--sparsity", "1.5"));
        Assert.Equal(2, pst.ExitCode);
        Assert.Contains("pst: PST sparsity must be in [0, 1) (got 1.5)", AssertOneLineError(pst));
        var lora = Cli(FinetuneArgs("lora", Path.Combine(temp, "lora"), 1, "--lora-rank", "2", "--gradient-checkpointing"));
        Assert.True(lora.ExitCode == 0, lora.Err);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(temp, "lora", "report.json")));
        var options = report.RootElement.GetProperty("options");
        Assert.Equal(2, options.GetProperty("method").GetProperty("Rank").GetInt32());
        Assert.True(options.GetProperty("training").GetProperty("GradientCheckpointing").GetBoolean());
    }

    [Fact]
    public void Finetune_TestOnlyMethodGetsItsFlagsFromTheRegistry()
    {
        // BitFit is registered by the test project (Tuners/Contract/BitFitMethod.cs); the CLI lists and binds it.
        var help = Cli("finetune", "--help");
        Assert.Contains("--bitfit-norm-biases", help.Out);
        string run = Path.Combine(temp, "bitfit");
        var result = Cli(FinetuneArgs("bitfit", run, 2, "--bitfit-norm-biases", "false"));
        Assert.True(result.ExitCode == 0, result.Err);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "report.json")));
        Assert.False(report.RootElement.GetProperty("options").GetProperty("method").GetProperty("NormBiases").GetBoolean());
        Assert.Equal(Path.Combine(run, "model"), report.RootElement.GetProperty("outputs").GetProperty("model").GetString());
    }

    [Fact]
    public void Finetune_LightPeftExportHf_WritesModelHfBesideModelAndListsIt()
    {
        string run = Path.Combine(temp, "light-peft");
        var result = Cli(FinetuneArgs("light-peft", run, 2, "--export-hf"));
        Assert.True(result.ExitCode == 0, result.Err);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "report.json")));
        Assert.True(report.RootElement.GetProperty("options").GetProperty("method").GetProperty("ExportHuggingFace").GetBoolean());
        var outputs = report.RootElement.GetProperty("outputs");
        Assert.Equal(Path.Combine(run, "model"), outputs.GetProperty("model").GetString());
        Assert.Equal(Path.Combine(run, "model-hf"), outputs.GetProperty("model_hf").GetString());
        Assert.Contains("sparsetune_intermediate_sizes", File.ReadAllText(Path.Combine(run, "model", "config.json")));
        Assert.DoesNotContain("sparsetune_", File.ReadAllText(Path.Combine(run, "model-hf", "config.json")));
        Assert.True(File.Exists(Path.Combine(run, "model-hf", "vocab.txt")), "the tokenizer files travel with model-hf/ as with model/");
        using var exported = PretrainedModel.Load(Path.Combine(run, "model-hf"));
        Assert.All(exported.Layers, l => Assert.Equal(96, l.FeedForward.IntermediateSize));
        Assert.All(exported.Layers, l => Assert.Equal(4, l.Attention.NumHeads));   // heads padded back with zeros: transformers 5 reads no pruned_heads
        Assert.DoesNotContain("pruned_heads", File.ReadAllText(Path.Combine(run, "model-hf", "config.json")));
    }

    [Fact]
    public void Finetune_UnknownMethod_IsUsageErrorListingTheMethods()
    {
        var result = Cli("finetune", "--model", BertWithVocab(), "--train", GoodTrain(), "--method", "foo", "--output", Path.Combine(temp, "run"));
        Assert.Equal(2, result.ExitCode);
        string line = AssertOneLineError(result);
        Assert.Contains($"--method: unknown 'foo' (available: {string.Join(", ", MethodRegistry.Names)})", line);
        foreach (string method in new[] { "full", "lora", "sift" }) Assert.Contains(method, line);
        Assert.False(Directory.Exists(Path.Combine(temp, "run")));
    }

    [Fact]
    public void Finetune_BadBatchSizeAndLearningRate_AreNamedTogetherOnOneLine()
    {
        var result = Cli("finetune", "--model", BertWithVocab(), "--train", GoodTrain(), "--batch-size", "0", "--lr", "-1", "--output", Path.Combine(temp, "run"));
        Assert.Equal(2, result.ExitCode);
        string line = AssertOneLineError(result);
        Assert.Contains("--batch-size must be positive", line);
        Assert.Contains("--lr must be a positive number", line);
        Assert.False(Directory.Exists(Path.Combine(temp, "run")));
    }

    [Fact]
    public void Finetune_BadRow_StopsWithFileAndLine_AndSkipBadRowsRuns()
    {
        var rows = GoodRows.ToList();
        rows[2] = """{"text": "this row has no label"}""";
        string train = WriteJsonl("bad-train.jsonl", rows);
        string output = Path.Combine(temp, "run");
        string[] args =
        [
            "finetune", "--model", BertWithVocab(), "--train", train, "--eval", GoodEval(), "--output", output,
            "--max-steps", "2", "--batch-size", "4", "--max-length", "16", "--no-baseline",
        ];

        var failed = Cli(args);
        Assert.Equal(1, failed.ExitCode);
        string line = AssertOneLineError(failed);
        Assert.Contains($"{train}:3:", line);
        Assert.Contains("label", line);

        var ok = Cli([.. args, "--skip-bad-rows"]);
        Assert.True(ok.ExitCode == 0, ok.Err);
        Assert.Equal("", ok.Err);
        string printed = Regex.Replace(ok.Out, @"\s+", " ");   // Spectre wraps redirected output at 80 columns
        Assert.Contains("data: 11 training and 6 eval examples (Classification, labels a, b, c), 1 bad rows skipped", printed);
        Assert.Contains("train loss ", printed);
        Assert.Contains($"report:{Path.Combine(output, "report.json")}", Regex.Replace(ok.Out, @"\s+", ""));   // a long path may wrap mid-word

        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "report.json")));
        var root = report.RootElement;
        foreach (string key in new[] { "method", "options", "model", "trainable_parameters", "total_parameters", "steps", "tokens", "wall_seconds",
                                       "tokens_per_second", "peak_memory_bytes", "grad_optimizer_bytes", "train_loss_first", "train_loss_last",
                                       "eval", "weight_sparsity" })
            Assert.True(root.TryGetProperty(key, out _), $"report.json lacks {key}");
        Assert.Equal("lora", root.GetProperty("method").GetString());
        Assert.Equal(2, root.GetProperty("steps").GetInt32());
        Assert.Equal(BertWithVocab(), root.GetProperty("model").GetString());
        long trainable = root.GetProperty("trainable_parameters").GetInt64(), all = root.GetProperty("total_parameters").GetInt64();
        Assert.InRange(trainable, 1, all - 1);
        Assert.True(root.GetProperty("tokens").GetInt64() > 0);
        Assert.True(double.IsFinite(root.GetProperty("train_loss_first").GetDouble()));
        Assert.True(double.IsFinite(root.GetProperty("train_loss_last").GetDouble()));
        Assert.InRange(root.GetProperty("eval").GetProperty("accuracy").GetDouble(), 0, 1);
        Assert.InRange(root.GetProperty("weight_sparsity").GetDouble(), 0, 1);
        Assert.True(File.Exists(Path.Combine(output, "training-curve.svg")));
        Assert.True(File.Exists(Path.Combine(output, "adapter_config.json")));
        Assert.True(File.Exists(Path.Combine(output, "adapter_model.safetensors")));
    }

    // ---- 6. merge round trips ----------------------------------------------------------------------------------------

    [Fact]
    public void Merge_LoraAdapter_ChangesOnlyAdaptedWeightsAndMatchesTheAdaptedModel()
    {
        string baseDir = BertWithVocab();
        string run = Path.Combine(temp, "lora-run");
        var tuned = Cli(FinetuneArgs("lora", run));
        Assert.True(tuned.ExitCode == 0, tuned.Err);

        string merged = Path.Combine(temp, "merged");
        var result = Cli("merge", "--model", baseDir, "--adapter", run, "--output", merged);
        Assert.True(result.ExitCode == 0, result.Err);
        Assert.Contains($"wrote merged model to {merged}", result.Out);
        Assert.True(File.Exists(Path.Combine(merged, "vocab.txt")));

        using var scope = NewDisposeScope();
        var before = SafeTensors.Load(Path.Combine(baseDir, "model.safetensors"));
        var after = SafeTensors.Load(Path.Combine(merged, "model.safetensors"));
        Assert.Equal(before.Keys.Order(), after.Keys.Order());
        // The task head (BERT: pooler + classifier) trains in full and travels in the adapter as modules_to_save.
        var adapterFile = SafeTensors.Load(Path.Combine(run, "adapter_model.safetensors"));
        var savedInFull = adapterFile.Where(p => !p.Key.Contains(".lora_", StringComparison.Ordinal))
            .ToDictionary(p => p.Key["base_model.model.".Length..], p => p.Value);
        Assert.Equal(["bert.pooler.dense.bias", "bert.pooler.dense.weight", "classifier.bias", "classifier.weight"], savedInFull.Keys.Order());
        int changed = 0;
        foreach (var (name, weight) in before)
        {
            if (Regex.IsMatch(name, @"\.attention\.self\.(query|value)\.weight$"))
            {
                Assert.True(MaxAbsDiff(weight, after[name]) > 0, $"{name} did not change");
                changed++;
            }
            else if (savedInFull.TryGetValue(name, out var head))
                Assert.True(head.eq(after[name]).all().item<bool>(), $"{name} is not the adapter's trained tensor");
            else
                Assert.True(weight.eq(after[name]).all().item<bool>(), $"{name} changed");
        }
        Assert.Equal(4, changed);   // 2 layers × query, value

        // The merged checkpoint computes what the base model with the adapter attached computes.
        string reference = Path.Combine(Fixtures.Model("bert-tiny"), "reference.safetensors");
        string output = Path.Combine(temp, "merged-out.safetensors");
        Assert.Equal(0, Cli("forward", "--model", merged, "--inputs", reference, "--output", output).ExitCode);
        var mergedOut = SafeTensors.Load(output);
        var inputs = SafeTensors.Load(reference);
        using var model = PretrainedModel.Load(baseDir);
        using var tuner = LoraTuner.LoadAdapter(model, run);
        model.eval();
        using var noGrad = no_grad();
        using var adapted = model.Forward(inputs["input_ids"], inputs["attention_mask"]);
        double error = MaxAbsDiff(adapted.Logits, mergedOut["logits"]);
        log.WriteLine($"merged vs adapter logits max |Δ| {error:E3}");
        Assert.True(error <= 1e-5, $"{error}");
        Assert.True(MaxAbsDiff(adapted.Logits, inputs["logits"]) > 1e-6);   // and training did change the outputs
    }

    [Fact]
    public void Merge_SiftDelta_EqualsTheRunsSavedModel()
    {
        string baseDir = BertWithVocab();
        string run = Path.Combine(temp, "sift-run");
        var tuned = Cli(FinetuneArgs("sift", run));
        Assert.True(tuned.ExitCode == 0, tuned.Err);
        Assert.True(File.Exists(Path.Combine(run, SiftTuner.DeltaFileName)));

        string merged = Path.Combine(temp, "merged");
        var result = Cli("merge", "--model", baseDir, "--delta", Path.Combine(run, SiftTuner.DeltaFileName), "--output", merged);
        Assert.True(result.ExitCode == 0, result.Err);

        using var scope = NewDisposeScope();
        var saved = SafeTensors.Load(Path.Combine(run, "model", "model.safetensors"));
        var fromDelta = SafeTensors.Load(Path.Combine(merged, "model.safetensors"));
        var original = SafeTensors.Load(Path.Combine(baseDir, "model.safetensors"));
        Assert.Equal(saved.Keys.Order(), fromDelta.Keys.Order());
        double worst = 0;
        int changed = 0;
        foreach (var (name, weight) in saved)
        {
            worst = Math.Max(worst, MaxAbsDiff(weight, fromDelta[name]));
            if (MaxAbsDiff(weight, original[name]) > 0) changed++;
        }
        log.WriteLine($"merge --delta vs the run's model/: max |Δ| {worst:E3}; {changed} tensors differ from the base");
        Assert.True(worst <= 1e-6, $"{worst}");
        Assert.True(changed > 0);
    }

    [Fact]
    public void Merge_NeitherOrBothSources_IsUsageError()
    {
        string baseDir = Fixtures.Model("bert-tiny");
        var neither = Cli("merge", "--model", baseDir, "--output", Path.Combine(temp, "m"));
        Assert.Equal(2, neither.ExitCode);
        Assert.Equal("error: --adapter is required (a LoRA adapter folder, a sparse-matrix file, or a run folder holding one)", AssertOneLineError(neither));
        var both = Cli("merge", "--model", baseDir, "--adapter", temp, "--delta", Path.Combine(temp, "d.safetensors"), "--output", Path.Combine(temp, "m"));
        Assert.Equal(2, both.ExitCode);
        AssertOneLineError(both);
    }

    [Fact]
    public void Merge_DeltaIntoTheBaseFolderItself_IsRefused()
    {
        string baseDir = CopyFolder(Fixtures.Model("bert-tiny"), Path.Combine(temp, "base"));
        byte[] before = File.ReadAllBytes(Path.Combine(baseDir, "model.safetensors"));
        string delta = Path.Combine(temp, SiftTuner.DeltaFileName);
        File.WriteAllBytes(delta, []);
        var result = Cli("merge", "--model", baseDir, "--delta", delta, "--output", baseDir + "/");
        Assert.Equal(2, result.ExitCode);
        Assert.Equal($"error: --output must differ from the base model folder ({baseDir})", AssertOneLineError(result));
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(baseDir, "model.safetensors")));
    }

    // ---- 7. resume --------------------------------------------------------------------------------------------------

    [Fact]
    public void Finetune_Resume_FromCompletedCheckpointKeepsStepCount()
    {
        string run = Path.Combine(temp, "run");
        var first = Cli(FinetuneArgs("lora", run, 4, "--save-every", "2"));
        Assert.True(first.ExitCode == 0, first.Err);
        Assert.True(File.Exists(Path.Combine(run, "checkpoint", "trainer_state.json")));

        // No --output: a resumed run continues in the folder holding the checkpoint.
        var second = Cli(FinetuneArgs("lora", null, 4, "--resume", Path.Combine(run, "checkpoint")));
        Assert.True(second.ExitCode == 0, second.Err);
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "report.json")));
        Assert.Equal(4, report.RootElement.GetProperty("steps").GetInt32());
    }

    [Fact]
    public void Finetune_Resume_FromMidRunCheckpointMatchesTheUninterruptedRun()
    {
        // --save-every 3 with 4 steps leaves the step-3 checkpoint: resuming it runs exactly step 4 again.
        string run = Path.Combine(temp, "run"), resumed = Path.Combine(temp, "resumed");
        var first = Cli(FinetuneArgs("lora", run, 4, "--save-every", "3"));
        Assert.True(first.ExitCode == 0, first.Err);
        var second = Cli(FinetuneArgs("lora", resumed, 4, "--resume", Path.Combine(run, "checkpoint")));
        Assert.True(second.ExitCode == 0, second.Err);
        Assert.Contains("step 4/4", second.Out);
        Assert.DoesNotContain("step 1/4", second.Out);

        using var a = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "report.json")));
        using var b = JsonDocument.Parse(File.ReadAllText(Path.Combine(resumed, "report.json")));
        Assert.Equal(4, b.RootElement.GetProperty("steps").GetInt32());
        Assert.Equal(a.RootElement.GetProperty("tokens").GetInt64(), b.RootElement.GetProperty("tokens").GetInt64());
        Assert.Equal(a.RootElement.GetProperty("train_loss_first").GetDouble(), b.RootElement.GetProperty("train_loss_first").GetDouble());
        Assert.Equal(a.RootElement.GetProperty("train_loss_last").GetDouble(), b.RootElement.GetProperty("train_loss_last").GetDouble(), 5);

        using var scope = NewDisposeScope();
        var adapterA = SafeTensors.Load(Path.Combine(run, "adapter_model.safetensors"));
        var adapterB = SafeTensors.Load(Path.Combine(resumed, "adapter_model.safetensors"));
        Assert.Equal(adapterA.Keys.Order(), adapterB.Keys.Order());
        double worst = adapterA.Max(p => MaxAbsDiff(p.Value, adapterB[p.Key]));
        log.WriteLine($"resumed vs uninterrupted adapter max |Δ| {worst:E3}");
        Assert.True(worst <= 1e-6, $"{worst}");
    }

    [Fact]
    public void Finetune_SameSeedInOneProcess_GivesTheSameRun_AndAFreshRunStartsAFreshMetricsLog()
    {
        // bert-tiny's head has 3 classes; with a fourth label the classifier is new, so its initialisation must come
        // from the seed too. The second run reuses the folder, whose metrics.jsonl must then hold that run's lines only.
        string run = Path.Combine(temp, "run");
        string train = WriteJsonl("four-labels.jsonl", GoodRows.Append("""{"text": "the dog", "label": "d"}"""));
        string[] args = [.. FinetuneArgs("full", run, 3).Select(a => a == GoodTrain() ? train : a)];
        var first = Cli(args);
        Assert.True(first.ExitCode == 0, first.Err);
        Assert.Contains("new SequenceClassification head initialised", first.Out);
        string firstReport = File.ReadAllText(Path.Combine(run, "report.json"));
        string[] firstLog = File.ReadAllLines(Path.Combine(run, "metrics.jsonl"));
        var second = Cli([.. args, "--overwrite"]);
        Assert.True(second.ExitCode == 0, second.Err);

        using var a = JsonDocument.Parse(firstReport);
        using var b = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "report.json")));
        foreach (string key in new[] { "train_loss_first", "train_loss_last" })
            Assert.Equal(a.RootElement.GetProperty(key).GetDouble(), b.RootElement.GetProperty(key).GetDouble());
        Assert.Equal(firstLog.Length, File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Length);
    }
}
