using System.Globalization;
using System.Text.Json;
using SparseTune.Cli.Commands;
using SparseTune.Inference;
using SparseTune.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace SparseTune.Tests.Inference;

/// <summary>Short full and LoRA runs on the bundled demo, made once for the predict tests.</summary>
public sealed class DemoRuns : IDisposable
{
    public string Folder { get; } = Fixtures.TempDirectory("predict-demo");
    public string BaseModel { get; } = Demo.ModelDirectory();
    public string EvalFile { get; } = Demo.EvalFile();
    public string Full => Path.Combine(Folder, "full");
    public string Lora => Path.Combine(Folder, "lora");

    public DemoRuns()
    {
        foreach (var (method, output) in new[] { ("full", Full), ("lora", Lora) })
        {
            var result = CliRun.Invoke(null, "finetune", "--method", method, "--max-steps", "8", "--batch-size", "16", "--no-baseline", "--output", output);
            Assert.True(result.ExitCode == 0, result.Err);
        }
    }

    public static double ReportedAccuracy(string run)
    {
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "report.json")));
        return report.RootElement.GetProperty("eval").GetProperty("accuracy").GetDouble();
    }

    public void Dispose() => Directory.Delete(Folder, recursive: true);
}

/// <summary>
/// sparsetune predict and the <see cref="ClassificationPredictor"/> API behind it: the demo run's predictions score what
/// finetune's evaluation scored, an adapter applied in memory predicts what the merged checkpoint predicts, both output
/// formats parse back, regression writes values, and bad inputs are one-line errors.
/// </summary>
public sealed class PredictTests(DemoRuns demo, ITestOutputHelper log) : IClassFixture<DemoRuns>, IDisposable
{
    readonly string temp = Fixtures.TempDirectory("predict");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    CliResult Cli(params string[] args) => CliRun.Invoke(log, args);

    string Write(string name, IEnumerable<string> lines)
    {
        string path = Path.Combine(temp, name);
        File.WriteAllLines(path, lines);
        return path;
    }

    static List<JsonElement> ReadJsonl(string path) =>
        File.ReadAllLines(path).Where(l => l.Length > 0).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();

    static List<string> EvalLabels(string evalFile) =>
        ReadJsonl(evalFile).Select(e => e.GetProperty("label").GetString()!).ToList();

    [Fact]
    public void Predict_FineTunedDemoModel_LabelsScoreTheRunsEvaluationAccuracy()
    {
        string output = Path.Combine(temp, "predictions.jsonl");
        var result = Cli("predict", "--model", Path.Combine(demo.Full, "model"), "--input", demo.EvalFile, "--output", output);
        Assert.True(result.ExitCode == 0, result.Err);
        Assert.Contains($"wrote 120 predictions to {output}", result.Out);

        var rows = ReadJsonl(output);
        var truth = EvalLabels(demo.EvalFile);
        Assert.Equal(truth.Count, rows.Count);
        string[] labels = ["computers", "food", "sports", "startrek"];
        int correct = 0;
        for (int i = 0; i < rows.Count; i++)
        {
            Assert.Equal(i + 1, rows[i].GetProperty("id").GetInt32());   // no id column: the line number
            string label = rows[i].GetProperty("label").GetString()!;
            var scores = rows[i].GetProperty("scores").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetDouble());
            Assert.Equal(labels, scores.Keys);
            Assert.Equal(1.0, scores.Values.Sum(), 5);
            Assert.Equal(scores.MaxBy(p => p.Value).Key, label);
            if (label == truth[i]) correct++;
        }
        double accuracy = (double)correct / rows.Count, reported = DemoRuns.ReportedAccuracy(demo.Full);
        log.WriteLine($"predict accuracy {accuracy:0.0000}, the run's evaluation {reported:0.0000}");
        Assert.Equal(reported, accuracy, 12);
        Assert.Contains($"accuracy {reported:0.0000}", result.Err);
        Assert.Contains("predicted 120/120 rows", result.Err);
        Assert.Contains("tok/s", result.Err);

        // CSV: the same labels and scores (the shortest round-trip float text in both formats).
        string csv = Path.Combine(temp, "predictions.csv");
        Assert.Equal(0, Cli("predict", "--model", Path.Combine(demo.Full, "model"), "--input", demo.EvalFile, "--output", csv).ExitCode);
        string[] lines = File.ReadAllLines(csv);
        Assert.Equal("id,label,score_computers,score_food,score_sports,score_startrek", lines[0]);
        Assert.Equal(rows.Count + 1, lines.Length);
        for (int i = 0; i < rows.Count; i++)
        {
            string[] fields = lines[i + 1].Split(',');
            Assert.Equal((i + 1).ToString(CultureInfo.InvariantCulture), fields[0]);
            Assert.Equal(rows[i].GetProperty("label").GetString(), fields[1]);
            Assert.Equal(labels.Select(l => rows[i].GetProperty("scores").GetProperty(l).GetRawText()), fields[2..]);
        }
    }

    [Fact]
    public void Predict_WithLoraAdapter_EqualsTheMergedCheckpoint_AndTheLibraryApi()
    {
        string merged = Path.Combine(temp, "merged");
        Assert.Equal(0, Cli("merge", "--model", demo.BaseModel, "--adapter", demo.Lora, "--output", merged).ExitCode);
        string viaAdapter = Path.Combine(temp, "adapter.jsonl"), viaMerged = Path.Combine(temp, "merged.jsonl");
        string[] Listing(params string[] folders) => folders.SelectMany(f => Directory.EnumerateFileSystemEntries(f, "*", SearchOption.AllDirectories)).Order().ToArray();
        string[] before = Listing(demo.Lora, demo.BaseModel);
        var withAdapter = Cli("predict", "--model", demo.BaseModel, "--adapter", demo.Lora, "--input", demo.EvalFile, "--output", viaAdapter);
        Assert.True(withAdapter.ExitCode == 0, withAdapter.Err);
        Assert.Contains($"into {demo.BaseModel} (in memory)", withAdapter.Err);
        Assert.Equal(before, Listing(demo.Lora, demo.BaseModel));   // no merged copy written anywhere
        Assert.Equal(0, Cli("predict", "--model", merged, "--input", demo.EvalFile, "--output", viaMerged).ExitCode);
        Assert.Equal(File.ReadAllText(viaMerged), File.ReadAllText(viaAdapter));

        // The C# API a program calls: the same labels and scores for the same texts.
        var texts = ReadJsonl(demo.EvalFile).Select(e => e.GetProperty("text").GetString()!).ToList();
        using var predictor = ClassificationPredictor.Load(demo.BaseModel, adapter: demo.Lora);
        Assert.Equal(["computers", "food", "sports", "startrek"], predictor.Labels);
        Assert.False(predictor.IsRegression);
        var predictions = predictor.Predict(texts);
        var fromFile = ReadJsonl(viaAdapter);
        Assert.Equal(texts.Count, predictions.Count);
        for (int i = 0; i < texts.Count; i++)
        {
            Assert.Equal(fromFile[i].GetProperty("label").GetString(), predictions[i].Label);
            foreach (var (label, score) in predictions[i].Scores)
                Assert.Equal(fromFile[i].GetProperty("scores").GetProperty(label).GetSingle(), score);
        }
        Assert.Equal(predictions[3].Label, predictor.Predict(texts[3]).Label);
    }

    [Fact]
    public void Predict_IdColumnPairsAndCsvInput_AndSkipBadRowsCountsWhatItSkipped()
    {
        string model = Path.Combine(demo.Full, "model");
        string input = Write("pairs.csv",
        [
            "id,sentence1,sentence2",
            "q-1,\"Free pizza, today\",in the kitchen",
            "q-2,kernel panic,reboot",
            "q-3,,missing first text",
            "q-4,warp drive,engaged",
        ]);
        string output = Path.Combine(temp, "pairs.jsonl");
        var failed = Cli("predict", "--model", model, "--input", input, "--output", output);
        Assert.Equal(1, failed.ExitCode);
        Assert.Equal($"error: {input}:4: empty text in 'sentence1'", CliRun.AssertOneLineError(failed));
        Assert.False(File.Exists(output));

        var ok = Cli("predict", "--model", model, "--input", input, "--output", output, "--skip-bad-rows");
        Assert.True(ok.ExitCode == 0, ok.Err);
        Assert.Equal(["q-1", "q-2", "q-4"], ReadJsonl(output).Select(r => r.GetProperty("id").GetString()));
        Assert.Contains($"skipped 1 bad rows, e.g. {input}:4: empty text in 'sentence1'", ok.Err);
        Assert.DoesNotContain("accuracy", ok.Err);   // no label column, no metrics
    }

    [Fact]
    public void Predict_BadInputs_AreOneLineErrors()
    {
        string model = Path.Combine(demo.Full, "model");
        string missing = Path.Combine(temp, "no-model");
        var noModel = Cli("predict", "--model", missing, "--input", demo.EvalFile, "--output", Path.Combine(temp, "o.jsonl"));
        Assert.Equal(2, noModel.ExitCode);
        Assert.Equal($"error: --model: folder not found: {missing}", CliRun.AssertOneLineError(noModel));

        var unknownColumn = Cli("predict", "--model", model, "--input", demo.EvalFile, "--text-column", "body", "--output", Path.Combine(temp, "o.jsonl"));
        Assert.Equal($"error: {demo.EvalFile}:1: no column 'body' (columns: text, label)", CliRun.AssertOneLineError(unknownColumn));

        string empty = Write("empty.jsonl", [""]);
        var emptyInput = Cli("predict", "--model", model, "--input", empty, "--output", Path.Combine(temp, "o.jsonl"));
        Assert.Equal($"error: {empty}: the file is empty: no rows to predict", CliRun.AssertOneLineError(emptyInput));

        var unknownLabel = Cli("predict", "--model", model, "--input", Write("odd-label.jsonl", ["""{"text": "hello", "label": "poetry"}"""]), "--output", Path.Combine(temp, "o.jsonl"));
        Assert.Contains("unknown label 'poetry' (labels: computers, food, sports, startrek)", CliRun.AssertOneLineError(unknownLabel));

        // The pretrained base has no classification head: it needs the run's artifact.
        var baseOnly = Cli("predict", "--model", demo.BaseModel, "--input", demo.EvalFile, "--output", Path.Combine(temp, "o.jsonl"));
        Assert.Contains("not a classification or regression model", CliRun.AssertOneLineError(baseOnly));

        var badOptions = Cli("predict", "--model", model, "--input", demo.EvalFile, "--batch-size", "0", "--max-length", "2", "--output", Path.Combine(temp, "o.jsonl"));
        Assert.Equal(2, badOptions.ExitCode);
        string line = CliRun.AssertOneLineError(badOptions);
        Assert.Contains("--batch-size must be positive", line);
        Assert.Contains("--max-length must be at least 4", line);
        Assert.False(File.Exists(Path.Combine(temp, "o.jsonl")));
    }

    [Fact]
    public void Predict_RegressionModel_WritesValues_AndReportsPearson()
    {
        string bert = TinyModels.BertWithVocab(Path.Combine(temp, "bert-vocab"));
        var rows = new[] { ("a good movie", 4.5), ("the plot was bad", 1.0), ("it is okay", 3.0), ("great cast and great film", 5.0),
                           ("awful day, so bad", 0.5), ("meh, fine", 2.5), ("love the sun", 4.0), ("hate the rain", 1.5) };
        string train = Write("reg.jsonl", rows.Select(r => JsonSerializer.Serialize(new { text = r.Item1, label = r.Item2 })));
        string run = Path.Combine(temp, "reg-run");
        var tuned = Cli("finetune", "--model", bert, "--train", train, "--data", "regression", "--method", "full", "--max-steps", "2",
            "--batch-size", "4", "--max-length", "16", "--no-baseline", "--output", run);
        Assert.True(tuned.ExitCode == 0, tuned.Err);

        string jsonl = Path.Combine(temp, "reg.jsonl.out.jsonl"), csv = Path.Combine(temp, "reg.csv");
        var result = Cli("predict", "--model", Path.Combine(run, "model"), "--input", train, "--output", jsonl);
        Assert.True(result.ExitCode == 0, result.Err);
        Assert.Contains("pearson ", result.Err);
        var values = ReadJsonl(jsonl).Select(r => r.GetProperty("value").GetDouble()).ToList();
        Assert.Equal(rows.Length, values.Count);
        Assert.All(values, v => Assert.True(double.IsFinite(v)));
        Assert.All(ReadJsonl(jsonl), r => Assert.False(r.TryGetProperty("label", out _)));

        Assert.Equal(0, Cli("predict", "--model", Path.Combine(run, "model"), "--input", train, "--output", csv).ExitCode);
        string[] lines = File.ReadAllLines(csv);
        Assert.Equal("id,value", lines[0]);
        Assert.Equal(values, lines.Skip(1).Select(l => double.Parse(l.Split(',')[1], CultureInfo.InvariantCulture)));

        using var predictor = ClassificationPredictor.Load(Path.Combine(run, "model"));
        Assert.True(predictor.IsRegression);
        Prediction single = predictor.Predict(rows[2].Item1);
        Assert.Null(single.Label);
        Assert.Equal(values[2], single.Value!.Value, 5);
    }
}
