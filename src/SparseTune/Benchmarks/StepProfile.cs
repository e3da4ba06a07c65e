using System.Diagnostics;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Training;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Benchmarks;

/// <summary>One operation of a training step: its forward and backward time at the step's shapes and how often a step runs it.</summary>
/// <param name="Counted">False for an alternative shown for comparison (what the step used to run), left out of the sum.</param>
public sealed record ProfiledOp(string Name, int PerStep, double ForwardSeconds, double BackwardSeconds, double Flops, bool Counted = true)
{
    public double StepSeconds => PerStep * (ForwardSeconds + BackwardSeconds);
    public double Gflops => Flops > 0 ? Flops / (ForwardSeconds + BackwardSeconds) / 1e9 : 0;
}

/// <summary>
/// Where a full fine-tuning step of a GPT-2 shape goes (<c>bench profile</c>): every operation of the step timed on
/// its own at the step's shapes (forward, then backward with a random upstream gradient; median of a few runs after a
/// warm-up), times how often one step runs it. TorchSharp exposes no libtorch profiler, so this times the pieces
/// instead of tracing the step; their sum comes close to the measured step (the table says how close), and each
/// piece's GFLOP/s against the GEMM peak shows which are compute-bound and which are memory-bound.
/// </summary>
public static class StepProfile
{
    public static IReadOnlyList<ProfiledOp> Run(Gpt2Config config, int batch, int sequenceLength, int repeats = 3, IProgress<string>? progress = null)
    {
        long B = batch, T = sequenceLength, N = B * T, C = config.NEmbd, I = config.IntermediateSize, V = config.VocabSize;
        long heads = config.NHead, hs = C / heads;
        int L = config.NLayer;
        var ops = new List<ProfiledOp>();
        void Time(string name, int perStep, double flops, Func<Tensor[], Tensor> op, long[][] shapes, bool counted = true)
        {
            progress?.Report(name);
            var (fwd, bwd) = Measure(op, shapes, repeats);
            ops.Add(new ProfiledOp(name, perStep, fwd, bwd, flops, counted));
        }
        double Linear(long inF, long outF) => 6.0 * N * inF * outF;   // forward 2·N·in·out, backward twice that
        Tensor LinearOp(Tensor[] t) => F.linear(t[0], t[1], t[2]);

        Time("embedding lookup (wte + wpe) + dropout", 1, 0, t =>
            F.dropout(t[0].index_select(0, Ids(B, T, V).view(-1)).view(B, T, C) + t[1].narrow(0, 0, T), config.EmbdPdrop, true), [[V, C], [config.NPositions, C]]);
        Time("LayerNorm", 2 * L + 1, 0, t => F.layer_norm(t[0], [C], t[1], t[2], config.LayerNormEpsilon), [[B, T, C], [C], [C]]);
        Time("c_attn linear (C → 3C)", L, Linear(C, 3 * C), LinearOp, [[B, T, C], [3 * C, C], [3 * C]]);
        double attentionFlops = 4.0 * B * heads * T * T * hs * 3;   // q kᵀ and p v, forward and backward
        Time("attention, blocked with dropout (Nn/Attention)", L, attentionFlops + 2.0 * B * heads * T * T * hs,
            t => Attention.Compute(t[0], t[1], t[2], null, causal: true, dropout: config.AttnPdrop), [[B, heads, T, hs], [B, heads, T, hs], [B, heads, T, hs]]);
        Time("  of which: drawing the keep mask (bernoulli_)", L, 0,
            t => DropoutAttentionFunction.DrawKeepMask(B, heads, T, T, config.AttnPdrop, CPU).any().to_type(ScalarType.Float32) * t[0].sum(), [[1]], counted: false);
        Time("  before: libtorch SDPA with dropout (unfused)", L, attentionFlops,
            t => F.scaled_dot_product_attention(t[0], t[1], t[2], p: config.AttnPdrop, is_casual: true), [[B, heads, T, hs], [B, heads, T, hs], [B, heads, T, hs]], counted: false);
        Time("  without dropout: libtorch SDPA (fused)", L, attentionFlops,
            t => F.scaled_dot_product_attention(t[0], t[1], t[2], is_casual: true), [[B, heads, T, hs], [B, heads, T, hs], [B, heads, T, hs]], counted: false);
        Time("heads transpose + reshape (copy)", L, 0, t => t[0].transpose(1, 2).reshape(B, T, C), [[B, heads, T, hs]]);
        Time("attn c_proj linear (C → C)", L, Linear(C, C), LinearOp, [[B, T, C], [C, C], [C]]);
        Time("residual dropout + add", 2 * L, 0, t => t[0] + F.dropout(t[1], config.ResidPdrop, true), [[B, T, C], [B, T, C]]);
        Time("mlp c_fc linear (C → 4C)", L, Linear(C, I), LinearOp, [[B, T, C], [I, C], [I]]);
        Time("GELU (tanh)", L, 0, t => Activations.Apply(config.ActivationFunction, t[0]), [[B, T, I]]);
        Time("mlp c_proj linear (4C → C)", L, Linear(I, C), LinearOp, [[B, T, I], [C, I], [C]]);
        Tensor labels = Ids(B, T, V);
        Time("LM head + cross-entropy, blocked (Nn/LinearCrossEntropy)", 1, 6.0 * N * C * V,
            t => Losses.NextTokenLoss(t[0], new LanguageModelProjection(t[1], null, null), labels), [[B, T, C], [V, C]]);
        Time("  before: logits (B·T × vocab) + cross_entropy", 1, 6.0 * N * C * V,
            t => Losses.NextTokenLoss(F.linear(t[0], t[1]), labels), [[B, T, C], [V, C]], counted: false);
        ops.AddRange(OptimizerOps(config, repeats, progress));
        labels.Dispose();
        return ops;
    }

    /// <summary>Gradient clipping and the AdamW update over every parameter of the shape (one tensor each, as the model has them).</summary>
    static IEnumerable<ProfiledOp> OptimizerOps(Gpt2Config config, int repeats, IProgress<string>? progress)
    {
        progress?.Report("gradient clipping and AdamW");
        using var scope = NewDisposeScope();
        using var model = PretrainedModel.Create(config, ModelHead.CausalLM);
        foreach (var p in model.parameters()) p.grad = randn_like(p).mul_(1e-3);
        using var optimizer = new AdamW(model.named_parameters().Select(p => (p.name, p.parameter)), new AdamWOptions(WeightDecay: 0.01), _ => false);
        double clip = Median(repeats, () => optimizer.ClipGradNorm(1.0));
        double step = Median(repeats, () => optimizer.Step(1e-5));
        return [new("gradient clipping (global norm)", 1, clip, 0, 0), new("AdamW update", 1, step, 0, 0)];
    }

    /// <summary>Median forward and backward seconds of <paramref name="op"/> over leaves of <paramref name="shapes"/> (all requiring grad).</summary>
    static (double Forward, double Backward) Measure(Func<Tensor[], Tensor> op, long[][] shapes, int repeats)
    {
        using var scope = NewDisposeScope();
        Tensor[] leaves = shapes.Select(s => (randn(s) * 0.02).requires_grad_(true)).ToArray();
        var forward = new List<double>();
        var backward = new List<double>();
        for (int r = 0; r <= repeats; r++)   // the first run warms up
        {
            using var run = NewDisposeScope();
            foreach (var leaf in leaves) leaf.grad = null;
            var watch = Stopwatch.StartNew();
            Tensor output = op(leaves);
            double f = watch.Elapsed.TotalSeconds;
            Tensor upstream = output.numel() == 1 ? ones_like(output) : randn_like(output);
            watch.Restart();
            output.backward([upstream]);
            double b = watch.Elapsed.TotalSeconds;
            if (r > 0) { forward.Add(f); backward.Add(b); }
        }
        foreach (var leaf in leaves) leaf.grad = null;
        return (MethodBenchmark.Median(forward), MethodBenchmark.Median(backward));
    }

    static double Median(int repeats, Action action)
    {
        action();
        var times = new List<double>();
        for (int r = 0; r < repeats; r++)
        {
            var watch = Stopwatch.StartNew();
            action();
            times.Add(watch.Elapsed.TotalSeconds);
        }
        return MethodBenchmark.Median(times);
    }

    static Tensor Ids(long B, long T, long V) => randint(0, V, [B, T], dtype: ScalarType.Int64);
}
