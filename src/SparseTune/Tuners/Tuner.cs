using SparseTune.Distributed;
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
///   Prepare(model, batches)               once, not on resume: e.g. SIFT's random index choice, or arming its
///                                         gradient selection (which then runs in the first training batches)
///   for each optimizer step:
///     BeforeStep(ctx)                     e.g. recompute masks for the sparsity schedule
///     for each micro-batch: forward → loss + ExtraLoss(ctx) → backward
///     [gradient clipping]
///     BeforeOptimizerStep(ctx)            e.g. read the step's gradients (Light-PEFT's rank scores)
///     [optimizer step on TrainableParameters()]
///     AfterOptimizerStep(ctx)             e.g. merge sparse values into W; returns true when the
///                                         set or shapes of trainable tensors changed (optimizer rebuilt)
///   Finish(model)                         once: final pruning / merges; the final evaluation scores the model after it
///   SaveArtifacts(model, dir)             adapter files, sparse files; returns what it wrote
/// </code>
/// Methods never copy the loop; they only implement these hooks. A method is declared by a
/// <see cref="MethodDescriptor"/> in its own folder, which builds its tuner.
/// </summary>
public abstract class Tuner : IDisposable
{
    /// <summary>The --method name.</summary>
    public abstract string Name { get; }

    /// <summary>Options as written to report.json.</summary>
    public abstract object Options { get; }

    /// <summary>The options every method shares (modules trained in full, the base model's path).</summary>
    public TunerContext Context { get; internal set; } = TunerContext.Default;

    /// <summary>
    /// The data-parallel processes training together, set by the trainer before <see cref="Attach"/>. A method that
    /// decides something from what one rank alone sees (its own batches' activations or dense gradients) must make that
    /// global through it before deciding, so that every rank decides alike; what it decides from trainable tensors or
    /// their (already averaged) gradients needs nothing.
    /// </summary>
    public IProcessGroup Group { get; internal set; } = SingleProcess.Instance;

    public abstract void Attach(TransformerModel model);

    /// <summary>
    /// True when training changes the base model's own weights (full fine-tuning; SIFT merges its deltas
    /// into W; pruning methods): checkpoints then hold the whole model, else only the trainable tensors, and the
    /// run saves the whole model.
    /// </summary>
    public virtual bool ModifiesBaseWeights => false;

    /// <summary>
    /// True when optimizer steps write into the base model's own weights (full fine-tuning; SIFT merges its values into W
    /// after every step), so a copy of the trained state (--keep-best) must hold the whole model. False where W changes
    /// only at a structural change or in <see cref="Finish"/> (PST, DSEE, Light-PEFT): then the trainable tensors suffice.
    /// Default: <see cref="ModifiesBaseWeights"/>.
    /// </summary>
    public virtual bool StepsChangeBaseWeights => ModifiesBaseWeights;

    /// <summary>
    /// True when no structural change of the method lies ahead — no pruning, no step of a mask or sparsity schedule, no
    /// choice of what trains — so that the model evaluated now is the one <see cref="Finish"/> would ship from the same
    /// trainable tensors, and the method's own state (<see cref="ExtraState"/>) no longer changes. Only evaluations made
    /// while this holds are candidates for --keep-best and count for early stopping: a copy of the tensors taken
    /// before a structural change could not be restored after it. Asked after each evaluation. Default true (the
    /// structure never changes).
    /// </summary>
    public virtual bool HasFinalStructure => true;

    /// <summary>The only tensors the optimizer gets, with names used for no-decay groups and checkpoints.</summary>
    public abstract IEnumerable<(string Name, Parameter Parameter)> TrainableParameters();

    /// <summary>
    /// Runs once before training (not on resume), for methods that choose what to train before the first step. Each
    /// item runs forward, loss and backward on one training batch, in order; a batch used here is trained on again
    /// in the first steps (SIFT, which must not reuse its selection batch, selects inside the first steps instead).
    /// Default: nothing.
    /// </summary>
    public virtual void Prepare(TransformerModel model, IEnumerable<Action> backwardOfBatch) { }

    public virtual void BeforeStep(TrainingStepContext context) { }

    /// <summary>
    /// Optimizer steps the method trains beyond the run the user planned (--epochs or --max-steps), asked once before
    /// the first step: DSEE's re-tuning phase after pruning (--retune-epochs). Default 0.
    /// </summary>
    public virtual int AdditionalSteps(int plannedSteps, int stepsPerEpoch) => 0;

    /// <summary>Extra loss terms (e.g. an L1 penalty on masks); null when none.</summary>
    public virtual Tensor? ExtraLoss(TrainingStepContext context) => null;

    /// <summary>
    /// Called once per optimizer step after every micro-batch's backward and after gradient clipping, right before the
    /// optimizer step: the trainable tensors' .grad holds the (accumulated, clipped) gradient the optimizer is about to
    /// apply. For methods that score from gradients (Light-PEFT's first-order rank importance); the gradients are
    /// cleared before <see cref="AfterOptimizerStep"/>. Must not change gradients or parameters. Default: nothing.
    /// </summary>
    public virtual void BeforeOptimizerStep(TrainingStepContext context) { }

    /// <summary>Returns true when the trainable set changed and the optimizer must be rebuilt.</summary>
    public virtual bool AfterOptimizerStep(TrainingStepContext context) => false;

    /// <summary>
    /// Asked when <see cref="AfterOptimizerStep"/> returned true. True starts a new training stage on the changed model
    /// (Light-PEFT's fine-tuning after pruning): the rebuilt optimizer starts fresh (no moments, step 0) and the
    /// learning-rate schedule runs again, warm-up included, over the remaining steps. Default false: the surviving
    /// tensors keep their moments and the schedule continues.
    /// </summary>
    public virtual bool RestartsTraining(TrainingStepContext context) => false;

    public virtual void Finish(TransformerModel model) { }

    /// <summary>
    /// Writes the method's own files (e.g. a PEFT adapter, a sparse-matrix file) into the output folder and returns
    /// what it wrote: a short name (report.json's outputs key) → path. The run adds the model folder itself when
    /// <see cref="ModifiesBaseWeights"/>.
    /// </summary>
    public virtual IReadOnlyDictionary<string, string> SaveArtifacts(TransformerModel model, string outputDirectory) =>
        new Dictionary<string, string>();

    /// <summary>
    /// The method's own figures for report.json (its <c>method_report</c> key), asked after <see cref="Finish"/>:
    /// e.g. what was pruned and what it saves. Null: nothing beyond the common fields. Serialised as it is (snake_case
    /// property names are the method's choice), so keep it a record or dictionary of plain values.
    /// </summary>
    public virtual object? Report(TransformerModel model) => null;

    /// <summary>
    /// Folds whatever the method adds into the model's own weights and removes its adapters, leaving the plain
    /// model the method ships (LoRA merges; sparse updates are already in W). Called after <see cref="Finish"/>.
    /// </summary>
    public virtual void MergeIntoModel(TransformerModel model)
    {
        foreach (var (_, layer) in model.NamedLinears())
        {
            if (layer.Adapter is null) continue;
            throw new InvalidOperationException($"{Name}: {layer.Adapter.GetType().Name} is still attached; the method must merge it");
        }
    }

    /// <summary>Tuner state to checkpoint besides the trainable tensors (indices, masks); name → tensor.</summary>
    public virtual IEnumerable<KeyValuePair<string, Tensor>> ExtraState() => [];

    public virtual void LoadExtraState(IReadOnlyDictionary<string, Tensor> state) { }

    public virtual void Dispose() => GC.SuppressFinalize(this);

    /// <summary>Freezes every parameter of the model (methods then unfreeze or add what trains).</summary>
    protected static void FreezeAll(TransformerModel model)
    {
        foreach (var p in model.parameters()) p.requires_grad = false;
    }

    /// <summary>Full names of the modules trained in full (<see cref="TunerContext.TrainedModules"/>, resolved against the model).</summary>
    protected IReadOnlyList<string> ResolveTrainedModules(TransformerModel model) =>
        ModuleSelection.ResolveTrainedModules(model, Context.TrainedModules, FreezesPretrainedHeadParts);

    /// <summary>
    /// True when the method's original leaves a pretrained BERT pooler frozen (SIFT's GLUE scripts train only the
    /// classifier besides the sparse values): by default the pooler then trains only when the checkpoint lacked it.
    /// </summary>
    protected virtual bool FreezesPretrainedHeadParts => false;

    /// <summary>The model's own parameters under the given module prefixes (e.g. classification heads).</summary>
    protected static IEnumerable<(string Name, Parameter Parameter)> ParametersUnder(TransformerModel model, IEnumerable<string> prefixes)
    {
        var list = prefixes.ToList();
        foreach (var (name, p) in model.named_parameters())
            if (list.Any(h => name == h || name.StartsWith(h + ".", StringComparison.Ordinal)))
                yield return (name, p);
    }
}
