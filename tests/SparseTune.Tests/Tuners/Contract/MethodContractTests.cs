using SparseTune.Metrics;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Training;
using SparseTune.Tuners;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.Tuners.Contract;

/// <summary>
/// The contract every registered method must keep — today's, future ones, and the test-only BitFit — with no
/// per-method code: each case takes a method from the registry and its default options and demo learning rate.
/// </summary>
public class MethodContractTests(ITestOutputHelper output)
{
    /// <summary>
    /// A family and head: BERT with its own classifier, GPT-2 (fused c_attn, Conv1D, tied head) as a causal LM, LLaMA
    /// (GQA) with a new classifier; and the other task types: BERT with a new extractive-QA head (the artifacts must
    /// carry it) and a BertForMultipleChoice checkpoint with its own head ((B, choices, T) batches).
    /// </summary>
    public sealed record Setup(string Model, TaskKind Task, int Vocab, IReadOnlyList<string>? NewLabels, ModelHead? NewHead = null)
    {
        public override string ToString() => $"{Model} {Task}";
    }

    static readonly Dictionary<string, Setup> Setups = new()
    {
        ["bert"] = new("bert-tiny", TaskKind.Classification, 223, null),
        ["gpt2"] = new("gpt2-tiny", TaskKind.CausalLM, 211, null),
        ["llama"] = new("llama-tiny", TaskKind.Classification, 241, ["a", "b", "c"]),
        ["bert-qa"] = new("bert-tiny", TaskKind.QuestionAnswering, 223, null, ModelHead.QuestionAnswering),
        ["bert-mc"] = new("bert-tiny-mc", TaskKind.MultipleChoice, 223, null),
    };

    /// <summary>The setups of the model families (the task types' setups run in <see cref="Cases"/> only).</summary>
    static readonly string[] Families = ["bert", "gpt2", "llama"];

    public static IEnumerable<object[]> Cases() =>
        from method in MethodRegistry.All
        from family in Setups.Keys
        select new object[] { method.Name, family };

    /// <summary>Every method once, the families taken in turn (bf16 runs cost more on tiny shapes than float32).</summary>
    public static IEnumerable<object[]> Bf16Cases() =>
        MethodRegistry.All.Select((method, i) => new object[] { method.Name, Families[i % Families.Length] });

    [Fact]
    public void TheTestOnlyMethodIsRegisteredWithoutChangesToSrc()
    {
        Assert.Contains("bitfit", MethodRegistry.Names);
        Assert.Equal(["full", "lora", "sift", "pst"], MethodRegistry.Names.Take(4));
    }

    static TransformerModel Load(Setup setup) =>
        setup.NewLabels is not null ? PretrainedModel.Load(Fixtures.Model(setup.Model), ModelHead.SequenceClassification, setup.NewLabels)
        : setup.NewHead is { } head ? PretrainedModel.Load(Fixtures.Model(setup.Model), head)
        : PretrainedModel.Load(Fixtures.Model(setup.Model));

    static SyntheticBatches Data(Setup setup) => new(setup.Task, setup.Vocab, 32, 8);

    static TrainingOptions Options(MethodDescriptor method, string dir, int steps) => new()
    {
        MaxSteps = steps,
        LearningRate = method.DemoLearningRate,
        OutputDirectory = dir,
        EvaluateBaseline = false,
        WarmupRatio = 0,
        SaveEvery = 3,
        LogEvery = 1,
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void AttachFreezesEverythingOutsideTheTrainableSet(string name, string family)
    {
        var method = MethodRegistry.Get(name);
        torch.random.manual_seed(1);
        using var model = Load(Setups[family]);
        using var tuner = method.CreateTuner();
        tuner.Attach(model);
        var trainable = tuner.TrainableParameters().ToList();
        Assert.NotEmpty(trainable);
        var handles = trainable.Select(t => t.Parameter.Handle).ToHashSet();
        Assert.All(trainable, t => Assert.True(t.Parameter.requires_grad, $"{name}: {t.Name} is listed as trainable but frozen"));
        foreach (var (paramName, p) in model.named_parameters())
            Assert.True(p.requires_grad == handles.Contains(p.Handle), $"{name}: {paramName} requires_grad={p.requires_grad} but trainable={handles.Contains(p.Handle)}");
        // The optimizer gets exactly these tensors, each once (a tied tensor is one).
        using var optimizer = new AdamW(trainable, new AdamWOptions(), TrainingOptions.IsNoDecay);
        Assert.Equal(handles.Count, optimizer.Parameters.Count);
        Assert.Equal(handles.Order(), optimizer.Parameters.Select(p => p.Parameter.Handle).Order());
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void TrainsResumesBitExactlyShipsAndDoesNotLeak(string name, string family)
    {
        var method = MethodRegistry.Get(name);
        var setup = Setups[family];
        string full = Fixtures.TempDirectory($"contract-{name}"), interrupted = Fixtures.TempDirectory($"contract-{name}-part");
        const int steps = 24;   // 6 epochs of 4 batches
        try
        {
            // 1. The loss falls, and the number of live native tensors is the same after every step (no leak).
            torch.random.manual_seed(1);
            var model = Load(setup);
            var tuner = method.CreateTuner();
            var live = new List<long>();
            var trainableSets = new List<long>();   // identity of the trainable tensors after each step
            var trainer = new Trainer(model, tuner, setup.Task, Options(method, full, steps))
            {
                Progress = new RecordingProgress(p =>
                {
                    if (p.Phase != "train") return;
                    live.Add(DisposeScopeManager.Statistics.ThreadTotalLiveCount);
                    trainableSets.Add(tuner.TrainableParameters().Aggregate(17L, (h, t) => h * 31 + t.Parameter.Handle.ToInt64()));
                }),
            };
            var result = trainer.Run(Data(setup));
            var losses = result.LossCurve.Select(l => l.Loss).ToArray();
            output.WriteLine($"{name} on {setup}: losses {string.Join(", ", losses.Select(l => l.ToString("0.0000")))}; live tensors {string.Join(", ", live)}");
            double first = losses.Take(4).Average(), last = losses.TakeLast(4).Average();   // first and last epoch, same batches
            Assert.True(last < first, $"{name}: the loss did not fall ({first:0.0000} → {last:0.0000})");
            // A step that changed the trainable set (a method that prunes, e.g. Light-PEFT) frees and replaces tensors:
            // only steps over an unchanged set must keep the count.
            for (int s = 2; s < live.Count; s++)
                if (trainableSets[s] == trainableSets[s - 1])
                    Assert.True(live[s] == live[s - 1], $"{name}: live native tensors went from {live[s - 1]} after step {s} to {live[s]} after step {s + 1}");

            // 2. After Finish, the tuned model's logits are what the shipped outputs reproduce.
            using var ids = InputIds(setup);
            model.eval();
            using var tuned = Logits(model, ids);
            var outputs = FineTuneJob.SaveOutputs(model, tuner, full, Fixtures.Model(setup.Model));
            output.WriteLine($"{name}: outputs {string.Join(", ", outputs.Keys)}");
            Assert.All(outputs.Values, path => Assert.True(File.Exists(path) || Directory.Exists(path), $"{name}: {path} was reported but not written"));
            int checkedOutputs = 0;
            if (outputs.TryGetValue("model", out var modelDir))
            {
                using var reloaded = PretrainedModel.Load(modelDir);
                reloaded.eval();
                AssertClose(tuned, Logits(reloaded, ids), $"{name}: model/ reloaded");
                checkedOutputs++;
            }
            foreach (var reader in MethodRegistry.ArtifactReaders)
            {
                foreach (string artifact in reader.Locate(full))
                {
                    using var merged = MethodArtifacts.LoadWithArtifact(Fixtures.Model(setup.Model), artifact, out _);
                    merged.eval();
                    AssertClose(tuned, Logits(merged, ids), $"{name}: base + {Path.GetFileName(artifact)}");
                    checkedOutputs++;
                }
            }
            Assert.True(checkedOutputs > 0, $"{name}: wrote neither a model folder nor an artifact any reader recognises");
            tuner.MergeIntoModel(model);
            Assert.All(model.NamedLinears(), l => Assert.Null(l.Layer.Adapter));
            AssertClose(tuned, Logits(model, ids), $"{name}: after MergeIntoModel");
            tuner.Dispose();
            model.Dispose();

            // 3. Killed after step 20 (last checkpoint: step 18) and resumed: the same losses, to the last bit.
            torch.random.manual_seed(1);
            using (var again = Load(setup))
            using (var crashing = method.CreateTuner())
            {
                var crashed = new Trainer(again, crashing, setup.Task, Options(method, interrupted, steps)) { Progress = new CrashAtStep(20) };
                Assert.Throws<OperationCanceledException>(() => crashed.Run(Data(setup)));
            }
            torch.random.manual_seed(1);
            using (var resumedModel = Load(setup))
            using (var resumedTuner = method.CreateTuner())
            {
                var resumed = new Trainer(resumedModel, resumedTuner, setup.Task, Options(method, interrupted, steps) with { ResumeFrom = Path.Combine(interrupted, "checkpoint") }).Run(Data(setup));
                Assert.Equal(losses, resumed.LossCurve.Select(l => l.Loss).ToArray());
            }
        }
        finally
        {
            Directory.Delete(full, true);
            Directory.Delete(interrupted, true);
        }
    }

    /// <summary>
    /// bf16 mixed precision for every method and family: the loss falls, the trainable tensors stay float32 (master
    /// weights), and a run killed after step 20 resumes to the same losses, to the last bit.
    /// </summary>
    [Theory]
    [MemberData(nameof(Bf16Cases))]
    public void TrainsInBf16AndResumesBitExactly(string name, string family)
    {
        var method = MethodRegistry.Get(name);
        var setup = Setups[family];
        string full = Fixtures.TempDirectory($"bf16-{name}"), interrupted = Fixtures.TempDirectory($"bf16-{name}-part");
        const int steps = 24;
        TrainingOptions Bf16(string dir) => Options(method, dir, steps) with { Precision = Nn.Precision.Bf16 };
        try
        {
            double[] losses;
            torch.random.manual_seed(1);
            using (var model = Load(setup))
            using (var tuner = method.CreateTuner())
            {
                losses = [.. new Trainer(model, tuner, setup.Task, Bf16(full)).Run(Data(setup)).LossCurve.Select(l => l.Loss)];
                Assert.All(tuner.TrainableParameters(), p => Assert.Equal(ScalarType.Float32, p.Parameter.dtype));
                Assert.All(model.NamedLinears(), l => Assert.Equal(ScalarType.BFloat16, l.Layer.ComputeType));
            }
            output.WriteLine($"{name} on {setup} in bf16: losses {string.Join(", ", losses.Select(l => l.ToString("0.0000")))}");
            Assert.True(losses.TakeLast(4).Average() < losses.Take(4).Average(), $"{name}: the bf16 loss did not fall");

            torch.random.manual_seed(1);
            using (var again = Load(setup))
            using (var crashing = method.CreateTuner())
                Assert.Throws<OperationCanceledException>(() => new Trainer(again, crashing, setup.Task, Bf16(interrupted)) { Progress = new CrashAtStep(20) }.Run(Data(setup)));
            torch.random.manual_seed(1);
            using (var resumedModel = Load(setup))
            using (var resumedTuner = method.CreateTuner())
            {
                var resumed = new Trainer(resumedModel, resumedTuner, setup.Task, Bf16(interrupted) with { ResumeFrom = Path.Combine(interrupted, "checkpoint") }).Run(Data(setup));
                Assert.Equal(losses, resumed.LossCurve.Select(l => l.Loss).ToArray());
            }
        }
        finally
        {
            Directory.Delete(full, true);
            Directory.Delete(interrupted, true);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void KeepBestShipsTheBestCandidatesModel(string name, string family)
    {
        // Every evaluation scores worse than the one before, so the best candidate is the first evaluation after the
        // method's last structural change; the model the method ships after Finish must compute what that evaluation's
        // model computed. A method that let its structure change after declaring it final fails here.
        var method = MethodRegistry.Get(name);
        var setup = Setups[family];
        string mainMetric = MetricSet.MainMetric(setup.Task);
        double sign = MetricSet.GoalOf(mainMetric) == MetricGoal.Maximize ? -1 : 1;
        string dir = Fixtures.TempDirectory($"contract-best-{name}");
        var logitsAt = new Dictionary<int, Tensor>();
        try
        {
            torch.random.manual_seed(1);
            using var model = Load(setup);
            using var tuner = method.CreateTuner();
            using var ids = InputIds(setup);
            int step = 0;
            bool finished = false;
            Tensor? shipped = null;
            var options = Options(method, dir, 24) with { SaveEvery = 0, EvalEvery = 4, KeepBest = true, EarlyStoppingPatience = 2 };
            var trainer = new Trainer(model, tuner, setup.Task, options)
            {
                Progress = new RecordingProgress(p => { if (p.Phase == "train") step = p.Step; }),
                Finished = _ => finished = true,
                Evaluate = m =>
                {
                    if (finished) shipped = Logits(m, ids);
                    else
                    {
                        logitsAt.Remove(step, out var old);
                        old?.Dispose();
                        logitsAt[step] = Logits(m, ids);
                    }
                    return new Dictionary<string, double> { [mainMetric] = sign * step };
                },
            };
            var result = trainer.Run(Data(setup));
            var best = Assert.IsType<BestEvaluation>(result.Best);
            output.WriteLine($"{name} on {setup}: evaluations at {string.Join(", ", logitsAt.Keys)}; first candidate {best.FirstCandidateStep}, best {best.Step}, "
                + $"{result.Steps} steps (early stopping: {result.EarlyStopping?.Step}), copy {best.SnapshotBytes:N0} bytes");
            Assert.Equal(best.FirstCandidateStep, best.Step);
            Assert.True(best.Kept);
            Assert.True(best.Step < result.Steps, $"{name}: no evaluation after the best one, so nothing was restored");
            Assert.NotNull(shipped);
            AssertClose(logitsAt[best.Step], shipped, $"{name}: shipped model vs the best evaluation's (step {best.Step})");
        }
        finally
        {
            foreach (var t in logitsAt.Values) t.Dispose();
            Directory.Delete(dir, true);
        }
    }

    static Tensor InputIds(Setup setup)
    {
        var generator = new torch.Generator(5);
        var ids = randint(10, setup.Vocab, [2, 9], generator: generator);
        generator.Dispose();
        return setup.Task == TaskKind.MultipleChoice ? ids.view(1, 2, 9) : ids;   // one question, two choices
    }

    static Tensor Logits(TransformerModel model, Tensor ids)
    {
        using var _ = no_grad();
        using var result = model.Forward(ids);
        return result.Logits.detach().clone();
    }

    void AssertClose(Tensor expected, Tensor actual, string what)
    {
        using (actual)
        {
            double error = (expected - actual).abs().max().item<float>();
            output.WriteLine($"{what}: max |Δ logits| {error:E3}");
            Assert.True(error <= 1e-5, $"{what}: logits differ by {error:E3}");
        }
    }
}
