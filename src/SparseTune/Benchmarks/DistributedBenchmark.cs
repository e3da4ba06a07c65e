using System.Diagnostics;
using SparseTune.Distributed;
using SparseTune.Models;
using static TorchSharp.torch;

namespace SparseTune.Benchmarks;

/// <summary>One method's data-parallel figures, on rank 0's clock (the JSON row of `sparsetune bench --distributed`).</summary>
public sealed record DistributedMeasurement
{
    public required string Method { get; init; }
    public Nn.Precision Precision { get; init; }
    /// <summary>Ranks that trained together.</summary>
    public int Ranks { get; init; }
    /// <summary>Values handed to the optimizer (after the method's last change of structure).</summary>
    public long TrainableParameters { get; init; }
    /// <summary>Every parameter of the model as built, before any pruning: what full fine-tuning trains.</summary>
    public long ModelParameters { get; init; }
    /// <summary>Bytes of trainable gradients all-reduced per optimizer step (float32), mean over the measured steps.</summary>
    public double GradientBytesPerStep { get; init; }
    /// <summary>
    /// Bytes of the scalar all-reduces per step (float64): each micro-batch's loss-share weight, the step's loss and
    /// token count, one flag per trainable tensor (which gradients exist), and a method's own sums.
    /// </summary>
    public double ScalarBytesPerStep { get; init; }
    /// <summary>
    /// Seconds per step spent inside all-reduce (gradients and scalars), mean over the measured steps. It includes
    /// waiting for the slowest rank to arrive, not only moving bytes.
    /// </summary>
    public double AllReduceSecondsPerStep { get; init; }
    /// <summary>Median step time with <see cref="Ranks"/> ranks, each on its own batch of the per-rank size.</summary>
    public double StepSeconds { get; init; }
    /// <summary>Median step time of rank 0 alone on the same per-rank batch, the other ranks asleep at a barrier.</summary>
    public double SingleProcessStepSeconds { get; init; }
    /// <summary><see cref="StepSeconds"/> / <see cref="SingleProcessStepSeconds"/>: 1 is free data parallelism (N times the rows per step in the same time).</summary>
    public double StepRatio => StepSeconds / SingleProcessStepSeconds;
    /// <summary><see cref="GradientBytesPerStep"/> relative to full fine-tuning's: 4 bytes per model parameter.</summary>
    public double GradientBytesRelativeToFull => GradientBytesPerStep / (4.0 * ModelParameters);
}

/// <summary>
/// What data parallelism costs each method: every rank builds the same bench model (random weights, one seed) and
/// tuner and trains it through the real <see cref="Training.Trainer"/> over the given process group, counting the
/// all-reduced bytes and the seconds spent in all-reduce per step; then rank 0 trains the same per-rank batch alone
/// while the others sleep, for the step time without communication.
/// </summary>
public static class DistributedBenchmark
{
    /// <summary>How often a rank waiting for rank 0's single-process run checks whether it is over.</summary>
    static readonly TimeSpan WaitPoll = TimeSpan.FromMilliseconds(20);

    /// <summary>Every rank calls this with the same arguments; rank 0's figures are returned on every rank.</summary>
    public static DistributedMeasurement Run(IProcessGroup group, ModelConfig config, ModelHead head, string method,
        int batch, int sequenceLength, int warmupSteps, int steps, Nn.Precision precision = Nn.Precision.Fp32, bool gradientCheckpointing = false)
    {
        if (group.Size < 2) throw new ArgumentException("bench --distributed needs at least 2 ranks");
        var meter = new MeteredProcessGroup(group);
        var traffic = new List<Traffic>();
        long modelParameters, trainable;
        List<(int StageStart, double Seconds)> together;
        {
            var built = MethodBenchmark.Build(config, head, method);
            using var model = built.Model;
            using var tuner = built.Tuner;
            modelParameters = model.ParameterCount();
            var data = MethodBenchmark.RandomData(config, built.Task, batch, sequenceLength, group.Size);
            (var result, together) = MethodBenchmark.TrainTimed(model, tuner, built.Task, data, batch, warmupSteps, steps, precision,
                gradientCheckpointing, meter, () => traffic.Add(meter.Take()));
            trainable = result.TrainableParameters;
        }
        // Step k's traffic is what was reduced since step k−1 ended; the warm-up steps (and the method's selection
        // before step 1) are left out, as in the step times.
        var measured = traffic.Skip(warmupSteps).ToList();

        double single = double.NaN;
        group.SleepingBarrier(WaitPoll);
        if (group.IsMain)
        {
            var built = MethodBenchmark.Build(config, head, method);
            using var model = built.Model;
            using var tuner = built.Tuner;
            var data = MethodBenchmark.RandomData(config, built.Task, batch, sequenceLength);
            var (_, alone) = MethodBenchmark.TrainTimed(model, tuner, built.Task, data, batch, warmupSteps, steps, precision, gradientCheckpointing);
            single = MethodBenchmark.Median(alone.Select(d => d.Seconds));
        }
        group.SleepingBarrier(WaitPoll);
        GC.Collect();
        GC.WaitForPendingFinalizers();

        return new DistributedMeasurement
        {
            Method = method,
            Precision = precision,
            Ranks = group.Size,
            TrainableParameters = trainable,
            ModelParameters = modelParameters,
            GradientBytesPerStep = measured.Average(t => (double)t.TensorBytes),
            ScalarBytesPerStep = measured.Average(t => (double)t.ScalarBytes),
            AllReduceSecondsPerStep = measured.Average(t => t.Seconds),
            StepSeconds = MethodBenchmark.Median(together.Select(d => d.Seconds)),
            SingleProcessStepSeconds = single,
        };
    }

    /// <summary>All-reduce traffic over an interval: float32 tensor bytes, float64 scalar bytes, seconds inside the calls.</summary>
    readonly record struct Traffic(long TensorBytes, long ScalarBytes, double Seconds);

    /// <summary>
    /// Passes every collective on to <paramref name="inner"/> and counts the all-reduce traffic, tensors (reduced as
    /// float32, as <see cref="MpiProcessGroup"/> does) apart from scalars.
    /// </summary>
    sealed class MeteredProcessGroup(IProcessGroup inner) : IProcessGroup
    {
        Traffic counted;

        public int Rank => inner.Rank;
        public int Size => inner.Size;

        /// <summary>The traffic since the last call.</summary>
        public Traffic Take()
        {
            var taken = counted;
            counted = default;
            return taken;
        }

        public void AllReduceMean(IReadOnlyList<Tensor> tensors)
        {
            var clock = Stopwatch.StartNew();
            inner.AllReduceMean(tensors);
            counted = counted with { TensorBytes = counted.TensorBytes + tensors.Sum(t => t.numel()) * sizeof(float), Seconds = counted.Seconds + clock.Elapsed.TotalSeconds };
        }

        public void AllReduceSum(double[] values)
        {
            var clock = Stopwatch.StartNew();
            inner.AllReduceSum(values);
            counted = counted with { ScalarBytes = counted.ScalarBytes + values.Length * sizeof(double), Seconds = counted.Seconds + clock.Elapsed.TotalSeconds };
        }

        public void Broadcast(IReadOnlyList<Tensor> tensors, int root = 0) => inner.Broadcast(tensors, root);
        public void Barrier() => inner.Barrier();
        public void SleepingBarrier(TimeSpan poll) => inner.SleepingBarrier(poll);
    }
}
