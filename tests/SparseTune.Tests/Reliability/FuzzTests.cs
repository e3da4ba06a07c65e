using System.Text;
using System.Text.Json.Nodes;
using SparseTune.Data;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Tests.Data;
using SparseTune.Tests.Support;
using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.Lora;
using SparseTune.Tuners.Sift;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.Reliability;

/// <summary>
/// Seeded mutants of every file SparseTune reads — checkpoints, config.json, PEFT adapters, sparse deltas, data rows:
/// each load either works (and then gives finite outputs) or throws one of the project's one-line error types,
/// never another exception.
/// </summary>
public sealed class FuzzTests(ITestOutputHelper log) : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("fuzz");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    /// <summary>The error types a bad file may raise: each carries a one-line message naming the file and the fault.</summary>
    static bool IsProjectError(Exception e) => e is InvalidDataException or SafeTensorsFormatException or ModelConfigException or CheckpointMismatchException
        or DataFormatException or NotSupportedException or FileNotFoundException or ArgumentException;

    int loaded, refused;

    void Expect(string what, Action load)
    {
        try
        {
            load();
            loaded++;
        }
        catch (Exception e) when (IsProjectError(e))
        {
            Assert.False(e.Message.Contains('\n'), $"{what}: multi-line message: {e.Message}");
            Assert.False(string.IsNullOrWhiteSpace(e.Message), what);
            refused++;
        }
        catch (Exception e)
        {
            Assert.Fail($"{what}: {e.GetType().Name} is not a project error: {e.Message}");
        }
    }

    static byte[] Mutate(byte[] original, Random random, int headerBytes)
    {
        byte[] bytes = (byte[])original.Clone();
        switch (random.Next(4))
        {
            case 0:   // flip bytes anywhere in the header (JSON) or its length
                for (int i = 0, n = random.Next(1, 4); i < n; i++) bytes[random.Next(Math.Min(bytes.Length, headerBytes))] ^= (byte)random.Next(1, 256);
                return bytes;
            case 1:   // truncate
                return bytes[..random.Next(bytes.Length)];
            case 2:   // overwrite data bytes with 0xFF (NaN patterns in float32)
                for (int i = 0, n = random.Next(1, 8); i < n; i++) bytes[random.Next(headerBytes, bytes.Length)] = 0xFF;
                return bytes;
            default:  // append garbage
                return [.. bytes, .. Enumerable.Range(0, random.Next(1, 64)).Select(_ => (byte)random.Next(256))];
        }
    }

    static int HeaderBytes(byte[] file) => 8 + (int)Math.Min(file.Length - 8, BitConverter.ToInt64(file, 0));

    [Fact]
    public void CheckpointMutantsLoadOrFailWithAProjectError()
    {
        var random = new Random(18);
        string source = Fixtures.Model("bert-tiny");
        byte[] original = File.ReadAllBytes(Path.Combine(source, "model.safetensors"));
        using var ids = tensor(new long[] { 2, 7, 9, 3 }, [1, 4]);
        for (int i = 0; i < 80; i++)
        {
            string dir = TinyModels.CopyFolder(source, Path.Combine(temp, $"ckpt{i}"));
            File.WriteAllBytes(Path.Combine(dir, "model.safetensors"), Mutate(original, random, HeaderBytes(original)));
            // As `sparsetune forward` does: load, run, and write the logits only when they are finite (huge but finite
            // weights can still overflow to ±inf in the forward pass).
            Expect($"checkpoint mutant {i}", () =>
            {
                using var model = PretrainedModel.Load(dir);
                model.eval();
                using var _ = no_grad();
                using var output = model.Forward(ids);
                FiniteChecks.EnsureWritable("logits.safetensors", [new("logits", output.Logits)]);
            });
            Directory.Delete(dir, true);
        }
        log.WriteLine($"checkpoints: {loaded} loaded, {refused} refused");
        Assert.True(refused > 40, $"only {refused} of 80 mutants were refused");
    }

    [Fact]
    public void ConfigMutantsLoadOrFailWithAProjectError()
    {
        var random = new Random(19);
        string source = Fixtures.Model("gpt2-tiny");
        var original = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        JsonNode?[] values = [JsonValue.Create(-1), JsonValue.Create(0), JsonValue.Create(2.5), JsonValue.Create(1e9), JsonValue.Create("x"), null, new JsonArray(), JsonValue.Create(true), JsonValue.Create(-1e-5)];
        for (int i = 0; i < 80; i++)
        {
            var config = original.DeepClone().AsObject();
            var keys = config.Select(p => p.Key).ToList();
            for (int j = 0, n = random.Next(1, 3); j < n; j++)
                config[keys[random.Next(keys.Count)]] = values[random.Next(values.Length)]?.DeepClone();
            string dir = TinyModels.CopyFolder(source, Path.Combine(temp, $"cfg{i}"));
            File.WriteAllText(Path.Combine(dir, "config.json"), random.Next(10) == 0 ? config.ToJsonString()[..^2] : config.ToJsonString());
            Expect($"config mutant {i}: {config.ToJsonString()}", () =>
            {
                using var model = PretrainedModel.Load(dir);
                model.eval();
                using var _ = no_grad();
                using var ids = tensor(new long[] { 5, 9, 11 }, [1, 3]);
                using var output = model.Forward(ids);
                Assert.Equal(0, FiniteChecks.NonFiniteCount(output.Logits));
            });
            Directory.Delete(dir, true);
        }
        log.WriteLine($"configs: {loaded} loaded, {refused} refused");
        Assert.True(refused > 30, $"only {refused} of 80 mutants were refused");
    }

    [Fact]
    public void AdapterAndDeltaMutantsMergeOrFailWithAProjectError()
    {
        var random = new Random(20);
        string adapter = Path.Combine(temp, "adapter"), run = Path.Combine(temp, "sift");
        using (var model = PretrainedModel.Load(Fixtures.Model("bert-tiny")))
        using (var lora = new LoraTuner(new LoraOptions()))
        {
            lora.Attach(model);
            lora.SaveAdapter(adapter);
        }
        using (var model = PretrainedModel.Load(Fixtures.Model("bert-tiny")))
        using (var sift = new SiftTuner(new SiftOptions { SparseRate = 0.05 }))
            new Trainer(model, sift, TaskKind.Classification, new TrainingOptions { MaxSteps = 1, OutputDirectory = run, EvaluateBaseline = false })
            {
                Finished = m => sift.SaveArtifacts(m, run),
            }.Run(new SyntheticBatches(TaskKind.Classification, 223, 8, 8));
        string delta = Path.Combine(run, SiftTuner.DeltaFileName);
        byte[] weights = File.ReadAllBytes(Path.Combine(adapter, PeftAdapterFormat.WeightsFileName));
        byte[] deltaBytes = File.ReadAllBytes(delta);
        string config = File.ReadAllText(Path.Combine(adapter, PeftAdapterFormat.ConfigFileName));
        for (int i = 0; i < 60; i++)
        {
            string mutant = TinyModels.CopyFolder(adapter, Path.Combine(temp, $"adapter{i}"));
            switch (i % 3)
            {
                case 0: File.WriteAllBytes(Path.Combine(mutant, PeftAdapterFormat.WeightsFileName), Mutate(weights, random, HeaderBytes(weights))); break;
                case 1:
                    var json = Encoding.UTF8.GetBytes(config);
                    json[random.Next(json.Length)] = (byte)"0123456789\"{}[],:tfn-.eE x"[random.Next(26)];
                    File.WriteAllBytes(Path.Combine(mutant, PeftAdapterFormat.ConfigFileName), json);
                    break;
                default:
                    mutant = Path.Combine(temp, $"delta{i}.safetensors");
                    File.WriteAllBytes(mutant, Mutate(deltaBytes, random, HeaderBytes(deltaBytes)));
                    break;
            }
            string target = mutant;
            Expect($"artifact mutant {i}", () =>
            {
                using var model = MethodArtifacts.LoadWithArtifact(Fixtures.Model("bert-tiny"), target, out _);
                Assert.All(model.parameters(), p => Assert.Equal(0, FiniteChecks.NonFiniteCount(p)));
            });
        }
        log.WriteLine($"artifacts: {loaded} loaded, {refused} refused");
        Assert.True(refused > 20, $"only {refused} of 60 mutants were refused");
    }

    [Fact]
    public void DataRowMutantsLoadOrFailWithAProjectError()
    {
        var random = new Random(21);
        string[] pieces = ["\"", "{", "}", ",", ":", "\\", "\n", "\t", "label", "text", "null", "true", "[1]", "17", "-3", "\u00e9", "\uFFFD", "1.5"];
        for (int i = 0; i < 60; i++)
        {
            var rows = TinyModels.GoodRows.ToList();
            int row = random.Next(rows.Count);
            var text = new StringBuilder(rows[row]);
            for (int j = 0, n = random.Next(1, 4); j < n; j++)
                text.Insert(random.Next(text.Length + 1), pieces[random.Next(pieces.Length)]);
            rows[row] = text.ToString();
            string file = Path.Combine(temp, $"rows{i}.jsonl");
            File.WriteAllLines(file, rows);
            bool skip = i % 2 == 0;
            Expect($"data mutant {i}: {rows[row]}", () => ClassificationData.Load(file, new CharEncoder(), new ClassificationDataOptions { SkipBadRows = skip }));
        }
        log.WriteLine($"data: {loaded} loaded, {refused} refused");
        Assert.True(loaded > 0 && refused > 0);
    }
}
