using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using SparseTune.Cli;
using SparseTune.Data;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Tests.Data;
using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.Full;
using SparseTune.Tuners.Lora;
using SparseTune.Tuners.Sift;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.Reliability;

/// <summary>Issue 18: bad input and bad endings, one test per item, from the command line where users meet them.</summary>
public sealed class ReliabilityTests(ITestOutputHelper log) : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("reliability");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    sealed record CliResult(int ExitCode, string Out, string Err);

    CliResult Cli(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = SparseTuneCli.Run(args, stdout, stderr);
        log.WriteLine($"$ sparsetune {string.Join(' ', args)} → {code}\n{stderr.ToString().TrimEnd()}");
        return new CliResult(code, stdout.ToString(), stderr.ToString());
    }

    string Bert() => TinyModels.BertWithVocab(Path.Combine(temp, "bert"));

    string Jsonl(string name, IEnumerable<string> rows)
    {
        string path = Path.Combine(temp, name);
        File.WriteAllLines(path, rows);
        return path;
    }

    string[] Finetune(string output, string train, string? eval = null, params string[] extra) =>
    [
        "finetune", "--model", Bert(), "--train", train, .. (eval is null ? [] : new[] { "--eval", eval }), "--output", output,
        "--max-steps", "2", "--batch-size", "4", "--max-length", "16", .. extra,
    ];

    static string OneLineError(CliResult result)
    {
        Assert.NotEqual(0, result.ExitCode);
        var lines = result.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, result.Err);
        Assert.StartsWith("error:", lines[0]);
        return lines[0];
    }

    // ---- 1. a run that ends badly keeps its results ------------------------------------------------------------

    [Fact]
    public void EvalFileWhoseEveryRowIsSkipped_IsRefusedBeforeTraining()
    {
        string train = Jsonl("train.jsonl", TinyModels.GoodRows);
        string eval = Jsonl("eval.jsonl", ["""{"text": "a b", "label": "zzz"}""", """{"text": "c d", "label": "yyy"}"""]);
        string run = Path.Combine(temp, "run");
        var result = Cli(Finetune(run, train, eval, "--skip-bad-rows", "--method", "lora"));
        string line = OneLineError(result);
        Assert.Contains($"{eval}: no usable evaluation rows (2 skipped, e.g. {eval}:1: unknown label 'zzz'", line);
        Assert.False(File.Exists(Path.Combine(run, "metrics.jsonl")), "training must not have started");
    }

    [Fact]
    public void ReportWithNonFiniteMetricsIsWrittenWithNullsAndSaysWhy()
    {
        string path = Path.Combine(temp, "report.json");
        new RunReport
        {
            Method = "lora", Options = new { }, Model = "m",
            Eval = new Dictionary<string, double> { ["accuracy"] = double.NaN, ["macro_f1"] = 0.5 },
            TrainLossLast = double.PositiveInfinity,
        }.Save(path);
        var root = JsonNode.Parse(File.ReadAllText(path))!;
        Assert.Null(root["eval"]!["accuracy"]);
        Assert.Equal(0.5, root["eval"]!["macro_f1"]!.GetValue<double>());
        Assert.Null(root["train_loss_last"]);
        Assert.Contains("eval.accuracy, train_loss_last not a finite number (written as null)", root["warnings"]!.AsArray().Select(w => w!.GetValue<string>()));
    }

    [Fact]
    public void OutputsAreSavedBeforeTheFinalEvaluation_SoAFailingEvaluationLosesNothing()
    {
        string dir = Path.Combine(temp, "trainer");
        using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        using var tuner = new LoraTuner(new LoraOptions());
        string? savedAt = null;
        int evaluations = 0;
        var trainer = new Trainer(model, tuner, TaskKind.Classification, new TrainingOptions { MaxSteps = 2, OutputDirectory = dir })
        {
            Evaluate = _ => ++evaluations == 2 ? throw new InvalidOperationException("evaluation failed") : new Dictionary<string, double> { ["accuracy"] = 0.5 },
            Finished = m => { tuner.SaveArtifacts(m, dir); savedAt = $"after {evaluations} evaluation(s)"; },
        };
        Assert.Throws<InvalidOperationException>(() => trainer.Run(new SyntheticBatches(TaskKind.Classification, 223, 16, 8)));
        Assert.Equal("after 1 evaluation(s)", savedAt);   // the baseline ran, the final one had not yet
        Assert.True(File.Exists(Path.Combine(dir, PeftAdapterFormat.WeightsFileName)));
    }

    // ---- 2. non-finite weights are refused where they enter and where they would leave ----------------------

    static string WithNaN(string source, string target, string tensorName, int count)
    {
        TinyModels.CopyFolder(source, target);
        string file = Path.Combine(target, "model.safetensors");
        var tensors = SafeTensors.Load(file);
        var flat = tensors[tensorName].view(-1);
        for (int i = 0; i < count; i++) flat[i] = float.NaN;
        File.Delete(file);
        // Written byte by byte through the format layer: SafeTensors.Save itself refuses non-finite values.
        AtomicFile.Write(file, stream =>
        {
            var list = tensors.ToList();
            var infos = SafeTensorsFormat.Layout(list);
            stream.Write(SafeTensorsFormat.BuildHeader(infos, new Dictionary<string, string> { ["format"] = "pt" }));
            for (int i = 0; i < list.Count; i++) SafeTensorsFormat.WriteTensorBytes(stream, list[i].Value, infos[i]);
        });
        return target;
    }

    [Fact]
    public void NaNInACheckpoint_IsOneErrorNamingFileTensorAndCount()
    {
        string broken = WithNaN(Fixtures.Model("bert-tiny"), Path.Combine(temp, "nan"), "bert.embeddings.word_embeddings.weight", 3);
        var error = Assert.Throws<InvalidDataException>(() => PretrainedModel.Load(broken));
        Assert.Equal($"{Path.Combine(broken, "model.safetensors")}: tensor bert.embeddings.word_embeddings.weight holds 3 non-finite values (NaN or ±inf)", error.Message);
        string inputs = Path.Combine(temp, "inputs.safetensors");
        SafeTensors.Save(inputs, [new("input_ids", tensor(new long[] { 2, 5, 3 }, [1, 3]))]);
        var result = Cli("forward", "--model", broken, "--inputs", inputs, "--output", Path.Combine(temp, "out.safetensors"));
        Assert.Contains("holds 3 non-finite values", OneLineError(result));
    }

    [Fact]
    public void NoOutputIsEverWrittenWithANonFiniteValue()
    {
        string dir = Path.Combine(temp, "out-model");
        using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        using (no_grad()) { var flat = model.state_dict()["classifier.weight"].view(-1); flat[0] = float.PositiveInfinity; flat[1] = float.NaN; }
        var error = Assert.Throws<InvalidDataException>(() => PretrainedModel.Save(model, dir));
        Assert.Equal($"refusing to write {dir}: tensor classifier.weight has 2 non-finite values (NaN or ±inf)", error.Message);
        Assert.False(File.Exists(Path.Combine(dir, "model.safetensors")));
        string delta = Path.Combine(temp, "delta.safetensors");
        Assert.Throws<InvalidDataException>(() => SparseMatrixFile.Save(delta, SparseMatrixMode.Add, "sift",
            [new SparseMatrixFile.Entry("w", tensor(new long[] { 0 }), tensor(new[] { float.NaN }), [1, 1])], []));
        Assert.False(File.Exists(delta));
    }

    [Fact]
    public void NaNInALoraAdapterOrASparseDelta_IsRefusedByMerge()
    {
        string adapter = Path.Combine(temp, "adapter");
        using (var model = PretrainedModel.Load(Fixtures.Model("bert-tiny")))
        using (var lora = new LoraTuner(new LoraOptions()))
        {
            lora.Attach(model);
            using (no_grad()) lora.Modules[1].Adapter.LoraB.fill_(0.5f);
            lora.SaveAdapter(adapter);
        }
        string weights = Path.Combine(adapter, PeftAdapterFormat.WeightsFileName);
        using (var file = SafeTensorsFile.Open(weights))
        {
            var tensors = file.Tensors.Select(t => new KeyValuePair<string, Tensor>(t.Name, file.Load(t.Name))).ToList();
            string key = PeftAdapterFormat.LoraBKey(tensors.Select(t => t.Key).First(k => k.EndsWith(".lora_B.weight"))[PeftAdapterFormat.KeyPrefix.Length..^".lora_B.weight".Length]);
            tensors.First(t => t.Key == key).Value.view(-1)[0] = float.NaN;
            var metadata = file.Metadata.ToDictionary();
            file.Dispose();
            var infos = SafeTensorsFormat.Layout(tensors);
            AtomicFile.Write(weights, s => { s.Write(SafeTensorsFormat.BuildHeader(infos, metadata)); for (int i = 0; i < tensors.Count; i++) SafeTensorsFormat.WriteTensorBytes(s, tensors[i].Value, infos[i]); });
        }
        var result = Cli("merge", "--model", Fixtures.Model("bert-tiny"), "--adapter", adapter, "--output", Path.Combine(temp, "merged"));
        Assert.Contains("lora_B.weight holds 1 non-finite value (NaN or ±inf)", OneLineError(result));
        Assert.False(Directory.Exists(Path.Combine(temp, "merged")) && File.Exists(Path.Combine(temp, "merged", "model.safetensors")));
    }

    [Fact]
    public void AFileThatIsNoArtifact_IsNamedWithWhatWasExpected()
    {
        string notAnArtifact = Path.Combine(temp, "notes.safetensors");
        File.WriteAllText(notAnArtifact, "{ not safetensors }");
        var error = Assert.Throws<InvalidDataException>(() => MethodArtifacts.Find(notAnArtifact));
        Assert.StartsWith($"{notAnArtifact} holds no method artifact; expected a PEFT LoRA adapter folder", error.Message);
    }

    // ---- 3. configs and tokenizers are checked at load ---------------------------------------------------------

    [Theory]
    [InlineData("layer_norm_eps", "-1", "layer_norm_eps must be a small positive number (got -1)")]
    [InlineData("hidden_dropout_prob", "2.0", "hidden_dropout_prob must be in [0, 1) (got 2)")]
    [InlineData("hidden_act", "\"foo\"", "hidden_act 'foo' is not supported")]
    public void ConfigValuesOutOfRange_AreNamedAtLoad(string field, string value, string expected)
    {
        string dir = TinyModels.CopyFolder(Fixtures.Model("bert-tiny"), Path.Combine(temp, field));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        config[field] = JsonNode.Parse(value);
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        var error = Assert.Throws<ModelConfigException>(() => ModelConfig.Load(dir));
        Assert.Contains(expected, error.Message);
        Assert.Contains(expected, OneLineError(Cli("inspect", "--model", dir)));
    }

    [Fact]
    public void TokenizerLargerThanTheEmbedding_OrWithoutCls_IsRefusedBeforeTraining()
    {
        string train = Jsonl("train.jsonl", TinyModels.GoodRows);
        string big = TinyModels.CopyFolder(Bert(), Path.Combine(temp, "big-vocab"));
        File.AppendAllLines(Path.Combine(big, "vocab.txt"), ["extra1", "extra2"]);
        Assert.Contains("has 225 tokens but config.json's vocab_size is 223: ids 223…224 have no embedding",
            OneLineError(Cli([.. Finetune(Path.Combine(temp, "r1"), train).Select(a => a == Bert() ? big : a)])));
        string noCls = TinyModels.CopyFolder(Bert(), Path.Combine(temp, "no-cls"));
        File.WriteAllLines(Path.Combine(noCls, "vocab.txt"), File.ReadAllLines(Path.Combine(noCls, "vocab.txt")).Select(t => t == "[CLS]" ? "[XLS]" : t));
        Assert.Contains("has no [CLS] token", OneLineError(Cli([.. Finetune(Path.Combine(temp, "r2"), train).Select(a => a == Bert() ? noCls : a)])));
    }

    // ---- 4. labels ---------------------------------------------------------------------------------------------

    [Theory]
    [InlineData("""{"text": "a", "label": true}""", "label true is a JSON boolean; labels are strings or integers")]
    [InlineData("""{"text": "a", "label": [1]}""", "label [1] is a JSON list; labels are strings or integers")]
    [InlineData("""{"text": "a", "label": {"x": 1}}""", "is a JSON object; labels are strings or integers")]
    public void StructuredJsonLabels_AreBadRows(string row, string expected)
    {
        string file = Jsonl("structured.jsonl", [.. TinyModels.GoodRows.Take(3), row]);
        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(file, new CharEncoder()));
        Assert.Equal(4, error.Line);
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void MixedIntegerAndNameLabels_AreRefusedNamingALineOfEach()
    {
        string file = Jsonl("mixed.jsonl", ["""{"text": "a", "label": 0}""", """{"text": "b", "label": "pos"}"""]);
        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(file, new CharEncoder()));
        Assert.Contains("labels mix integer ids (line 1: 0) and names (line 2: 'pos')", error.Message);
    }

    [Fact]
    public void AnIntegerLabelBeyondTheIdsInUse_IsRefused_UnlessTheLabelsAreGiven()
    {
        string file = Jsonl("ids.jsonl", ["""{"text": "a", "label": 0}""", """{"text": "b", "label": 1}""", """{"text": "c", "label": 17}""", """{"text": "d", "label": 2}"""]);
        var error = Assert.Throws<DataFormatException>(() => ClassificationData.Load(file, new CharEncoder()));
        Assert.Equal(3, error.Line);
        Assert.Contains("label 17 makes 18 classes but ids 3, 4, 5, 6, 7, … never appear; integer labels must be 0…K−1", error.Message);
        string ok = Jsonl("ids-ok.jsonl", ["""{"text": "a", "label": 0}""", """{"text": "b", "label": 2}"""]);
        var given = ClassificationData.Load(ok, new CharEncoder(), new ClassificationDataOptions { Labels = ["neg", "neutral", "pos"] });
        Assert.Equal(["neg", "neutral", "pos"], given.Labels);
        Assert.Equal([0f, 2f], given.Examples.Select(e => e.Label).ToArray());
    }

    // ---- 5. every adapter_config.json field honoured or refused -------------------------------------------------

    string SavedAdapter()
    {
        string dir = Path.Combine(temp, "peft-" + Guid.NewGuid().ToString("N")[..6]);
        using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        using var lora = new LoraTuner(new LoraOptions());
        lora.Attach(model);
        lora.SaveAdapter(dir);
        return dir;
    }

    [Theory]
    [InlineData("lora_alpha", "\"sixteen\"", "lora_alpha must be a number (got \"sixteen\")")]
    [InlineData("layers_to_transform", "[0]", "layers_to_transform (adapting only some layers) is not supported")]
    [InlineData("future_knob", "3", "unknown field future_knob = 3")]
    [InlineData("target_modules", "[\"query\"]", "value has LoRA tensors but target_modules/exclude_modules do not select it")]
    [InlineData("target_modules", "[\"query\", \"value\", \"key\"]", "target_modules selects bert.encoder.layer.0.attention.self.key but the weights file has no LoRA tensors for it")]
    [InlineData("fan_in_fan_out", "true", "fan_in_fan_out is true, but this bert model's linears are not Conv1D")]
    public void AdapterConfigFields_AreHonouredOrRefusedByName(string field, string value, string expected)
    {
        string dir = SavedAdapter();
        string path = Path.Combine(dir, PeftAdapterFormat.ConfigFileName);
        var config = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        config[field] = JsonNode.Parse(value);
        File.WriteAllText(path, config.ToJsonString());
        using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        var error = Record.Exception(() => LoraTuner.LoadAdapter(model, dir).Dispose());
        Assert.NotNull(error);
        Assert.Contains(expected, error.Message);
    }

    // ---- 6. what a run did is in its report --------------------------------------------------------------------

    [Fact]
    public void ReportRecordsRowsUsedAndSkippedPerSplit()
    {
        string train = Jsonl("train.jsonl", [.. TinyModels.GoodRows, """{"text": "", "label": "a"}"""]);
        string eval = Jsonl("eval.jsonl", [.. TinyModels.GoodRows.Take(3), """{"text": "x", "label": "nope"}"""]);
        string run = Path.Combine(temp, "run");
        var result = Cli(Finetune(run, train, eval, "--skip-bad-rows", "--no-baseline"));
        Assert.True(result.ExitCode == 0, result.Err);
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "report.json")))!;
        Assert.True(root["options"]!["skip_bad_rows"]!.GetValue<bool>());
        Assert.Equal(12, root["data"]!["train"]!["Examples"]!.GetValue<int>());
        Assert.Equal(1, root["data"]!["train"]!["RowsSkipped"]!.GetValue<int>());
        Assert.Equal($"{train}:13: empty text in 'text'", root["data"]!["train"]!["Skipped"]![0]!.GetValue<string>());
        Assert.Equal(3, root["data"]!["eval"]!["Examples"]!.GetValue<int>());
        Assert.Equal(1, root["data"]!["eval"]!["RowsSkipped"]!.GetValue<int>());
    }

    // ---- 7. output folders and checkpoints ---------------------------------------------------------------------

    [Fact]
    public void ANonEmptyOutputFolder_IsRefused_AndOverwriteReplacesThePreviousRun()
    {
        string train = Jsonl("train.jsonl", TinyModels.GoodRows);
        string run = Path.Combine(temp, "run");
        Assert.Equal(0, Cli(Finetune(run, train, null, "--method", "full", "--no-baseline")).ExitCode);
        Assert.True(Directory.Exists(Path.Combine(run, "model")));
        string line = OneLineError(Cli(Finetune(run, train, null, "--method", "lora", "--no-baseline")));
        Assert.Contains($"--output: {run} is not empty (metrics.jsonl, model, report.json, training-curve.svg); choose a new folder, add --overwrite", line);
        Assert.Equal(0, Cli(Finetune(run, train, null, "--method", "lora", "--no-baseline", "--overwrite")).ExitCode);
        Assert.False(Directory.Exists(Path.Combine(run, "model")), "the previous run's model/ must be gone");
        Assert.True(File.Exists(Path.Combine(run, PeftAdapterFormat.ConfigFileName)));

        string notARun = Path.Combine(temp, "documents");
        Directory.CreateDirectory(notARun);
        File.WriteAllText(Path.Combine(notARun, "thesis.txt"), "precious");
        Assert.Contains("holds no SparseTune run (thesis.txt)", OneLineError(Cli(Finetune(notARun, train, null, "--overwrite"))));
        Assert.True(File.Exists(Path.Combine(notARun, "thesis.txt")));
        string file = Path.Combine(temp, "a-file");
        File.WriteAllText(file, "");
        Assert.Contains($"--output: {file} is a file, not a folder", OneLineError(Cli(Finetune(file, train))));
    }

    /// <summary>The states a kill can leave during the checkpoint swap (checkpoint at step 3 being replaced by step 6).</summary>
    public static IEnumerable<object[]> SwapStates() =>
    [
        ["before the swap: a complete tmp beside the old checkpoint", 6],
        ["between the renames: only checkpoint.old and a complete tmp", 6],
        ["between the renames, tmp incomplete: only checkpoint.old", 3],
        ["after the swap, before deleting checkpoint.old", 6],
    ];

    [Theory]
    [MemberData(nameof(SwapStates))]
    public void KillAtAnyPointOfTheCheckpointSwap_ResumesToTheSameLossesWithoutDuplicateLogLines(string state, int expectedStep)
    {
        var options = new TrainingOptions { MaxSteps = 8, LearningRate = 1e-3, EvaluateBaseline = false, SaveEvery = 3, LogEvery = 1 };
        string reference = Path.Combine(temp, "reference"), run = Path.Combine(temp, "killed");
        double[] Train(string dir, TrainingOptions o, IProgress<TrainingProgress>? progress = null)
        {
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            using var tuner = new FullFineTuner();
            return new Trainer(model, tuner, TaskKind.Classification, o with { OutputDirectory = dir }) { Progress = progress }
                .Run(new SyntheticBatches(TaskKind.Classification, 223, 32, 8)).LossCurve.Select(l => l.Loss).ToArray();
        }
        double[] expected = Train(reference, options);

        // Run to step 7 (checkpoint at 6), keeping a copy of the step-3 checkpoint, then rebuild the chosen state.
        string checkpoint = Path.Combine(run, "checkpoint"), step3 = Path.Combine(temp, "step3");
        var crash = new RecordingProgress(p =>
        {
            if (p.Phase == "train" && p.Step == 4) TinyModels.CopyFolder(checkpoint, step3);
            if (p.Phase == "train" && p.Step == 7) throw new OperationCanceledException();
        });
        Assert.Throws<OperationCanceledException>(() => Train(run, options, crash));
        string tmp = checkpoint + ".tmp-0123", old = checkpoint + ".old";
        switch (state)
        {
            case "before the swap: a complete tmp beside the old checkpoint":
                Directory.Move(checkpoint, tmp); TinyModels.CopyFolder(step3, checkpoint); break;
            case "between the renames: only checkpoint.old and a complete tmp":
                Directory.Move(checkpoint, tmp); TinyModels.CopyFolder(step3, old); break;
            case "between the renames, tmp incomplete: only checkpoint.old":
                Directory.Move(checkpoint, tmp); File.Delete(Path.Combine(tmp, "trainer_state.json")); TinyModels.CopyFolder(step3, old); break;
            case "after the swap, before deleting checkpoint.old":
                TinyModels.CopyFolder(step3, old); break;
        }

        double[] resumed = Train(run, options with { ResumeFrom = checkpoint });
        Assert.Equal(expected, resumed);
        Assert.False(Directory.Exists(tmp) || Directory.Exists(old), "the swap's leftovers must be cleaned up");
        var steps = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
            .Where(e => e.TryGetProperty("loss", out _)).Select(e => e.GetProperty("step").GetInt32()).ToList();
        Assert.Equal(Enumerable.Range(1, 8), steps);
        log.WriteLine($"{state}: resumed from step {expectedStep}");
    }

    // ---- 8. a collapsed run says so ----------------------------------------------------------------------------

    [Fact]
    public void ACollapsedRunEndsWithAWarningNamingTheLearningRate()
    {
        var collapsed = new TrainingResult
        {
            Steps = 20, Tokens = 1, WallSeconds = 1, TrainLossFirst = 2.0, TrainLossLast = 2.08, GradOptimizerBytes = 0, TrainableParameters = 1, TotalParameters = 1,
            Eval = new Dictionary<string, double> { ["accuracy"] = 0.125 },
            BaselineEval = new Dictionary<string, double> { ["accuracy"] = 0.125 },
            LossCurve = Enumerable.Range(1, 20).Select(i => (i, i < 3 ? 2.0 : 2.08)).ToList(),
            EvalCurve = [],
        };
        var warnings = RunWarnings.For(collapsed, TaskKind.Classification, 5e-3);
        Assert.Equal(2, warnings.Count);
        Assert.Equal("the final accuracy 0.1250 is no better than the untuned model's 0.1250: the run may have collapsed; the learning rate (0.005) is the usual cause, try a lower --lr", warnings[0]);
        Assert.StartsWith("the training loss ended at 2.0800 (mean of the last 2 steps), no lower than it began (2.0000)", warnings[1]);
        var learned = collapsed with { Eval = new Dictionary<string, double> { ["accuracy"] = 0.7 }, LossCurve = Enumerable.Range(1, 20).Select(i => (i, 2.0 - 0.05 * i)).ToList() };
        Assert.Empty(RunWarnings.For(learned, TaskKind.Classification, 5e-3));
    }

    // ---- 9. small things ---------------------------------------------------------------------------------------

    [Fact]
    public void ParseErrorsSpeakOfValuesNotDotNetTypes()
    {
        string line = OneLineError(Cli("finetune", "--lr", "fast"));
        Assert.DoesNotContain("System.", line);
        Assert.Contains("'fast'", line);
        Assert.Contains("as a number", line);
    }
}
