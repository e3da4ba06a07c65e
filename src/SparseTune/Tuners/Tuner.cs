using SparseTune.Models;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Tuners;

/// <summary>What a tuner sees at each hook: where training is and what the model is.</summary>
public sealed record TrainingStepContext(TransformerModel Model, int Step, int TotalSteps);

/// <summary>
/// A fine-tuning method. The trainer calls these hooks in this order:
/// <code>
///   Attach(model)                         once: freeze by structure, wrap linear layers
///   for each optimizer step:
///     BeforeStep(ctx)                     e.g. recompute masks for the sparsity schedule
///     for each micro-batch: forward → loss + ExtraLoss(ctx) → backward
///     [optimizer step on TrainableParameters()]
///     AfterOptimizerStep(ctx)             e.g. merge sparse values into W; returns true when the
///                                         set or shapes of trainable tensors changed (optimizer rebuilt)
///   Finish(model)                         once: final pruning / merges before the model is saved
///   SaveArtifacts(dir)                    adapter files, sparse deltas
/// </code>
/// Methods never copy the loop; they only implement these hooks.
/// </summary>
public abstract class Tuner : IDisposable
{
    /// <summary>The --method name.</summary>
    public abstract string Name { get; }

    /// <summary>Options as written to report.json.</summary>
    public abstract object Options { get; }

    public abstract void Attach(TransformerModel model);

    /// <summary>
    /// True when training changes the base model's own weights (full fine-tuning; SIFT merges its deltas
    /// into W): checkpoints then hold the whole model, else only the trainable tensors.
    /// </summary>
    public virtual bool ModifiesBaseWeights => false;

    /// <summary>The only tensors the optimizer gets, with names used for no-decay groups and checkpoints.</summary>
    public abstract IEnumerable<(string Name, Parameter Parameter)> TrainableParameters();

    /// <summary>
    /// Runs once before training (not on resume), for methods that choose what to train from early gradients
    /// (SIFT's index selection). Each item runs forward, loss and backward on one training batch, in order.
    /// Default: nothing.
    /// </summary>
    public virtual void Prepare(TransformerModel model, IEnumerable<Action> backwardOfBatch) { }

    public virtual void BeforeStep(TrainingStepContext context) { }

    /// <summary>Extra loss terms (e.g. an L1 penalty on masks); null when none.</summary>
    public virtual Tensor? ExtraLoss(TrainingStepContext context) => null;

    /// <summary>Returns true when the trainable set changed and the optimizer must be rebuilt.</summary>
    public virtual bool AfterOptimizerStep(TrainingStepContext context) => false;

    public virtual void Finish(TransformerModel model) { }

    /// <summary>Writes method-specific files (e.g. a PEFT adapter) into the output folder.</summary>
    public virtual void SaveArtifacts(TransformerModel model, string outputDirectory) { }

    /// <summary>Tuner state to checkpoint besides the trainable tensors (indices, masks); name → tensor.</summary>
    public virtual IEnumerable<KeyValuePair<string, Tensor>> ExtraState() => [];

    public virtual void LoadExtraState(IReadOnlyDictionary<string, Tensor> state) { }

    public virtual void Dispose() => GC.SuppressFinalize(this);

    /// <summary>Freezes every parameter of the model (methods then unfreeze or add what trains).</summary>
    protected static void FreezeAll(TransformerModel model)
    {
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    /// <summary>The model's own parameters under the given module prefixes (e.g. classification heads).</summary>
    protected static IEnumerable<(string Name, Parameter Parameter)> ParametersUnder(TransformerModel model, IEnumerable<string> prefixes)
    {
        var list = prefixes.ToList();
        foreach (var (name, p) in model.named_parameters())
            if (list.Any(h => name == h || name.StartsWith(h + ".", StringComparison.Ordinal)))
                yield return (name, p);
    }
}

/// <summary>Full fine-tuning: every parameter trains.</summary>
public sealed class FullFineTuner : Tuner
{
    TransformerModel? model;
    public override string Name => "full";
    public override object Options => new { };
    public override bool ModifiesBaseWeights => true;

    public override void Attach(TransformerModel model)
    {
        this.model = model;
        foreach (var p in model.parameters()) p.requires_grad = true;
    }

    public override IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() =>
        model?.named_parameters().Select(t => (t.name, t.parameter)) ?? throw new InvalidOperationException("Attach first");
}
