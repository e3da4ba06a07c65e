using System.Diagnostics;
using SparseTune.Distributed;
using SparseTune.Models;
using SparseTune.Training;
using SparseTune.Tuners;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Benchmarks;

/// <summary>One method's measured figures (the JSON row of `sparsetune bench`).</summary>
public sealed record MethodMeasurement
{
    public required string Method { get; init; }
    /// <summary>fp32 or bf16 (mixed precision) for training and inference alike.</summary>
    public Nn.Precision Precision { get; init; }
    public double StepSeconds { get; init; }
    /// <summary>Median step time of each training stage, in order (one entry unless the method restarts training).</summary>
    public double[] StageStepSeconds { get; init; } = [];
    public double TokensPerSecond { get; init; }
    public double Mfu { get; init; }
    public long ParamBytes { get; init; }
    public long GradOptimizerBytes { get; init; }
    public long PeakMemoryBytes { get; init; }
    public double InferenceSeconds { get; init; }
    /// <summary>(slowest − fastest) / median of the timed inference repeats: how far apart two equal shapes may land.</summary>
    public double InferenceSpread { get; init; }
    public long TrainableParameters { get; init; }
    public double FlopsPerStep { get; init; }
    /// <summary>The method's own figures (what it adds to report.json as method_report), null for most.</summary>
    public object? MethodReport { get; init; }
    /// <summary>Why there are no figures (the shape does not fit in memory, the run failed); null when measured.</summary>
    public string? Note { get; init; }

    /// <summary>
    /// Bytes the weights, gradients and AdamW moments need at least, before activations: float32 weights for every
    /// method, plus two moments and a gradient per trained value (every value for full fine-tuning, about 1% for
    /// the parameter-efficient methods).
    /// </summary>
    public static long MinimumBytes(ModelConfig config, string method)
    {
        long parameters = config.EstimatedParameters();
        return parameters * 4 + (method == "full" ? parameters * 12 : parameters * 12 / 100);
    }
}

/// <summary>
/// Random token batches of a fixed shape; labels fit the model's head. <paramref name="batch"/> rows come from each
/// <see cref="Build"/>, seeded by its first index. A global batch holds <paramref name="ranks"/> indices, so that under
/// data parallelism each rank's share is one index: <paramref name="batch"/> rows of its own per rank.
/// </summary>
public sealed class RandomBatches(int vocabSize, int batch, int sequenceLength, TaskKind task, int classes, int seed = 0, int ranks = 1) : IBatchSource
{
    public IReadOnlyList<int[]> EpochBatches(int epoch) => Enumerable.Range(0, 64).Select(i => Enumerable.Range(i * ranks, ranks).ToArray()).ToList();

    public TrainingBatch Build(int[] indices)
    {
        var generator = new TorchSharp.torch.Generator((ulong)(seed * 7919 + indices[0]));
        var ids = randint(0, vocabSize, [batch, sequenceLength], generator: generator);
        var mask = ones(batch, sequenceLength, dtype: ScalarType.Int64);
        Tensor labels = task switch
        {
            TaskKind.Classification => randint(0, classes, [batch], generator: generator),
            _ => ids.clone(),
        };
        generator.Dispose();
        return new TrainingBatch(ids, mask, null, labels);
    }
}

/// <summary>
/// Times the real training loop (<see cref="Trainer"/>) of one method on a model shape with random weights:
/// median step time after warm-up, exact parameter/gradient/optimizer bytes, and forward latency of the model
/// that method produces (merged / pruned). Run each method in its own process for an honest peak memory.
/// </summary>
public static class MethodBenchmark
{
    /// <param name="gemmGflops">The GEMM peak of <paramref name="precision"/>, MFU's denominator.</param>
    public static MethodMeasurement Run(ModelConfig config, ModelHead head, string method, IMethodOptions? options,
        int batch, int sequenceLength, int warmupSteps, int steps, double gemmGflops,
        Nn.Precision precision = Nn.Precision.Fp32, bool gradientCheckpointing = false, Device? device = null)
    {
        var built = Build(config, head, method, options, device);
        using var model = built.Model;
        using var tuner = built.Tuner;
        var task = built.Task;
        var data = RandomData(config, task, batch, sequenceLength);
        var (result, durations) = TrainTimed(model, tuner, task, data, batch, warmupSteps, steps, precision, gradientCheckpointing);
        double median = Median(durations.Select(d => d.Seconds));
        double[] stages = durations.GroupBy(d => d.StageStart).OrderBy(g => g.Key).Select(g => Median(g.Select(d => d.Seconds))).ToArray();
        double flops = TrainingFlops.PerStep(model, batch, sequenceLength);
        long paramBytes = model.parameters().Sum(p => p.numel() * p.ElementSize)
            + tuner.TrainableParameters().Where(t => !model.parameters().Any(p => p.Handle == t.Parameter.Handle)).Sum(t => t.Parameter.numel() * t.Parameter.ElementSize);

        // Inference runs on the plain model each method ships: LoRA merged, sparse updates already in W.
        object? methodReport = tuner.Report(model);
        tuner.MergeIntoModel(model);
        // The optimizer state and the training run's freed blocks go back to the system first, so that inference
        // runs in the same memory conditions for every method (full fine-tuning's process held gigabytes more).
        GC.Collect();
        GC.WaitForPendingFinalizers();
        Nn.NativeHeap.Trim();
        var (inference, spread) = InferenceSeconds(model, data, Math.Max(7, steps));
        return new MethodMeasurement
        {
            Method = method,
            Precision = precision,
            InferenceSpread = spread,
            StepSeconds = median,
            StageStepSeconds = stages,
            TokensPerSecond = batch * sequenceLength / median,
            Mfu = flops / median / (gemmGflops * 1e9),
            ParamBytes = paramBytes,
            GradOptimizerBytes = result.GradOptimizerBytes,
            PeakMemoryBytes = ProcessMemory.PeakResidentBytes(),
            InferenceSeconds = inference,
            TrainableParameters = result.TrainableParameters,
            FlopsPerStep = flops,
            MethodReport = methodReport,
        };
    }

    /// <summary>
    /// The model of a bench shape with random weights (seed 0, so every process builds the same one), on
    /// <paramref name="device"/>, and the method's tuner with its bench options (or <paramref name="options"/>).
    /// </summary>
    public static (TransformerModel Model, Tuner Tuner, TaskKind Task) Build(ModelConfig config, ModelHead head, string method,
        IMethodOptions? options = null, Device? device = null)
    {
        torch.random.manual_seed(0);
        var model = PretrainedModel.Create(config, head);
        if (device is not null) model.to(device);
        var task = head == ModelHead.SequenceClassification ? TaskKind.Classification : TaskKind.CausalLM;
        var tuner = MethodRegistry.CreateTuner(method, options ?? MethodRegistry.Get(method).BenchOptions);
        return (model, tuner, task);
    }

    /// <summary>Random batches of <paramref name="batch"/> × <paramref name="sequenceLength"/> tokens for the model's head (per rank, see <see cref="RandomBatches"/>).</summary>
    public static RandomBatches RandomData(ModelConfig config, TaskKind task, int batch, int sequenceLength, int ranks = 1) =>
        new(config.VocabSize, batch, sequenceLength, task, Math.Max(2, config.NumLabels), ranks: ranks);

    /// <summary>
    /// Runs the real training loop for <paramref name="warmupSteps"/> + <paramref name="steps"/> steps and returns the
    /// duration of each step after the warm-up (from the previous step's end to its own) with the step its training
    /// stage began at. <paramref name="stepEnded"/> runs at the end of every step, after its time is taken.
    /// </summary>
    public static (TrainingResult Result, List<(int StageStart, double Seconds)> Durations) TrainTimed(TransformerModel model, Tuner tuner,
        TaskKind task, IBatchSource data, int batch, int warmupSteps, int steps, Nn.Precision precision = Nn.Precision.Fp32,
        bool gradientCheckpointing = false, IProcessGroup? group = null, Action? stepEnded = null)
    {
        var stepEnds = new List<(int StageStart, double Seconds)>();
        var clock = Stopwatch.StartNew();
        string output = Directory.CreateTempSubdirectory("sparsetune-bench-").FullName;
        TrainingResult result;
        try
        {
            var trainer = new Trainer(model, tuner, task, new TrainingOptions
            {
                MaxSteps = warmupSteps + steps,
                BatchSize = batch,
                LearningRate = 1e-5,
                EvaluateBaseline = false,
                LogEvery = int.MaxValue,
                OutputDirectory = output,
                Precision = precision,
                GradientCheckpointing = gradientCheckpointing,
            })
            {
                Group = group ?? SingleProcess.Instance,
                Progress = new SynchronousProgress(p =>
                {
                    if (p.Phase != "train") return;
                    stepEnds.Add((p.StageStart, clock.Elapsed.TotalSeconds));
                    stepEnded?.Invoke();
                }),
            };
            result = trainer.Run(data);
        }
        finally { Directory.Delete(output, true); }
        // Step k's duration is the time from step k−1's end to its own; the warm-up steps are left out.
        var durations = stepEnds.Zip(stepEnds.Skip(1), (a, b) => (b.StageStart, Seconds: b.Seconds - a.Seconds)).Skip(Math.Max(0, warmupSteps - 1)).ToList();
        return (result, durations);
    }

    internal static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count == 0 ? double.NaN : sorted[sorted.Count / 2];
    }

    /// <summary>
    /// Median forward-only latency of one batch in eval mode after three untimed forwards (allocator and kernel
    /// warm-up), and the spread of the timed ones.
    /// </summary>
    static (double Median, double Spread) InferenceSeconds(TransformerModel model, IBatchSource data, int repeats)
    {
        model.eval();
        using var noGrad = no_grad();
        using var batch = data.Build([0]).To(model.Device);
        const int warmup = 3;
        var times = new List<double>();
        for (int i = 0; i < warmup + repeats; i++)
        {
            var watch = Stopwatch.StartNew();
            using (var output = model.Forward(batch.InputIds, batch.AttentionMask))
                _ = output.Logits.shape;   // a deferred LM head computes the logits when read
            if (i >= warmup) times.Add(watch.Elapsed.TotalSeconds);
        }
        times.Sort();
        double median = times[times.Count / 2];
        return (median, (times[^1] - times[0]) / median);
    }

    /// <summary>IProgress that calls back on the reporting thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    sealed class SynchronousProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
