using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using SparseTune.Distributed;
using SparseTune.IO;
using SparseTune.Metrics;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tuners;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Training;

/// <summary>The loss became NaN or infinite; the run stopped without touching the last checkpoint.</summary>
public sealed class TrainingDivergedException(string message) : Exception(message);

/// <summary>
/// A progress report, raised after every optimizer step and evaluation. <paramref name="StageStart"/>: the first step of
/// the current training stage (0 unless the method restarted training, e.g. Light-PEFT's fine-tuning after pruning).
/// </summary>
public sealed record TrainingProgress(string Phase, int Step, int TotalSteps, double Loss, double LearningRate, double TokensPerSecond,
    IReadOnlyDictionary<string, double>? Eval = null, int StageStart = 0);

/// <summary>What one training run produced; the trainer writes it as report.json.</summary>
public sealed record TrainingResult
{
    public required int Steps { get; init; }
    public required long Tokens { get; init; }
    public required double WallSeconds { get; init; }
    public required double TrainLossFirst { get; init; }
    public required double TrainLossLast { get; init; }
    public required long GradOptimizerBytes { get; init; }
    public required long TrainableParameters { get; init; }
    public required long TotalParameters { get; init; }
    public required IReadOnlyDictionary<string, double> Eval { get; init; }
    public IReadOnlyDictionary<string, double>? BaselineEval { get; init; }
    public required IReadOnlyList<(int Step, double Loss)> LossCurve { get; init; }
    public required IReadOnlyList<(int Step, IReadOnlyDictionary<string, double> Metrics)> EvalCurve { get; init; }
    /// <summary>The best candidate evaluation during training (see <see cref="Tuner.HasFinalStructure"/>); null when there was none.</summary>
    public BestEvaluation? Best { get; init; }
    /// <summary>What early stopping did; null without --early-stopping-patience.</summary>
    public EarlyStoppingOutcome? EarlyStopping { get; init; }
}

/// <summary>
/// report.json's best_eval: the best evaluation during training by the task's main metric, among the candidates — the
/// evaluations from <see cref="FirstCandidateStep"/> on, after the method's last structural change. <see cref="Kept"/>:
/// the shipped weights are this evaluation's (--keep-best).
/// </summary>
public sealed record BestEvaluation
{
    [JsonPropertyName("step")] public required int Step { get; init; }
    [JsonPropertyName("metric")] public required string Metric { get; init; }
    [JsonPropertyName("value")] public required double Value { get; init; }
    [JsonPropertyName("metrics")] public required IReadOnlyDictionary<string, double> Metrics { get; init; }
    [JsonPropertyName("first_candidate_step")] public required int FirstCandidateStep { get; init; }
    [JsonPropertyName("kept")] public required bool Kept { get; init; }
    /// <summary>Bytes of the copy --keep-best held (0 without it).</summary>
    [JsonPropertyName("snapshot_bytes")] public long SnapshotBytes { get; init; }
}

/// <summary>report.json's early_stopping: the patience, whether it stopped the run, and after which step.</summary>
public sealed record EarlyStoppingOutcome
{
    [JsonPropertyName("patience")] public required int Patience { get; init; }
    [JsonPropertyName("triggered")] public required bool Triggered { get; init; }
    [JsonPropertyName("step")] public int? Step { get; init; }
}

/// <summary>
/// The one training loop. Methods plug in through <see cref="Tuner"/> hooks; the loop itself knows nothing of
/// LoRA, SIFT or masks. Read top to bottom: set-up → (resume) → baseline eval → steps → (best weights back) → finish →
/// final eval.
/// <para>
/// Best evaluation and early stopping: every evaluation during training made while the method's structure is final
/// (<see cref="Tuner.HasFinalStructure"/>) is a candidate, ranked by the task's main metric (<see cref="MetricSet.MainMetric"/>);
/// a step that changes the trainable set (<see cref="Tuner.AfterOptimizerStep"/> true) forgets the best. With
/// --early-stopping-patience N the run ends after N candidates in a row without improvement; with --keep-best the
/// tensors training changes are copied at each new best and written back before <see cref="Tuner.Finish"/>. A checkpoint
/// carries the best so far (and its copy), so a resumed run decides as the uninterrupted one.
/// </para>
/// </summary>
public sealed class Trainer(TransformerModel model, Tuner tuner, TaskKind task, TrainingOptions options)
{
    const string CheckpointFolderName = "checkpoint";

    public IProgress<TrainingProgress>? Progress { get; init; }

    /// <summary>Receives one-line notes: the trainable-parameter summary right after the method attaches.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>
    /// Called once the method has finished (<see cref="Tuner.Finish"/>) and before the final evaluation: the place to
    /// save what the run produced, so that nothing after it can lose the results.
    /// </summary>
    public Action<TransformerModel>? Finished { get; init; }

    /// <summary>Computes eval metrics for the current model (the caller supplies data and metric set).</summary>
    public Func<TransformerModel, IReadOnlyDictionary<string, double>>? Evaluate { get; init; }

    /// <summary>
    /// The metric of <see cref="Evaluate"/> that ranks evaluations (best model, early stopping); null: the task's
    /// (<see cref="MetricSet.MainMetric"/>). A decoder that trains as a language model but is scored on multiple choice
    /// ranks by accuracy.
    /// </summary>
    public string? MainMetric { get; init; }

    /// <summary>
    /// The data-parallel processes this run trains with (<see cref="SingleProcess"/> by default). With more than one,
    /// the batches of <see cref="Run"/>'s source are global batches: rank r trains on rows [r·n/N, (r+1)·n/N) of each,
    /// its loss weighted by its share of the global batch's loss terms, and the trainable gradients are averaged in one
    /// all-reduce per optimizer step before clipping, so N ranks at batch b step as one process at batch N·b. Every rank
    /// evaluates the whole eval set (identical weights give identical metrics); only rank 0 writes the metrics log and
    /// checkpoints.
    /// </summary>
    public IProcessGroup Group { get; init; } = SingleProcess.Instance;

    public TrainingResult Run(IBatchSource train)
    {
        var problems = options.Problems();
        if (options.FollowsBestEvaluation && Evaluate is null) problems = [.. problems, options.BestEvaluationNeeds("an evaluation: set --eval FILE")];
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));
        Directory.CreateDirectory(options.OutputDirectory);
        using var guard = NativeCallGuard.Enter();
        torch.random.manual_seed(options.Seed);

        int batchesPerEpoch = train.EpochBatches(0).Count;
        if (batchesPerEpoch == 0) throw new ArgumentException("the training set is empty");
        int stepsPerEpoch = Math.Max(1, batchesPerEpoch / options.GradientAccumulation);
        int plannedSteps = options.MaxSteps ?? stepsPerEpoch * options.Epochs;
        int totalSteps = plannedSteps + tuner.AdditionalSteps(plannedSteps, stepsPerEpoch);
        // The schedule of one training stage: a method that starts a new stage (Tuner.RestartsTraining) gets warm-up
        // and decay again over the steps that remain.
        LearningRateSchedule StageSchedule(int stageStart)
        {
            int stageSteps = totalSteps - stageStart;
            int warmup = Math.Min(stageSteps, options.WarmupSteps ?? (int)Math.Ceiling(options.WarmupRatio * stageSteps));   // e.g. PST NLG's 500 on a short run
            return new LearningRateSchedule(options.Schedule, options.LearningRate, warmup, stageSteps);
        }

        // An interrupted checkpoint swap is recovered (the newest complete checkpoint is used) and its leftovers removed.
        string checkpointDir = Path.Combine(options.OutputDirectory, CheckpointFolderName);
        string? resumeFrom = options.ResumeFrom is { } requested ? CheckpointFolder.Resolve(requested) : null;
        bool main = Group.IsMain, distributed = Group.Size > 1;
        if (main) CheckpointFolder.CleanUp(resumeFrom ?? checkpointDir);
        if (distributed) Group.Barrier();   // every rank reads the checkpoint rank 0 has recovered

        tuner.Group = Group;
        tuner.Attach(model);
        model.GradientCheckpointing = options.GradientCheckpointing;
        model.Precision = options.Precision;
        Log?.Invoke(TrainableSummary(model, tuner));
        int startStep = 0;
        var state = new RunState { WorldSize = Group.Size };
        string mainMetric = MainMetric ?? MetricSet.MainMetric(task);
        var tracker = new EarlyStopping(MetricSet.GoalOf(mainMetric), options.EarlyStoppingPatience);
        using var best = new WeightSnapshot();
        IReadOnlyDictionary<string, double>? baseline = null;
        if (resumeFrom is not null)
        {
            state = LoadCheckpoint(resumeFrom, null);
            if (state.Tracker is { } saved) tracker.Restore(saved);
            if (options.KeepBest && tracker.BestStep is int bestSoFar && bestSoFar != state.Step && best.IsEmpty)
                throw new InvalidDataException($"--resume: checkpoint {resumeFrom} holds no copy of the best evaluation's weights (step {bestSoFar}): it was written without --keep-best");
        }
        else
        {
            if (options.EvaluateBaseline && Evaluate is not null)
            {
                baseline = EvaluateModel();
                Progress?.Report(new TrainingProgress("baseline", 0, totalSteps, double.NaN, 0, 0, baseline));
            }
            tuner.Prepare(model, SelectionBatches(train));
            // Random initialisations and choices agree with rank 0's, whatever each rank's generator did.
            if (distributed) Group.Broadcast(tuner.TrainableParameters().Select(t => (Tensor)t.Parameter).ToList());
        }

        var optimizer = NewOptimizer();
        if (resumeFrom is not null)
        {
            LoadCheckpoint(resumeFrom, optimizer);
            startStep = state.Step;
            baseline = state.Baseline;
        }

        string metricsLog = Path.Combine(options.OutputDirectory, "metrics.jsonl");
        // A fresh run in a used folder starts a fresh log; a resumed one continues it from the checkpoint's step.
        if (main && resumeFrom is null) File.Delete(metricsLog);
        else if (main) CheckpointFolder.TruncateLog(metricsLog, state.Step);
        var stopwatch = Stopwatch.StartNew();
        double wallBefore = state.WallSeconds;
        long tokensThisRun = 0;
        long gradOptimizerBytes = state.GradOptimizerBytes;
        IReadOnlyList<int[]>? epochBatches = null;
        int cachedEpoch = -1;

        var schedule = StageSchedule(state.StageStart);
        model.train();
        int? killAtStep = distributed ? TestKillStep() : null;
        for (int step = startStep; step < totalSteps && tracker.StoppedAtStep is null; step++)
        {
            if (killAtStep == step + 1) Process.GetCurrentProcess().Kill();   // test only: this rank dies, no MPI_Finalize
            var context = new TrainingStepContext(model, step, totalSteps);
            tuner.BeforeStep(context);
            double stepLoss = 0;
            long stepTokens = 0;
            for (int micro = 0; micro < options.GradientAccumulation; micro++)
            {
                // Batch k of the endless stream: a pure function of (seed, k), so --resume lands on the same batch.
                long k = (long)step * options.GradientAccumulation + micro;
                int epoch = (int)(k / batchesPerEpoch);
                if (epoch != cachedEpoch) { epochBatches = train.EpochBatches(epoch); cachedEpoch = epoch; }
                NativeCallGuard.SafePoint();
                using var scope = NewDisposeScope();
                int[] globalBatch = epochBatches![(int)(k % batchesPerEpoch)];
                var (rows, counted) = distributed ? RankShare(globalBatch) : (globalBatch, true);
                using TrainingBatch batch = train.Build(rows).To(model.Device);
                ModelOutput output = model.Forward(batch.InputIds, batch.AttentionMask, batch.TokenTypeIds);
                Tensor loss = Losses.Compute(task, output, batch.Labels, options.LabelSmoothing);
                if (distributed) loss = loss * ShareWeight(Losses.TermCount(task, batch.Labels), counted);
                Tensor total = loss;
                if (tuner.ExtraLoss(context) is { } extra) total = total + extra;
                (total / options.GradientAccumulation).backward();
                stepLoss += total.item<float>() / options.GradientAccumulation;
                if (counted) stepTokens += batch.TokenCount;
            }
            if (distributed) (stepLoss, stepTokens) = AverageAcrossRanks(stepLoss, stepTokens);
            tokensThisRun += stepTokens;
            state.Tokens += stepTokens;

            if (!double.IsFinite(stepLoss))
            {
                string kept = state.LastCheckpointStep is { } s
                    ? $"the last good checkpoint (step {s}) is kept in {Path.Combine(options.OutputDirectory, CheckpointFolderName)}"
                    : "no checkpoint had been written yet (use --save-every)";
                throw new TrainingDivergedException($"training loss became {(double.IsNaN(stepLoss) ? "NaN" : "infinite")} at step {step + 1}; {kept}; try a lower --lr");
            }

            if (options.MaxGradNorm > 0) optimizer.ClipGradNorm(options.MaxGradNorm);
            tuner.BeforeOptimizerStep(context);
            double lr = schedule.At(step - state.StageStart);
            optimizer.Step(lr);
            // Gradient + optimizer bytes at their peak: gradients still alive right after the step.
            gradOptimizerBytes = Math.Max(gradOptimizerBytes, optimizer.GradientBytes() + optimizer.StateBytes);
            optimizer.ZeroGrad();
            if (tuner.AfterOptimizerStep(context))
            {
                // The trainable set or shapes changed (pruning, rank dropping): surviving tensors keep their AdamW
                // moments, sliced to what they kept (ParameterLineage); new tensors start at zero. A method that
                // starts a new stage gets a fresh optimizer and schedule instead.
                bool restart = tuner.RestartsTraining(context);
                var rebuilt = NewOptimizer(restart ? null : optimizer);
                optimizer.Dispose();
                optimizer = rebuilt;
                if (restart)
                {
                    state.StageStart = step + 1;
                    schedule = StageSchedule(state.StageStart);
                }
                // A best taken before the change describes a model that no longer exists.
                tracker.Reset();
                best.Clear();
                state.BestMetrics = null;
                state.FirstCandidateStep = null;
            }

            state.Step = step + 1;
            state.Losses.Add((state.Step, stepLoss));
            double elapsed = stopwatch.Elapsed.TotalSeconds;
            double tokensPerSecond = elapsed > 0 ? tokensThisRun / elapsed : 0;
            if (main && (state.Step % options.LogEvery == 0 || state.Step == totalSteps || state.Step == 1))
                AppendJsonLine(metricsLog, new { step = state.Step, loss = stepLoss, learning_rate = lr, tokens_per_second = tokensPerSecond });
            Progress?.Report(new TrainingProgress("train", state.Step, totalSteps, stepLoss, lr, tokensPerSecond, StageStart: state.StageStart));

            if (options.EvalEvery > 0 && state.Step % options.EvalEvery == 0 && state.Step != totalSteps)
                Consider(RunEvaluation(state, metricsLog, totalSteps), copyIfBest: true);
            if (options.SaveEvery > 0 && state.Step % options.SaveEvery == 0)
            {
                state.WallSeconds = wallBefore + stopwatch.Elapsed.TotalSeconds;
                state.GradOptimizerBytes = gradOptimizerBytes;
                state.Baseline = baseline;
                state.Tracker = tracker.State;
                if (main) SaveCheckpoint(state, optimizer);
            }
        }

        optimizer.Dispose();
        model.GradientCheckpointing = false;
        bool bestKept = false;
        long snapshotBytes = 0;
        if (options.KeepBest)
        {
            // The state after the last step is a candidate too, unless it has just been evaluated (early stopping).
            bool lastEvaluated = state.Evals.Count > 0 && state.Evals[^1].Step == state.Step;
            if (!lastEvaluated && tuner.HasFinalStructure) Consider(RunEvaluation(state, metricsLog, totalSteps), copyIfBest: false);
            if (tracker.BestStep is int bestStep)
            {
                snapshotBytes = best.Bytes;
                if (bestStep != state.Step)
                {
                    best.RestoreInto(SnapshotTensors());
                    Log?.Invoke($"--keep-best: the weights of step {bestStep} ship ({mainMetric} {tracker.BestValue:0.####}; step {state.Step}: {state.Evals[^1].Metrics.GetValueOrDefault(mainMetric):0.####})");
                }
                bestKept = true;
            }
            else Log?.Invoke("warning: --keep-best: no evaluation after the method's last structural change; the last weights ship");
            best.Clear();
        }
        // Finish first (final pruning, merges): the final evaluation scores the model the method ships.
        tuner.Finish(model);
        Finished?.Invoke(model);
        var finalEval = Evaluate is null ? new Dictionary<string, double>() : RunEvaluation(state, metricsLog, totalSteps);
        double wall = wallBefore + stopwatch.Elapsed.TotalSeconds;
        var trainable = tuner.TrainableParameters().ToList();
        return new TrainingResult
        {
            Steps = state.Step,
            Tokens = state.Tokens,
            WallSeconds = wall,
            TrainLossFirst = state.Losses.Count > 0 ? state.Losses[0].Loss : double.NaN,
            TrainLossLast = state.Losses.Count > 0 ? state.Losses[^1].Loss : double.NaN,
            GradOptimizerBytes = gradOptimizerBytes,
            TrainableParameters = trainable.Sum(t => t.Parameter.numel()),
            TotalParameters = model.ParameterCount(),
            Eval = finalEval,
            BaselineEval = baseline,
            LossCurve = state.Losses,
            EvalCurve = state.Evals,
            Best = tracker.BestStep is int b
                ? new BestEvaluation
                {
                    Step = b, Metric = mainMetric, Value = tracker.BestValue, Metrics = state.BestMetrics ?? new Dictionary<string, double>(),
                    FirstCandidateStep = state.FirstCandidateStep ?? b, Kept = bestKept, SnapshotBytes = snapshotBytes,
                }
                : null,
            EarlyStopping = options.EarlyStoppingPatience is int patience
                ? new EarlyStoppingOutcome { Patience = patience, Triggered = tracker.StoppedAtStep is not null, Step = tracker.StoppedAtStep }
                : null,
        };

        // A candidate evaluation (the method's structure is final) updates the best and early stopping; a new best is copied under --keep-best.
        void Consider(IReadOnlyDictionary<string, double> metrics, bool copyIfBest)
        {
            if (!metrics.TryGetValue(mainMetric, out double value))
            {
                if (options.FollowsBestEvaluation) throw new InvalidOperationException($"the evaluation gave no {mainMetric}: " + options.BestEvaluationNeeds($"it (the task's main metric)"));
                return;
            }
            if (!tuner.HasFinalStructure) return;
            state.FirstCandidateStep ??= state.Step;
            switch (tracker.Observe(state.Step, value))
            {
                case EvaluationVerdict.Improved:
                    state.BestMetrics = metrics;
                    if (options.KeepBest && copyIfBest) best.Capture(SnapshotTensors());
                    break;
                case EvaluationVerdict.Stop:
                    Log?.Invoke($"early stopping after step {state.Step}: {mainMetric} has not improved for {options.EarlyStoppingPatience} evaluations (best {tracker.BestValue:0.####} at step {tracker.BestStep})");
                    break;
            }
        }

        // Rank r's rows of a global batch of n: [r·n/N, (r+1)·n/N). A rank whose share is empty (a last batch smaller
        // than N) still runs forward and backward on one row, weighted 0, so that every rank joins every collective.
        // Test only (the distributed tests' "a rank dies mid-run"): SPARSETUNE_TEST_KILL_RANK=r and
        // SPARSETUNE_TEST_KILL_AT_STEP=s make rank r kill itself (SIGKILL, as the OOM killer would) when step s begins.
        int? TestKillStep() =>
            int.TryParse(Environment.GetEnvironmentVariable("SPARSETUNE_TEST_KILL_RANK"), out int rank) && rank == Group.Rank
            && int.TryParse(Environment.GetEnvironmentVariable("SPARSETUNE_TEST_KILL_AT_STEP"), out int at) ? at : null;

        (int[] Rows, bool Counted) RankShare(int[] global)
        {
            int start = (int)((long)Group.Rank * global.Length / Group.Size), end = (int)((long)(Group.Rank + 1) * global.Length / Group.Size);
            return end > start ? (global[start..end], true) : ([global[0]], false);
        }

        // N·c_r / Σc: rank r's mean loss over its c_r loss terms (rows, or unmasked tokens) becomes its part of the
        // global batch's mean, scaled by N because the gradients are then averaged over the ranks.
        double ShareWeight(long terms, bool counted)
        {
            double[] counts = [counted ? terms : 0];
            Group.AllReduceSum(counts);
            return counts[0] > 0 ? Group.Size * (counted ? terms : 0) / counts[0] : 0;
        }

        // One scalar all-reduce (loss, tokens, which gradients exist) and one gradient all-reduce per optimizer step.
        (double Loss, long Tokens) AverageAcrossRanks(double loss, long tokens)
        {
            var parameters = tuner.TrainableParameters().Select(t => t.Parameter).ToList();
            using var scope = NewDisposeScope();
            double[] sums = new double[2 + parameters.Count];
            sums[0] = loss;
            sums[1] = tokens;
            for (int i = 0; i < parameters.Count; i++) sums[2 + i] = parameters[i].grad is null ? 0 : 1;
            Group.AllReduceSum(sums);
            // A gradient some rank has is averaged everywhere (zero where a rank has none); one no rank has stays absent.
            var gradients = new List<Tensor>();
            for (int i = 0; i < parameters.Count; i++)
            {
                if (sums[2 + i] == 0) continue;
                if (parameters[i].grad is null) parameters[i].grad = zeros_like(parameters[i]);
                gradients.Add(parameters[i].grad!);
            }
            Group.AllReduceMean(gradients);
            return (sums[0] / Group.Size, (long)sums[1]);
        }

        AdamW NewOptimizer(AdamW? inheritFrom = null) =>
            new(tuner.TrainableParameters(), new AdamWOptions(Epsilon: options.AdamEpsilon, WeightDecay: options.WeightDecay), TrainingOptions.IsNoDecay, inheritFrom);

        void SaveCheckpoint(RunState s, AdamW opt)
        {
            string final = Path.Combine(options.OutputDirectory, CheckpointFolderName);
            string temp = final + $".tmp-{Guid.NewGuid():N}";
            Directory.CreateDirectory(temp);
            using (var scope = NewDisposeScope())
            {
                SafeTensors.Save(Path.Combine(temp, "trainable.safetensors"), TrainedTensors(tuner.ModifiesBaseWeights));
                if (!best.IsEmpty) SafeTensors.Save(Path.Combine(temp, BestFileName), best.Tensors);
                SafeTensors.Save(Path.Combine(temp, "optimizer.safetensors"), opt.State());
                var extra = tuner.ExtraState().ToList();
                if (extra.Count > 0) SafeTensors.Save(Path.Combine(temp, "tuner.safetensors"), extra);
                SafeTensors.Save(Path.Combine(temp, "rng.safetensors"), [new("torch", torch.random.get_rng_state())]);
            }
            s.LastCheckpointStep = s.Step;
            AtomicFile.WriteAllText(Path.Combine(temp, "trainer_state.json"), JsonSerializer.Serialize(s.ToJson(tuner.Name), JsonOutput.Options));
            // Swap in the new folder: the old checkpoint stays whole until the new one is complete.
            string old = final + ".old";
            if (Directory.Exists(old)) Directory.Delete(old, true);
            if (Directory.Exists(final)) Directory.Move(final, old);
            Directory.Move(temp, final);
            if (Directory.Exists(old)) Directory.Delete(old, true);
        }

        RunState LoadCheckpoint(string directory, AdamW? opt)
        {
            string stateFile = Path.Combine(directory, "trainer_state.json");
            var loaded = RunState.FromJson(File.ReadAllText(stateFile), tuner.Name, directory);
            if (loaded.WorldSize != Group.Size)
                throw new InvalidDataException($"--resume: checkpoint {directory} was written by {loaded.WorldSize} process{(loaded.WorldSize == 1 ? "" : "es")}, this run has {Group.Size}: resume with the same number of ranks (mpirun -np {loaded.WorldSize}), since the global batch and the data each rank reads depend on it");
            if (opt is null)
            {
                // First pass (before the optimizer exists): tensors of model and tuner.
                var extraFile = Path.Combine(directory, "tuner.safetensors");
                if (File.Exists(extraFile))
                {
                    var extra = SafeTensors.Load(extraFile);
                    tuner.LoadExtraState(extra);
                    foreach (var t in extra.Values) t.Dispose();
                }
                var trained = SafeTensors.Load(Path.Combine(directory, "trainable.safetensors"));
                using (no_grad())
                {
                    foreach (var (name, target) in TrainedTensors(tuner.ModifiesBaseWeights))
                    {
                        if (!trained.TryGetValue(name, out var source))
                            throw new InvalidDataException($"--resume: checkpoint {directory} has no tensor {name}");
                        target.copy_(source);
                    }
                }
                foreach (var t in trained.Values) t.Dispose();
                string bestFile = Path.Combine(directory, BestFileName);
                if (options.KeepBest && File.Exists(bestFile)) best.Adopt(SafeTensors.Load(bestFile));
            }
            else
            {
                var optState = SafeTensors.Load(Path.Combine(directory, "optimizer.safetensors"));
                opt.LoadState(optState);
                foreach (var t in optState.Values) t.Dispose();
                var rng = SafeTensors.Load(Path.Combine(directory, "rng.safetensors"));
                torch.random.set_rng_state(rng["torch"]);
                rng["torch"].Dispose();
            }
            return loaded;
        }
    }

    /// <summary>PEFT's print_trainable_parameters line: trainable / all (model plus method tensors) / percent.</summary>
    public static string TrainableSummary(TransformerModel model, Tuner tuner)
    {
        var own = model.parameters().Select(p => p.Handle).ToHashSet();
        var trainable = tuner.TrainableParameters().ToList();
        long trainableCount = trainable.Sum(t => t.Parameter.numel());
        long all = model.ParameterCount() + trainable.Where(t => !own.Contains(t.Parameter.Handle)).Sum(t => t.Parameter.numel());
        return $"trainable params: {trainableCount:N0} || all params: {all:N0} || trainable%: {100.0 * trainableCount / Math.Max(1, all):0.0000}";
    }

    /// <summary>The checkpoint's copy of the best evaluation's tensors (--keep-best).</summary>
    const string BestFileName = "best.safetensors";

    /// <summary>
    /// What trains, named as in checkpoints: the trainable tensors, and with <paramref name="wholeModel"/> every model
    /// parameter ("model." + name). A checkpoint takes the whole model when the method changes base weights at all
    /// (<see cref="Tuner.ModifiesBaseWeights"/>: full fine-tuning, SIFT's merged deltas, pruning).
    /// </summary>
    IEnumerable<KeyValuePair<string, Tensor>> TrainedTensors(bool wholeModel)
    {
        var seen = new HashSet<string>();
        if (wholeModel)
            foreach (var (name, p) in model.named_parameters())
                if (seen.Add("model." + name)) yield return new("model." + name, p);
        foreach (var (name, p) in tuner.TrainableParameters())
            if (seen.Add(name) && !seen.Contains("model." + name)) yield return new(name, p);
    }

    /// <summary>
    /// What --keep-best copies: the tensors optimizer steps change — the trainable ones, plus the whole model only when
    /// steps write into base weights (<see cref="Tuner.StepsChangeBaseWeights"/>). The method's own state needs no copy:
    /// candidates come after its last structural change, when that state no longer changes.
    /// </summary>
    IEnumerable<KeyValuePair<string, Tensor>> SnapshotTensors() => TrainedTensors(tuner.StepsChangeBaseWeights);

    IEnumerable<Action> SelectionBatches(IBatchSource train)
    {
        foreach (var indices in train.EpochBatches(0))
        {
            yield return () =>
            {
                using var scope = NewDisposeScope();
                using TrainingBatch batch = train.Build(indices).To(model.Device);
                using ModelOutput output = model.Forward(batch.InputIds, batch.AttentionMask, batch.TokenTypeIds);
                Losses.Compute(task, output, batch.Labels, options.LabelSmoothing).backward();
            };
        }
    }

    /// <summary>Evaluate in eval mode (no dropout) without autograd, then back to training mode.</summary>
    IReadOnlyDictionary<string, double> EvaluateModel()
    {
        model.eval();
        try
        {
            using (no_grad()) return Evaluate!(model);
        }
        finally
        {
            model.train();
        }
    }

    IReadOnlyDictionary<string, double> RunEvaluation(RunState state, string metricsLog, int totalSteps)
    {
        var metrics = EvaluateModel();
        state.Evals.Add((state.Step, metrics));
        if (Group.IsMain) AppendJsonLine(metricsLog, new { step = state.Step, eval = metrics });
        Progress?.Report(new TrainingProgress("eval", state.Step, totalSteps, double.NaN, 0, 0, metrics));
        return metrics;
    }

    static void AppendJsonLine(string path, object value) =>
        File.AppendAllText(path, JsonSerializer.Serialize(value, JsonOutput.Options) + "\n");

    /// <summary>Loop counters that a checkpoint carries.</summary>
    sealed class RunState
    {
        public int Step;
        public int StageStart;   // first step of the current training stage (0 unless the method restarted training)
        public long Tokens;
        public double WallSeconds;
        public long GradOptimizerBytes;
        public int? LastCheckpointStep;
        public int WorldSize = 1;                                // data-parallel ranks that trained (a resume needs as many)
        public IReadOnlyDictionary<string, double>? Baseline;
        public EarlyStoppingState? Tracker;                      // best candidate so far and early stopping's count
        public IReadOnlyDictionary<string, double>? BestMetrics; // every metric of the best candidate
        public int? FirstCandidateStep;                          // first evaluation after the method's last structural change
        public List<(int Step, double Loss)> Losses = [];
        public List<(int Step, IReadOnlyDictionary<string, double> Metrics)> Evals = [];

        public object ToJson(string method) => new
        {
            method,
            step = Step,
            stage_start = StageStart,
            world_size = WorldSize,
            tokens = Tokens,
            wall_seconds = WallSeconds,
            grad_optimizer_bytes = GradOptimizerBytes,
            baseline = Baseline,
            losses = Losses.Select(l => new[] { l.Step, l.Loss }).ToList(),
            evals = Evals.Select(e => new { step = e.Step, metrics = e.Metrics }).ToList(),
            best = Tracker is not { } t ? null : new
            {
                step = t.BestStep,
                value = t.BestValue,
                since_best = t.EvaluationsSinceBest,
                stopped_at = t.StoppedAtStep,
                first_candidate_step = FirstCandidateStep,
                metrics = BestMetrics,
            },
        };

        public static RunState FromJson(string json, string method, string directory)
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            string saved = root.GetProperty("method").GetString() ?? "";
            if (saved != method)
                throw new InvalidDataException($"--resume: checkpoint {directory} was written by --method {saved}, not {method}");
            var state = new RunState
            {
                Step = root.GetProperty("step").GetInt32(),
                StageStart = root.TryGetProperty("stage_start", out var stage) ? stage.GetInt32() : 0,
                WorldSize = root.TryGetProperty("world_size", out var world) ? world.GetInt32() : 1,
                Tokens = root.GetProperty("tokens").GetInt64(),
                WallSeconds = root.GetProperty("wall_seconds").GetDouble(),
                GradOptimizerBytes = root.GetProperty("grad_optimizer_bytes").GetInt64(),
            };
            state.LastCheckpointStep = state.Step;
            if (root.GetProperty("baseline").ValueKind == JsonValueKind.Object)
                state.Baseline = root.GetProperty("baseline").Deserialize<Dictionary<string, double>>(JsonOutput.Options);
            foreach (var pair in root.GetProperty("losses").EnumerateArray())
                state.Losses.Add(((int)pair[0].GetDouble(), pair[1].GetDouble()));
            foreach (var e in root.GetProperty("evals").EnumerateArray())
                state.Evals.Add((e.GetProperty("step").GetInt32(), e.GetProperty("metrics").Deserialize<Dictionary<string, double>>(JsonOutput.Options)!));
            if (root.TryGetProperty("best", out var best) && best.ValueKind == JsonValueKind.Object)   // absent in checkpoints before early stopping
            {
                static int? Step(JsonElement e) => e.ValueKind == JsonValueKind.Number ? e.GetInt32() : null;
                state.Tracker = new EarlyStoppingState(Step(best.GetProperty("step")),
                    best.GetProperty("value") is { ValueKind: JsonValueKind.Number } v ? v.GetDouble() : double.NaN,
                    best.GetProperty("since_best").GetInt32(), Step(best.GetProperty("stopped_at")));
                state.FirstCandidateStep = Step(best.GetProperty("first_candidate_step"));
                if (best.GetProperty("metrics").ValueKind == JsonValueKind.Object)
                    state.BestMetrics = best.GetProperty("metrics").Deserialize<Dictionary<string, double>>(JsonOutput.Options);
            }
            return state;
        }
    }
}
