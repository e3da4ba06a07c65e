using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Training;

/// <summary>AdamW hyper-parameters; weight decay is decoupled (Loshchilov &amp; Hutter) and skipped for no-decay names.</summary>
public sealed record AdamWOptions(double Beta1 = 0.9, double Beta2 = 0.999, double Epsilon = 1e-8, double WeightDecay = 0.0);

/// <summary>
/// AdamW over an explicit list of named trainable tensors. Written here rather than using TorchSharp's
/// optimizer so that its state is plain named tensors: counted exactly for report.json, saved and restored
/// bit-exactly for --resume, and created only for what trains (a SIFT value vector, a LoRA factor).
/// Update, as torch.optim.AdamW: p ← p·(1 − lr·λ); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²;
/// p ← p − lr · (m / (1−β₁ᵗ)) / (√(v / (1−β₂ᵗ)) + ε).
/// </summary>
public sealed class AdamW : IDisposable
{
    sealed record Slot(string Name, Parameter Parameter, bool Decay, Tensor ExpAvg, Tensor ExpAvgSq);

    readonly List<Slot> slots = [];
    readonly AdamWOptions options;

    /// <summary>Optimizer steps taken (t in the bias corrections).</summary>
    public long StepCount { get; private set; }

    /// <param name="inheritFrom">
    /// An optimizer over an earlier version of these parameters (before structured pruning rebuilt some of them).
    /// Its step count carries over, and each parameter gets moments from it: a Parameter object it held keeps its
    /// moments (copied); one cut from such a parameter, possibly through several cuts, gets that parameter's
    /// moments cut the same way (<see cref="ParameterLineage"/>); anything else starts at zero. The earlier
    /// optimizer is only read: dispose it afterwards.
    /// </param>
    public AdamW(IEnumerable<(string Name, Parameter Parameter)> parameters, AdamWOptions options, Func<string, bool> isNoDecay,
        AdamW? inheritFrom = null)
    {
        this.options = options;
        var seen = new HashSet<IntPtr>();
        foreach (var (name, p) in parameters)
        {
            if (!p.requires_grad) throw new ArgumentException($"parameter {name} is frozen but was given to the optimizer");
            if (!seen.Add(p.Handle)) continue; // a tied tensor is one parameter
            var (expAvg, expAvgSq) = inheritFrom?.InheritedMoments(p) ?? (zeros_like(p), zeros_like(p));
            slots.Add(new Slot(name, p, !isNoDecay(name), expAvg.DetachFromDisposeScope(), expAvgSq.DetachFromDisposeScope()));
        }
        StepCount = inheritFrom?.StepCount ?? 0;
    }

    /// <summary>The moments (exp_avg, exp_avg_sq) this optimizer keeps for <paramref name="parameter"/> (the same object), if any.</summary>
    public (Tensor ExpAvg, Tensor ExpAvgSq)? MomentsOf(Parameter parameter)
    {
        foreach (var s in slots)
            if (ReferenceEquals(s.Parameter, parameter)) return (s.ExpAvg, s.ExpAvgSq);
        return null;
    }

    /// <summary>New moment tensors for <paramref name="parameter"/> derived from this optimizer's, or null.</summary>
    (Tensor ExpAvg, Tensor ExpAvgSq)? InheritedMoments(Parameter parameter)
    {
        var held = new HashSet<Parameter>(slots.Select(s => s.Parameter), ReferenceEqualityComparer.Instance);
        var found = ParameterLineage.FindAncestor(parameter, held.Contains);
        if (found is not { } lineage) return null;
        var (m, v) = MomentsOf(lineage.Ancestor)!.Value;
        using var _ = no_grad();
        Tensor expAvg = Follow(m, lineage.Cuts), expAvgSq = Follow(v, lineage.Cuts);
        if (!expAvg.shape.SequenceEqual(parameter.shape))
            throw new InvalidOperationException($"moments cut along the recorded lineage are [{string.Join(", ", expAvg.shape)}], the parameter is [{string.Join(", ", parameter.shape)}]");
        return (expAvg, expAvgSq);

        static Tensor Follow(Tensor moment, IReadOnlyList<ParameterOrigin> cuts)
        {
            Tensor current = moment.clone();
            foreach (ParameterOrigin cut in cuts)
            {
                Tensor next = cut.Apply(current);
                current.Dispose();
                current = next;
            }
            return current;
        }
    }

    public IReadOnlyList<(string Name, Parameter Parameter)> Parameters => slots.Select(s => (s.Name, s.Parameter)).ToList();

    /// <summary>Bytes held by the moment estimates.</summary>
    public long StateBytes => slots.Sum(s => 2 * s.ExpAvg.numel() * s.ExpAvg.ElementSize);

    /// <summary>Bytes held right now by the gradients of the optimised tensors.</summary>
    public long GradientBytes()
    {
        long total = 0;
        foreach (var s in slots)
        {
            using Tensor? g = s.Parameter.grad;
            if (g is not null) total += g.numel() * g.ElementSize;
        }
        return total;
    }

    public void Step(double learningRate)
    {
        StepCount++;
        double bias1 = 1 - Math.Pow(options.Beta1, StepCount);
        double bias2 = 1 - Math.Pow(options.Beta2, StepCount);
        double stepSize = learningRate / bias1;
        double bias2Sqrt = Math.Sqrt(bias2);
        using var _ = no_grad();
        foreach (var s in slots)
        {
            using Tensor? grad = s.Parameter.grad;
            if (grad is null) continue;
            using var scope = NewDisposeScope();
            if (s.Decay && options.WeightDecay != 0) s.Parameter.mul_(1 - learningRate * options.WeightDecay);
            s.ExpAvg.mul_(options.Beta1).add_(grad, alpha: 1 - options.Beta1);
            s.ExpAvgSq.mul_(options.Beta2).addcmul_(grad, grad, value: 1 - options.Beta2);
            Tensor denom = s.ExpAvgSq.sqrt().div_(bias2Sqrt).add_(options.Epsilon);
            s.Parameter.addcdiv_(s.ExpAvg, denom, value: -stepSize);
        }
    }

    /// <summary>Drops gradients (set to None, as zero_grad(set_to_none=True)), so frozen-after-step memory is freed.</summary>
    public void ZeroGrad()
    {
        foreach (var s in slots) s.Parameter.grad = null;
    }

    /// <summary>Clips the global gradient norm; returns the norm before clipping.</summary>
    public double ClipGradNorm(double maxNorm) =>
        nn.utils.clip_grad_norm_(slots.Select(s => s.Parameter), maxNorm);

    public IEnumerable<KeyValuePair<string, Tensor>> State()
    {
        foreach (var s in slots)
        {
            yield return new("exp_avg." + s.Name, s.ExpAvg);
            yield return new("exp_avg_sq." + s.Name, s.ExpAvgSq);
        }
        yield return new("step", tensor(StepCount));
    }

    public void LoadState(IReadOnlyDictionary<string, Tensor> state)
    {
        using var _ = no_grad();
        foreach (var s in slots)
        {
            if (!state.TryGetValue("exp_avg." + s.Name, out var m) || !state.TryGetValue("exp_avg_sq." + s.Name, out var v))
                throw new InvalidDataException($"optimizer state has no entry for {s.Name}");
            s.ExpAvg.copy_(m);
            s.ExpAvgSq.copy_(v);
        }
        StepCount = state["step"].item<long>();
    }

    public void Dispose()
    {
        foreach (var s in slots)
        {
            s.ExpAvg.Dispose();
            s.ExpAvgSq.Dispose();
        }
        slots.Clear();
    }
}
