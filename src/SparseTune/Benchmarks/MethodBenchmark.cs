using System.Diagnostics;
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
    public double StepSeconds { get; init; }
    /// <summary>Median step time of each training stage, in order (one entry unless the method restarts training).</summary>
    public double[] StageStepSeconds { get; init; } = [];
    public double TokensPerSecond { get; init; }
    public double Mfu { get; init; }
    public long ParamBytes { get; init; }
    public long GradOptimizerBytes { get; init; }
    public long PeakMemoryBytes { get; init; }
    public double InferenceSeconds { get; init; }
    public long TrainableParameters { get; init; }
    public double FlopsPerStep { get; init; }
    /// <summary>The method's own figures (what it adds to report.json as method_report), null for most.</summary>
    public object? MethodReport { get; init; }
}

/// <summary>Random token batches of a fixed shape; labels fit the model's head.</summary>
public sealed class RandomBatches(int vocabSize, int batch, int sequenceLength, TaskKind task, int classes, int seed = 0) : IBatchSource
{
    public IReadOnlyList<int[]> EpochBatches(int epoch) => Enumerable.Range(0, 64).Select(i => new[] { i }).ToList();

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
    public static MethodMeasurement Run(ModelConfig config, ModelHead head, string method, IMethodOptions? options,
        int batch, int sequenceLength, int warmupSteps, int steps, double gemmGflops)
    {
        torch.random.manual_seed(0);
        using var model = PretrainedModel.Create(config, head);
        var task = head == ModelHead.SequenceClassification ? TaskKind.Classification : TaskKind.CausalLM;
        using var tuner = MethodRegistry.CreateTuner(method, options ?? MethodRegistry.Get(method).BenchOptions);
        var data = new RandomBatches(config.VocabSize, batch, sequenceLength, task, Math.Max(2, config.NumLabels));
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
            })
            {
                Progress = new SynchronousProgress(p => { if (p.Phase == "train") stepEnds.Add((p.StageStart, clock.Elapsed.TotalSeconds)); }),
            };
            result = trainer.Run(data);
        }
        finally { Directory.Delete(output, true); }

        // Step k's duration is the time from step k−1's end to its own; the warm-up steps are left out.
        var durations = stepEnds.Zip(stepEnds.Skip(1), (a, b) => (b.StageStart, Seconds: b.Seconds - a.Seconds)).Skip(Math.Max(0, warmupSteps - 1)).ToList();
        double median = Median(durations.Select(d => d.Seconds));
        double[] stages = durations.GroupBy(d => d.StageStart).OrderBy(g => g.Key).Select(g => Median(g.Select(d => d.Seconds))).ToArray();
        double flops = TrainingFlops.PerStep(model, batch, sequenceLength);
        long paramBytes = model.parameters().Sum(p => p.numel() * p.ElementSize)
            + tuner.TrainableParameters().Where(t => !model.parameters().Any(p => p.Handle == t.Parameter.Handle)).Sum(t => t.Parameter.numel() * t.Parameter.ElementSize);

        // Inference runs on the plain model each method ships: LoRA merged, sparse updates already in W.
        object? methodReport = tuner.Report(model);
        tuner.MergeIntoModel(model);
        double inference = InferenceSeconds(model, data, Math.Max(3, steps));
        return new MethodMeasurement
        {
            Method = method,
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

    static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count == 0 ? double.NaN : sorted[sorted.Count / 2];
    }

    /// <summary>Median forward-only latency of one batch in eval mode.</summary>
    static double InferenceSeconds(TransformerModel model, IBatchSource data, int repeats)
    {
        model.eval();
        using var _ = no_grad();
        using var batch = data.Build([0]);
        var times = new List<double>();
        for (int i = 0; i <= repeats; i++)
        {
            var watch = Stopwatch.StartNew();
            using (var output = model.Forward(batch.InputIds, batch.AttentionMask)) { }
            if (i > 0) times.Add(watch.Elapsed.TotalSeconds);
        }
        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>IProgress that calls back on the reporting thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    sealed class SynchronousProgress(Action<TrainingProgress> report) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => report(value);
    }
}
