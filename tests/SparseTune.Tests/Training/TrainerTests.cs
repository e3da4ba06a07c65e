using System.Text.Json;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.Full;
using SparseTune.Tuners.Lora;
using Xunit;
using Xunit.Abstractions;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Tests.TrainingLoop;

public class TrainerTests(ITestOutputHelper output)
{
    static TrainingResult Train(string modelName, Tuner tuner, TaskKind task, TrainingOptions options, int vocab, int examples = 48, IProgress<TrainingProgress>? progress = null)
    {
        using var model = PretrainedModel.Load(Fixtures.Model(modelName));
        var data = new SyntheticBatches(task, vocab, examples, 8);
        return new Trainer(model, tuner, task, options) { Progress = progress }.Run(data);
    }

    [Theory]
    [InlineData("full", 1e-3)]
    [InlineData("lora", 1e-2)]
    public void LossFallsOnATinyClassificationTask(string method, double lr)
    {
        string dir = Fixtures.TempDirectory("loss-" + method);
        try
        {
            using var tuner = MethodRegistry.CreateTuner(method);
            var result = Train("bert-tiny", tuner, TaskKind.Classification, new TrainingOptions { Epochs = 12, LearningRate = lr, OutputDirectory = dir, EvaluateBaseline = false, WarmupRatio = 0 }, 223);
            double firstEpoch = result.LossCurve.Take(6).Average(l => l.Loss), lastEpoch = result.LossCurve.TakeLast(6).Average(l => l.Loss);
            output.WriteLine($"{method}: first-epoch mean loss {firstEpoch:0.0000}, last-epoch {lastEpoch:0.0000}");
            Assert.True(lastEpoch < 0.8 * firstEpoch, $"{method}: loss did not fall enough ({firstEpoch} → {lastEpoch})");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void LossFallsForCausalLmWithLora()
    {
        string dir = Fixtures.TempDirectory("loss-lm");
        try
        {
            using var tuner = new LoraTuner(new LoraOptions { TargetModules = [LoraOptions.AllLinear] });
            var result = Train("gpt2-tiny", tuner, TaskKind.CausalLM, new TrainingOptions { Epochs = 20, LearningRate = 2e-2, OutputDirectory = dir, EvaluateBaseline = false }, 211);
            output.WriteLine($"lm loss {result.TrainLossFirst:0.0000} → {result.TrainLossLast:0.0000}");
            Assert.True(result.TrainLossLast < 0.75 * result.TrainLossFirst, $"LM loss did not fall enough: {result.TrainLossFirst} → {result.TrainLossLast}");
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void SameSeedGivesBitIdenticalLosses()
    {
        double[] Run()
        {
            string dir = Fixtures.TempDirectory("det");
            try
            {
                using var tuner = new LoraTuner(new LoraOptions());
                return Train("bert-tiny", tuner, TaskKind.Classification, new TrainingOptions { MaxSteps = 5, LearningRate = 1e-2, OutputDirectory = dir, EvaluateBaseline = false }, 223)
                    .LossCurve.Select(l => l.Loss).ToArray();
            }
            finally { Directory.Delete(dir, true); }
        }
        Assert.Equal(Run(), Run());
    }

    [Theory]
    [InlineData("full")]
    [InlineData("lora")]
    [InlineData("sift")]
    public void ResumedRunMatchesUninterruptedRun(string method)
    {
        var options = new TrainingOptions { MaxSteps = 8, LearningRate = 5e-3, EvaluateBaseline = false, GradientAccumulation = 2, SaveEvery = 3 };
        string full = Fixtures.TempDirectory("resume-full"), interrupted = Fixtures.TempDirectory("resume-part");
        try
        {
            double[] reference;
            using (var tuner = MethodRegistry.CreateTuner(method))
                reference = Train("bert-tiny", tuner, TaskKind.Classification, options with { OutputDirectory = full }, 223).LossCurve.Select(l => l.Loss).ToArray();

            // The same run, killed after step 7 (its last checkpoint is step 6), then resumed.
            using (var tuner = MethodRegistry.CreateTuner(method))
                Assert.Throws<OperationCanceledException>(() => Train("bert-tiny", tuner, TaskKind.Classification, options with { OutputDirectory = interrupted }, 223, progress: new CrashAtStep(7)));
            string checkpoint = Path.Combine(interrupted, "checkpoint");
            Assert.Equal(6, JsonDocument.Parse(File.ReadAllText(Path.Combine(checkpoint, "trainer_state.json"))).RootElement.GetProperty("step").GetInt32());
            double[] resumed;
            using (var tuner = MethodRegistry.CreateTuner(method))
                resumed = Train("bert-tiny", tuner, TaskKind.Classification, options with { OutputDirectory = interrupted, ResumeFrom = checkpoint }, 223).LossCurve.Select(l => l.Loss).ToArray();
            output.WriteLine($"{method}: reference {string.Join(", ", reference)}");
            output.WriteLine($"{method}: resumed   {string.Join(", ", resumed)}");
            Assert.Equal(reference.Length, resumed.Length);
            Assert.Equal(reference[6..], resumed[6..]);   // the steps after the resume, to the last bit
        }
        finally { Directory.Delete(full, true); Directory.Delete(interrupted, true); }
    }

    [Fact]
    public void BaselineAndEvaluationsRunInEvalModeWithoutAutograd_ThenTrainingResumesInTrainMode()
    {
        // Dropout during the baseline made it noisy and method-dependent (it drew from the RNG stream).
        string dir = Fixtures.TempDirectory("evalmode");
        try
        {
            using var tuner = new FullFineTuner();
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            var seen = new List<(bool Training, bool Grad)>();
            var options = new TrainingOptions { MaxSteps = 2, LearningRate = 1e-3, OutputDirectory = dir, EvaluateBaseline = true };
            var result = new Trainer(model, tuner, TaskKind.Classification, options)
            {
                Evaluate = m => { seen.Add((m.training, is_grad_enabled())); return new Dictionary<string, double> { ["x"] = 1 }; },
            }.Run(new SyntheticBatches(TaskKind.Classification, 223, 16, 8));
            Assert.Equal([(false, false), (false, false)], seen);   // the baseline and the final evaluation
            Assert.True(model.training);
            Assert.NotNull(result.BaselineEval);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void NanLossStopsWithAClearMessageAndKeepsTheLastCheckpoint()
    {
        string dir = Fixtures.TempDirectory("nan");
        try
        {
            using var tuner = new NanFromStepTuner(2);
            var options = new TrainingOptions { MaxSteps = 6, LearningRate = 1e-3, OutputDirectory = dir, EvaluateBaseline = false, SaveEvery = 2 };
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            var error = Assert.Throws<TrainingDivergedException>(() => new Trainer(model, tuner, TaskKind.Classification, options).Run(new SyntheticBatches(TaskKind.Classification, 223, 48, 8)));
            output.WriteLine(error.Message);
            Assert.Contains("NaN", error.Message);
            Assert.Contains("step 3", error.Message);
            Assert.Contains("step 2", error.Message); // the kept checkpoint
            var state = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "checkpoint", "trainer_state.json")));
            Assert.Equal(2, state.RootElement.GetProperty("step").GetInt32());
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void FrozenParametersGetNoGradientAndAreNotOptimised()
    {
        string dir = Fixtures.TempDirectory("frozen");
        try
        {
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            using var tuner = new LoraTuner(new LoraOptions());
            var before = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.clone());
            new Trainer(model, tuner, TaskKind.Classification, new TrainingOptions { MaxSteps = 2, LearningRate = 1e-2, OutputDirectory = dir, EvaluateBaseline = false })
                .Run(new SyntheticBatches(TaskKind.Classification, 223, 16, 8));
            var trainable = tuner.TrainableParameters().Select(t => t.Name).ToHashSet();
            foreach (var (name, p) in model.named_parameters())
            {
                if (trainable.Contains(name)) continue;
                Assert.False(p.requires_grad, name);
                Assert.Null(p.grad);
                Assert.True(p.allclose(before[name], rtol: 0, atol: 0), $"{name} changed although frozen");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void InvalidOptionsAreReportedTogether()
    {
        var options = new TrainingOptions { BatchSize = 0, LearningRate = -1, WarmupRatio = 2 };
        var problems = options.Problems();
        Assert.Equal(3, problems.Count);
        Assert.Contains(problems, p => p.Contains("--batch-size"));
        Assert.Contains(problems, p => p.Contains("--lr"));
        Assert.Contains(problems, p => p.Contains("--warmup-ratio"));
    }

    [Fact]
    public void LinearAndCosineSchedulesMatchTransformersFormulas()
    {
        var linear = new LearningRateSchedule(ScheduleKind.Linear, 1.0, 10, 110);
        Assert.Equal(0.0, linear.At(0));
        Assert.Equal(0.5, linear.At(5));
        Assert.Equal(1.0, linear.At(10));
        Assert.Equal(0.5, linear.At(60), 12);
        Assert.Equal(0.0, linear.At(110));
        var cosine = new LearningRateSchedule(ScheduleKind.Cosine, 2.0, 0, 100);
        Assert.Equal(2.0, cosine.At(0));
        Assert.Equal(1.0, cosine.At(50), 12);
        Assert.Equal(2.0 * 0.5 * (1 + Math.Cos(Math.PI * 0.25)), cosine.At(25), 12);
    }

    [Fact]
    public void AdamWStepMatchesTheClosedFormFirstStep()
    {
        // First step: m̂ = g, v̂ = g², so Δ = −lr · g / (|g| + ε) after decay p·(1 − lr·λ).
        using var p = new TorchSharp.Modules.Parameter(tensor(new float[] { 1f, -2f, 3f }));
        p.grad = tensor(new float[] { 0.5f, -0.25f, 0f });
        using var adam = new AdamW([("w", p)], new AdamWOptions(WeightDecay: 0.1), _ => false);
        adam.Step(0.01);
        float[] expected = [1f * (1 - 0.001f) - 0.01f * 0.5f / (0.5f + 1e-8f), -2f * (1 - 0.001f) + 0.01f * 0.25f / (0.25f + 1e-8f), 3f * (1 - 0.001f)];
        var actual = p.data<float>().ToArray();
        for (int i = 0; i < 3; i++) Assert.Equal(expected[i], actual[i], 5);
        Assert.Equal(2 * 3 * 4, adam.StateBytes);
    }

    /// <summary>Full fine-tuning that starts a new training stage after a given (0-based) step.</summary>
    sealed class RestartAfterTuner(int afterStep) : Tuner
    {
        readonly FullFineTuner inner = new();
        public override string Name => "full";
        public override object Options => new { };
        public override bool ModifiesBaseWeights => true;
        public override void Attach(TransformerModel model) => inner.Attach(model);
        public override IEnumerable<(string Name, TorchSharp.Modules.Parameter Parameter)> TrainableParameters() => inner.TrainableParameters();
        public override bool AfterOptimizerStep(TrainingStepContext context) => context.Step == afterStep;
        public override bool RestartsTraining(TrainingStepContext context) => true;
    }

    [Fact]
    public void ANewTrainingStageRestartsTheScheduleAndResumesAcrossTheBoundary()
    {
        var options = new TrainingOptions { MaxSteps = 8, LearningRate = 1e-2, WarmupSteps = 2, EvaluateBaseline = false, SaveEvery = 5, LogEvery = 1 };
        string full = Fixtures.TempDirectory("stage-full"), interrupted = Fixtures.TempDirectory("stage-part");
        try
        {
            using (var tuner = new RestartAfterTuner(3))
                Train("bert-tiny", tuner, TaskKind.Classification, options with { OutputDirectory = full }, 223);
            double[] rates = File.ReadAllLines(Path.Combine(full, "metrics.jsonl"))
                .Select(l => JsonDocument.Parse(l).RootElement).Where(e => e.TryGetProperty("learning_rate", out _))
                .Select(e => e.GetProperty("learning_rate").GetDouble()).ToArray();
            output.WriteLine(string.Join(", ", rates));
            // Stage 1: steps 0-3 over 8 steps (warm-up 2); stage 2: steps 4-7, warm-up 2 again, linear decay over 4 steps.
            Assert.Equal([0, 5e-3, 1e-2, Math.Round(1e-2 * 5 / 6, 10), 0, 5e-3, 1e-2, 5e-3], rates.Select(r => Math.Round(r, 10)).ToArray());

            double[] reference = File.ReadAllLines(Path.Combine(full, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
                .Where(e => e.TryGetProperty("loss", out _)).Select(e => e.GetProperty("loss").GetDouble()).ToArray();
            using (var tuner = new RestartAfterTuner(3))
                Assert.Throws<OperationCanceledException>(() => Train("bert-tiny", tuner, TaskKind.Classification, options with { OutputDirectory = interrupted }, 223, progress: new CrashAtStep(7)));
            double[] resumed;
            using (var tuner = new RestartAfterTuner(3))
                resumed = Train("bert-tiny", tuner, TaskKind.Classification, options with { OutputDirectory = interrupted, ResumeFrom = Path.Combine(interrupted, "checkpoint") }, 223)
                    .LossCurve.Select(l => l.Loss).ToArray();
            Assert.Equal(reference, resumed);
        }
        finally
        {
            Directory.Delete(full, true);
            Directory.Delete(interrupted, true);
        }
    }

    /// <summary>Full fine-tuning whose loss turns NaN from a given (0-based) step on, through the extra-loss hook.</summary>
    sealed class NanFromStepTuner(int fromStep) : Tuner
    {
        readonly FullFineTuner inner = new();
        public override string Name => "full";
        public override object Options => new { };
        public override bool ModifiesBaseWeights => true;
        public override void Attach(TransformerModel model) => inner.Attach(model);
        public override IEnumerable<(string Name, TorchSharp.Modules.Parameter Parameter)> TrainableParameters() => inner.TrainableParameters();
        public override Tensor? ExtraLoss(TrainingStepContext context) => context.Step >= fromStep ? tensor(float.NaN) : null;
    }
}
