using System.Globalization;
using System.Text.Json;
using SparseTune.Inference;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.Full;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.TrainingLoop;

/// <summary>
/// Early stopping and --keep-best: the stopping rule on scripted metric sequences (no model), the trainer stopping at
/// the right evaluation and shipping the best evaluation's tensors, the rule for methods whose structure changes, resume,
/// and real short runs whose shipped model scores the best evaluation's metric.
/// </summary>
public class BestEvaluationTests(ITestOutputHelper output)
{
    // ---- the rule alone ------------------------------------------------------------------------------------------------

    [Fact]
    public void EarlyStopping_Maximize_StopsAfterPatienceEvaluationsWithoutStrictImprovement()
    {
        var rule = new EarlyStopping(MetricGoal.Maximize, patience: 2);
        double[] accuracy = [0.5, 0.6, 0.6, 0.55, 0.7];
        var verdicts = accuracy.Select((a, i) => rule.Observe(10 * (i + 1), a)).ToList();
        // 0.6 again is no improvement (strictly better only): two in a row stop the run at step 40; 0.7 comes too late.
        Assert.Equal([EvaluationVerdict.Improved, EvaluationVerdict.Improved, EvaluationVerdict.Continue, EvaluationVerdict.Stop, EvaluationVerdict.Stop], verdicts);
        Assert.Equal(40, rule.StoppedAtStep);
        Assert.Equal(20, rule.BestStep);
        Assert.Equal(0.6, rule.BestValue);
    }

    [Fact]
    public void EarlyStopping_Minimize_CountsResetAtEachImprovement()
    {
        var rule = new EarlyStopping(MetricGoal.Minimize, patience: 3);
        double[] perplexity = [10, 9, 9.5, 9.2, 8, 8.5, 8.2, 8.1, 7];
        var verdicts = perplexity.Select((p, i) => rule.Observe(i + 1, p)).ToList();
        Assert.Equal([EvaluationVerdict.Improved, EvaluationVerdict.Improved, EvaluationVerdict.Continue, EvaluationVerdict.Continue,
                      EvaluationVerdict.Improved, EvaluationVerdict.Continue, EvaluationVerdict.Continue, EvaluationVerdict.Stop, EvaluationVerdict.Stop], verdicts);
        Assert.Equal(8, rule.StoppedAtStep);
        Assert.Equal(5, rule.BestStep);
    }

    [Fact]
    public void EarlyStopping_NonFiniteNeverImproves_NoPatienceNeverStops_AndStateRoundTrips()
    {
        var tracking = new EarlyStopping(MetricGoal.Maximize);
        Assert.Equal(EvaluationVerdict.Continue, tracking.Observe(1, double.NaN));
        Assert.Null(tracking.BestStep);
        Assert.Equal(EvaluationVerdict.Improved, tracking.Observe(2, 0.1));
        for (int s = 3; s < 50; s++) Assert.Equal(EvaluationVerdict.Continue, tracking.Observe(s, double.PositiveInfinity));
        Assert.Null(tracking.StoppedAtStep);

        var a = new EarlyStopping(MetricGoal.Minimize, 2);
        a.Observe(1, 5); a.Observe(2, 6);
        var b = new EarlyStopping(MetricGoal.Minimize, 2);
        b.Restore(a.State);
        Assert.Equal(a.State, b.State);
        Assert.Equal(a.Observe(3, 5.5), b.Observe(3, 5.5));
        Assert.Equal(EvaluationVerdict.Stop, b.Observe(3, 5.5));

        var reset = new EarlyStopping(MetricGoal.Maximize, 2);
        reset.Observe(1, 0.9); reset.Observe(2, 0.1);
        reset.Reset();
        Assert.Equal(EvaluationVerdict.Improved, reset.Observe(3, 0.2));   // a structural change: the old best no longer counts
        Assert.Throws<ArgumentOutOfRangeException>(() => new EarlyStopping(MetricGoal.Maximize, 0));
    }

    [Fact]
    public void Options_NeedEvaluationsDuringTraining()
    {
        var problems = new TrainingOptions { EarlyStoppingPatience = 0, KeepBest = true }.Problems();
        Assert.Contains("--early-stopping-patience must be at least 1", problems);
        Assert.Contains("--early-stopping-patience and --keep-best need evaluations during training: set --eval-every N", problems);
        Assert.Empty(new TrainingOptions { KeepBest = true, EvalEvery = 2 }.Problems());
        using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
        using var tuner = new FullFineTuner();
        var noEvaluation = Assert.Throws<ArgumentException>(() => new Trainer(model, tuner, TaskKind.Classification,
            new TrainingOptions { KeepBest = true, EvalEvery = 2, OutputDirectory = Path.Combine(Path.GetTempPath(), "never-created") }).Run(new SyntheticBatches(TaskKind.Classification, 223, 16, 8)));
        Assert.Contains("--keep-best needs an evaluation", noEvaluation.Message);
    }

    // ---- the trainer, on a scripted metric -----------------------------------------------------------------------------

    /// <summary>A run whose evaluations return <c>accuracy = script(step)</c>, recording the trainable tensors at each evaluation.</summary>
    sealed class ScriptedRun : IDisposable
    {
        public readonly Dictionary<int, Dictionary<string, Tensor>> TensorsAt = [];
        public readonly List<(int Step, bool FinalStructure)> Evaluations = [];
        public int Step;
        public bool Finished;

        public TrainingResult Run(TransformerModel model, Tuner tuner, TrainingOptions options, Func<int, double> script, IProgress<TrainingProgress>? crash = null)
        {
            var trainer = new Trainer(model, tuner, TaskKind.Classification, options)
            {
                Progress = new RecordingProgress(p =>
                {
                    if (p.Phase == "train") Step = p.Step;
                    crash?.Report(p);
                }),
                Finished = _ => Finished = true,
                Evaluate = _ =>
                {
                    if (!Finished)
                    {
                        Evaluations.Add((Step, tuner.HasFinalStructure));
                        foreach (var old in TensorsAt.GetValueOrDefault(Step)?.Values ?? Enumerable.Empty<Tensor>()) old.Dispose();
                        TensorsAt[Step] = tuner.TrainableParameters().ToDictionary(t => t.Name, t => t.Parameter.detach().clone());
                    }
                    return new Dictionary<string, double> { ["accuracy"] = script(Step) };
                },
            };
            return trainer.Run(new SyntheticBatches(TaskKind.Classification, 223, 16, 8));
        }

        public void Dispose()
        {
            foreach (var t in TensorsAt.Values.SelectMany(d => d.Values)) t.Dispose();
        }
    }

    static void AssertSameTensors(IReadOnlyDictionary<string, Tensor> expected, Tuner tuner, string what)
    {
        foreach (var (name, p) in tuner.TrainableParameters())
            Assert.True(p.detach().eq(expected[name]).all().item<bool>(), $"{what}: {name} is not the best evaluation's");
    }

    static readonly Dictionary<int, double> Script = new() { [2] = 0.2, [4] = 0.5, [6] = 0.4, [8] = 0.45, [10] = 0.3, [12] = 0.9, [14] = 0.95 };

    [Theory]
    [InlineData("full")]
    [InlineData("lora")]
    public void Trainer_StopsAtTheRightEvaluation_AndKeepBestShipsThatEvaluationsTensors(string method)
    {
        string dir = Fixtures.TempDirectory("early-" + method);
        try
        {
            torch.random.manual_seed(3);
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            using var tuner = MethodRegistry.CreateTuner(method);
            using var run = new ScriptedRun();
            var options = new TrainingOptions { MaxSteps = 16, LearningRate = 1e-2, OutputDirectory = dir, EvaluateBaseline = false, EvalEvery = 2, EarlyStoppingPatience = 3, KeepBest = true };
            var result = run.Run(model, tuner, options, s => Script[s]);

            // Evaluations at 2, 4 (best), 6, 8, 10: three without improvement stop the run after step 10; 0.9 at 12 never comes.
            Assert.Equal(10, result.Steps);
            Assert.Equal([2, 4, 6, 8, 10], run.Evaluations.Select(e => e.Step));
            Assert.Equal(new EarlyStoppingOutcome { Patience = 3, Triggered = true, Step = 10 }, result.EarlyStopping);
            Assert.NotNull(result.Best);
            Assert.Equal((4, "accuracy", 0.5, 2, true), (result.Best.Step, result.Best.Metric, result.Best.Value, result.Best.FirstCandidateStep, result.Best.Kept));
            Assert.True(result.Best.SnapshotBytes > 0);
            AssertSameTensors(run.TensorsAt[4], tuner, method);
            Assert.False(run.TensorsAt[10].All(t => t.Value.eq(run.TensorsAt[4][t.Key]).all().item<bool>()));   // the weights did move after the best
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Trainer_WithoutKeepBest_ShipsTheLastWeights_AndStillReportsTheBest()
    {
        string dir = Fixtures.TempDirectory("best-report");
        try
        {
            using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
            using var tuner = MethodRegistry.CreateTuner("lora");
            using var run = new ScriptedRun();
            var result = run.Run(model, tuner, new TrainingOptions { MaxSteps = 8, LearningRate = 1e-2, OutputDirectory = dir, EvaluateBaseline = false, EvalEvery = 2 }, s => Script[s]);
            Assert.Equal(8, result.Steps);
            Assert.Null(result.EarlyStopping);
            Assert.Equal((4, false, 0L), (result.Best!.Step, result.Best.Kept, result.Best.SnapshotBytes));
            Assert.Equal([2, 4, 6], run.Evaluations.Select(e => e.Step));   // the end state is only evaluated as the final evaluation
            Assert.False(run.TensorsAt[6].All(t => t.Value.eq(tuner.TrainableParameters().First(p => p.Name == t.Key).Parameter).all().item<bool>()));
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>Full fine-tuning whose structure is final only from a given number of completed steps on (as PST's cool-down).</summary>
    sealed class FinalFromStepTuner(int fromStep) : Tuner
    {
        readonly FullFineTuner inner = new();
        int completed;
        public override string Name => "full";
        public override object Options => new { };
        public override bool ModifiesBaseWeights => true;
        public override bool HasFinalStructure => completed >= fromStep;
        public override void Attach(TransformerModel model) => inner.Attach(model);
        public override IEnumerable<(string Name, TorchSharp.Modules.Parameter Parameter)> TrainableParameters() => inner.TrainableParameters();
        public override bool AfterOptimizerStep(TrainingStepContext context) { completed = context.Step + 1; return false; }
    }

    /// <summary>Full fine-tuning that rebuilds its optimizer after a given (0-based) step, as a pruning method does.</summary>
    sealed class ChangesAfterTuner(int afterStep) : Tuner
    {
        readonly FullFineTuner inner = new();
        public override string Name => "full";
        public override object Options => new { };
        public override bool ModifiesBaseWeights => true;
        public override void Attach(TransformerModel model) => inner.Attach(model);
        public override IEnumerable<(string Name, TorchSharp.Modules.Parameter Parameter)> TrainableParameters() => inner.TrainableParameters();
        public override bool AfterOptimizerStep(TrainingStepContext context) => context.Step == afterStep;
    }

    [Fact]
    public void Trainer_OnlyEvaluationsAfterTheLastStructuralChangeAreCandidates()
    {
        // The best of all evaluations is the first (0.99 at step 2), before the structure is final: it must not count.
        Func<int, double> earlyBest = s => s == 2 ? 0.99 : s / 100.0;
        foreach (Tuner tuner in new Tuner[] { new FinalFromStepTuner(6), new ChangesAfterTuner(4) })
        {
            string dir = Fixtures.TempDirectory("structure");
            try
            {
                using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"));
                using var run = new ScriptedRun();
                var options = new TrainingOptions { MaxSteps = 12, LearningRate = 1e-2, OutputDirectory = dir, EvaluateBaseline = false, EvalEvery = 2, KeepBest = true, EarlyStoppingPatience = 2 };
                var result = run.Run(model, tuner, options, s => earlyBest(s));
                output.WriteLine($"{tuner.GetType().Name}: best {result.Best?.Step}, first candidate {result.Best?.FirstCandidateStep}, steps {result.Steps}");
                // FinalFromStep(6): evaluations at 2 and 4 are not candidates; ChangesAfter(4) (after step 5): the best of 2 and 4 is forgotten.
                Assert.Equal(6, result.Best!.FirstCandidateStep);
                Assert.Equal(12, result.Best.Step);                      // rising from 6 on, 0.99 at step 2 never counts
                Assert.Equal(12, result.Steps);
                Assert.False(result.EarlyStopping!.Triggered);           // 0.99 did not start the patience count
                AssertSameTensors(run.TensorsAt[12], tuner, tuner.GetType().Name);
            }
            finally
            {
                tuner.Dispose();
                Directory.Delete(dir, true);
            }
        }
    }

    [Theory]
    [InlineData("full")]
    [InlineData("lora")]
    public void Trainer_ResumedRunStopsAndShipsAsTheUninterruptedOne(string method)
    {
        var options = new TrainingOptions { MaxSteps = 16, LearningRate = 1e-2, EvaluateBaseline = false, EvalEvery = 2, SaveEvery = 3, EarlyStoppingPatience = 3, KeepBest = true };
        string full = Fixtures.TempDirectory("best-full"), interrupted = Fixtures.TempDirectory("best-part");
        try
        {
            Dictionary<string, Tensor> reference;
            TrainingResult uninterrupted;
            torch.random.manual_seed(5);
            using (var model = PretrainedModel.Load(Fixtures.Model("bert-tiny")))
            using (var tuner = MethodRegistry.CreateTuner(method))
            using (var run = new ScriptedRun())
            {
                uninterrupted = run.Run(model, tuner, options with { OutputDirectory = full }, s => Script[s]);
                reference = tuner.TrainableParameters().ToDictionary(t => t.Name, t => t.Parameter.detach().clone());
            }

            // Killed after step 7: the step-6 checkpoint holds the best so far (step 4) and its copy.
            torch.random.manual_seed(5);
            using (var model = PretrainedModel.Load(Fixtures.Model("bert-tiny")))
            using (var tuner = MethodRegistry.CreateTuner(method))
            using (var run = new ScriptedRun())
                Assert.Throws<OperationCanceledException>(() => run.Run(model, tuner, options with { OutputDirectory = interrupted }, s => Script[s], new CrashAtStep(7)));
            string checkpoint = Path.Combine(interrupted, "checkpoint");
            Assert.True(File.Exists(Path.Combine(checkpoint, "best.safetensors")));
            using (var state = JsonDocument.Parse(File.ReadAllText(Path.Combine(checkpoint, "trainer_state.json"))))
                Assert.Equal(4, state.RootElement.GetProperty("best").GetProperty("step").GetInt32());

            torch.random.manual_seed(5);
            using (var model = PretrainedModel.Load(Fixtures.Model("bert-tiny")))
            using (var tuner = MethodRegistry.CreateTuner(method))
            using (var run = new ScriptedRun())
            {
                var resumed = run.Run(model, tuner, options with { OutputDirectory = interrupted, ResumeFrom = checkpoint }, s => Script[s]);
                Assert.Equal([8, 10], run.Evaluations.Select(e => e.Step));
                Assert.Equal(uninterrupted.Steps, resumed.Steps);
                Assert.Equal(uninterrupted.EarlyStopping, resumed.EarlyStopping);
                Assert.Equal(uninterrupted.Best! with { Metrics = resumed.Best!.Metrics }, resumed.Best);
                Assert.Equal(uninterrupted.Best.Metrics, resumed.Best.Metrics);
                AssertSameTensors(reference, tuner, method + " resumed");
            }
            foreach (var t in reference.Values) t.Dispose();
        }
        finally
        {
            Directory.Delete(full, true);
            Directory.Delete(interrupted, true);
        }
    }

    // ---- real short runs ----------------------------------------------------------------------------------------------

    [Theory]
    [InlineData("full", "1e-2")]
    [InlineData("lora", "5e-2")]
    public void Finetune_KeepBest_TheShippedModelScoresTheBestEvaluation(string method, string lr)
    {
        string temp = Fixtures.TempDirectory("keep-best-" + method);
        try
        {
            string bert = TinyModels.BertWithVocab(Path.Combine(temp, "bert-vocab"));
            string train = Path.Combine(temp, "train.jsonl"), eval = Path.Combine(temp, "eval.jsonl"), run = Path.Combine(temp, "run");
            File.WriteAllLines(train, TinyModels.GoodRows);
            File.WriteAllLines(eval, TinyModels.GoodRows.Take(6));
            var result = CliRun.Invoke(output, "finetune", "--model", bert, "--train", train, "--eval", eval, "--method", method, "--lr", lr,
                "--max-steps", "8", "--batch-size", "4", "--max-length", "16", "--no-baseline", "--eval-every", "1", "--keep-best", "--output", run);
            Assert.True(result.ExitCode == 0, result.Err);

            using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(run, "report.json")));
            var root = report.RootElement;
            var best = root.GetProperty("best_eval");
            double bestAccuracy = best.GetProperty("value").GetDouble();
            int bestStep = best.GetProperty("step").GetInt32();
            Assert.Equal("accuracy", best.GetProperty("metric").GetString());
            Assert.True(best.GetProperty("kept").GetBoolean());
            Assert.Equal(1, best.GetProperty("first_candidate_step").GetInt32());
            Assert.Equal(JsonValueKind.Null, root.GetProperty("early_stopping").ValueKind);
            var evals = File.ReadAllLines(Path.Combine(run, "metrics.jsonl")).Select(l => JsonDocument.Parse(l).RootElement)
                .Where(e => e.TryGetProperty("eval", out _)).Select(e => (Step: e.GetProperty("step").GetInt32(), Accuracy: e.GetProperty("eval").GetProperty("accuracy").GetDouble())).ToList();
            output.WriteLine($"{method}: evaluations {string.Join(", ", evals.Select(e => $"{e.Step}: {e.Accuracy:0.000}"))}; best step {bestStep}");
            Assert.Equal(evals.Take(8).Max(e => e.Accuracy), bestAccuracy);   // steps 1-8; the ninth line is the final evaluation
            Assert.Equal(evals.First(e => e.Accuracy == bestAccuracy).Step, bestStep);

            // The final evaluation in report.json, and predict on the shipped outputs, score the best evaluation's accuracy.
            Assert.Equal(bestAccuracy, root.GetProperty("eval").GetProperty("accuracy").GetDouble());
            using var predictor = method == "full" ? ClassificationPredictor.Load(Path.Combine(run, "model"), options: new PredictorOptions { MaxLength = 16 })
                : ClassificationPredictor.Load(bert, adapter: run, options: new PredictorOptions { MaxLength = 16 });
            var predicted = predictor.PredictFile(eval);
            Assert.Equal(bestAccuracy, predicted.Metrics!["accuracy"], 12);
        }
        finally { Directory.Delete(temp, true); }
    }

    [Fact]
    public void Finetune_EarlyStoppingWithoutEvalEveryOrEvalFile_IsOneLineUsageError()
    {
        string temp = Fixtures.TempDirectory("early-usage");
        try
        {
            string bert = TinyModels.BertWithVocab(Path.Combine(temp, "bert-vocab"));
            string train = Path.Combine(temp, "train.jsonl");
            File.WriteAllLines(train, TinyModels.GoodRows);
            var result = CliRun.Invoke(output, "finetune", "--model", bert, "--train", train, "--early-stopping-patience", "2", "--output", Path.Combine(temp, "run"));
            Assert.Equal(2, result.ExitCode);
            string line = CliRun.AssertOneLineError(result);
            Assert.Contains("--early-stopping-patience needs evaluations during training: set --eval-every N", line);
            Assert.Contains("--early-stopping-patience needs an evaluation file: set --eval FILE", line);
            Assert.False(Directory.Exists(Path.Combine(temp, "run")));
        }
        finally { Directory.Delete(temp, true); }
    }
}
