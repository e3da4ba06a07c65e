using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tuners.Masking;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Tuners.Pst;

/// <summary>One sparsified linear layer: its state-dict prefix, the layer and its adapter.</summary>
public sealed record PstModule(string Name, TunableLinear Layer, PstAdapter Adapter);

/// <summary>
/// PST (Li et al., IJCAI 2022): sparse-aware fine-tuning with a learned importance score that costs
/// (out + in)·(r' + 1) parameters per matrix instead of out·in, plus a LoRA-style weight update U·V.
/// <code>
///   Attach            freeze everything; wrap every targeted linear in a <see cref="PstAdapter"/>; the head trains
///   BeforeStep(t)     s ← cubic schedule at t (the mask is recomputed once for the step)
///   AfterOptimizerStep  s ← schedule at t + 1, as the scripts do after each step; masks become stale
///   Finish            W ← (W + β·U·V) ⊙ M at the final sparsity, exact zeros; adapters detached: a plain pruned model
///   SaveArtifacts     pst_sparse.safetensors (<see cref="SparseMatrixFile"/>, mode replace)
/// </code>
/// <see cref="ModifiesBaseWeights"/> is true: Finish rewrites W, so the job saves the full model; checkpoints then
/// hold the (still frozen) model next to the PST tensors. A resumed run needs no extra state: masks follow from
/// the trainable tensors and the step.
/// </summary>
/// <remarks>
/// PST: "Parameter-Efficient Sparsity for Large Language Models Fine-Tuning", Li et al., IJCAI 2022,
/// https://arxiv.org/abs/2205.11005; code https://github.com/alibaba/AliceMind/tree/main/S4/PST.
/// 
/// What the original code does (AliceMind @ a6d5afe, files under S4/PST/, read for this port, not copied):
///  • Importance uses the *updated* weight, not W: pst/sparse.py SparseLinear.forward builds
///    weight = W + weight_beta·U@V, then mask_scores = |weight| + mask_alpha1·A@B + mask_alpha2·(R[:,None] + C[None,:]).
///    The paper's Table 1 abbreviates this as |W| + AB + R + C. Because mask_scores is computed from `weight`
///    with autograd on, U and V also get a gradient through |W + βUV| (see PstLinearFunction).
///  • Scaling between the terms: three plain factors, weight_beta = mask_alpha1 = mask_alpha2 = 1.0 by default
///    (no 1/rank as in LoRA).
///  • Initialisation: U = randn(out, r), V = zeros(r, in), A = randn(out, r'), B = zeros(r', in), R = C = zeros;
///    W and b are frozen.
///  • Mask: SparseBinarizer prunes int(numel·s) entries with the lowest score (argsort), per layer, recomputed at
///    every forward; backward returns the mask's gradient to the score unchanged (straight-through).
///  • Schedule: pst/utils.py schedule_sparsity_ratio, cubic from initial to final sparsity, with warm-up
///    initial_warmup·total and cool-down final_warmup·total steps (ratios, compared unrounded). The scripts update
///    the sparsity after each optimizer step with the completed-step count.
///  • Defaults, identical in NLU/run_glue.py and NLG/src/gpt2_ft.py: sparsity 0.9, initial_sparsity 0.0,
///    weight_rank 8, weight_beta 1.0, mask_rank 8, mask_alpha1 1.0, mask_alpha2 1.0, initial_warmup 0.1,
///    final_warmup 0.3 (NLU/README: BERT lr 3e-5, RoBERTa 5e-5, 20 epochs; NLG/README: GPT-2 M lr 1e-4, 5 epochs).
///  • Pruned modules: NLU converts every nn.Linear under model.bert.encoder / model.roberta.encoder (query, key,
///    value, attention.output.dense, intermediate.dense, output.dense; not the pooler or classifier); NLG every
///    nn.Linear under transformer.h of its GPT-2, where q, k and v are separate nn.Linear (c_attn_q/k/v), c_proj,
///    mlp.c_fc, mlp.c_proj.
///  • Export: save_sparse_model writes (W + βUV)⊙M into each weight and drops the PST tensors.
/// 
/// Where SparseTune differs, and why:
///  • The classification head (and BERT's pooler) trains. Both scripts hand the optimizer only parameters whose name
///    contains mask_scores / weight_U / weight_V, so a freshly initialised classifier would stay random.
///  • GPT-2's c_attn here is one fused (3C, C) layer; it gets three factor sets (q, k, v: each its own U, V, A, B,
///    R, C, named c_attn.q.weight_U …) and a mask per block, so each projection has the original's own update,
///    importance and per-layer sparsity.
///  • The mask is cached for one optimizer step instead of recomputed per forward (same values: S only changes
///    at optimizer steps); ties are broken deterministically (TopKMask).
///  • The paper's per-task hyper-parameter tables were not available here: the values above are the scripts'
///    defaults. The code's top-k is per layer, so no global (cross-layer) variant is implemented.
///  • Trainable count with r = r' = 8 on BERT-base's encoder: (m + n)·17 per matrix = 2,820,096, 3.3% of the
///    84.9M weights a movement-pruning score matrix would need. The paper's Table 1 gives 0.01–0.02× and its
///    abstract "1.5% trainable parameters" for BERT; how that was counted (ranks, base) is not in the scripts.
/// </remarks>
public sealed class PstTuner : Tuner
{
    readonly PstOptions options;
    readonly List<PstModule> modules = [];
    readonly Dictionary<string, Tensor> keptIndices = [];     // after Finish: flat kept indices per weight name
    List<string> trainedModules = [];
    TransformerModel? model;
    CubicSparsitySchedule? schedule;
    double sparsity;
    bool finished;

    public PstTuner(PstOptions options)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems), nameof(options));
        this.options = options;
        sparsity = options.InitialSparsity;
    }

    public override string Name => "pst";
    public override PstOptions Options => options;
    public override bool ModifiesBaseWeights => true;

    /// <summary>W changes only in <see cref="Finish"/>; steps train the PST tensors.</summary>
    public override bool StepsChangeBaseWeights => false;

    /// <summary>Once the schedule has reached the final sparsity (the cool-down), the mask follows from the tensors alone and Finish prunes at it.</summary>
    public override bool HasFinalStructure => sparsity == options.FinalSparsity;

    /// <summary>The sparsified layers in model order.</summary>
    public IReadOnlyList<PstModule> Modules => modules;

    /// <summary>The sparsity forward passes use now.</summary>
    public double CurrentSparsity => sparsity;

    /// <summary>True once <see cref="Finish"/> has pruned the model and detached the adapters.</summary>
    public bool Finished => finished;

    TransformerModel Model => model ?? throw new InvalidOperationException("PstTuner: Attach first");

    public override void Attach(TransformerModel model)
    {
        if (this.model is not null) throw new InvalidOperationException("PstTuner is already attached to a model");
        var targets = ModuleSelection.Select(model, options.TargetModules);
        var occupied = targets.Where(t => t.Layer.Adapter is not null).Select(t => $"{t.Name} ({t.Layer.Adapter!.GetType().Name})").ToList();
        if (occupied.Count > 0) throw new InvalidOperationException($"PST cannot wrap layers that already carry an adapter: {string.Join(", ", occupied)}");
        var trained = ResolveTrainedModules(model).ToList();

        FreezeAll(model);
        foreach (var (name, layer) in targets)
        {
            var adapter = new PstAdapter(layer, options, BlocksOf(model, name, layer));
            layer.Adapter = adapter;
            modules.Add(new PstModule(name, layer, adapter));
        }
        trainedModules = trained;
        foreach (var (_, p) in ParametersUnder(model, trainedModules)) p.requires_grad = true;
        this.model = model;
    }

    /// <summary>GPT-2's c_attn stacks q, k and v rows; the original has them as three layers, each with its own PST tensors and mask.</summary>
    static IReadOnlyList<string>? BlocksOf(TransformerModel model, string name, TunableLinear layer) =>
        model.Config is Gpt2Config && name.EndsWith(".c_attn", StringComparison.Ordinal) && layer.OutFeatures % 3 == 0 ? ["q", "k", "v"] : null;

    /// <summary>
    /// The PST tensors (&lt;module&gt;.weight_U, .weight_V, .mask_scores_A/B/R/C) and the densely trained modules. After
    /// <see cref="Finish"/> the PST tensors are still listed (for the trainable-parameter count) until Dispose.
    /// </summary>
    public override IEnumerable<(string Name, Parameter Parameter)> TrainableParameters()
    {
        var model = Model;
        foreach (var m in modules)
            foreach (var (name, p) in m.Adapter.TrainableParameters())
                yield return ($"{m.Name}.{name}", p);
        foreach (var item in ParametersUnder(model, trainedModules))
            yield return item;
    }

    public override void BeforeStep(TrainingStepContext context) => SetSparsity(ScheduleFor(context.TotalSteps).At(context.Step));

    public override bool AfterOptimizerStep(TrainingStepContext context)
    {
        // The parameters moved: every mask is stale. The scripts then set s for the next step (completed steps = t + 1),
        // so an evaluation after the last step already sees the final sparsity.
        foreach (var m in modules) m.Adapter.InvalidateMask();
        SetSparsity(ScheduleFor(context.TotalSteps).At(context.Step + 1));
        return false;
    }

    /// <summary>Sets the sparsity of every layer (masks are recomputed at their next forward).</summary>
    public void SetSparsity(double value)
    {
        sparsity = value;
        foreach (var m in modules) m.Adapter.Sparsity = value;
    }

    CubicSparsitySchedule ScheduleFor(int totalSteps) =>
        schedule is { } s && s.TotalSteps == totalSteps ? s : schedule = options.Schedule(totalSteps);

    /// <summary>
    /// Prunes for good at the final sparsity: W ← (W + β·U·V) ⊙ M, pruned entries exact zeros, and detaches the
    /// adapters, leaving a plain model whose state dict is a Hugging Face checkpoint. Runs once.
    /// </summary>
    public override void Finish(TransformerModel model)
    {
        if (finished) return;
        foreach (var m in modules)
        {
            keptIndices[m.Name + ".weight"] = m.Adapter.MergeAndPrune(m.Layer, options.FinalSparsity).DetachFromDisposeScope();
            if (ReferenceEquals(m.Layer.Adapter, m.Adapter)) m.Layer.Adapter = null;
        }
        sparsity = options.FinalSparsity;
        finished = true;
    }

    /// <summary>The compact pruned model: the kept entries of every pruned matrix and the densely trained modules.</summary>
    public const string SparseWeightsFileName = "pst_sparse.safetensors";

    /// <summary>
    /// Writes pst_sparse.safetensors (<see cref="SparseMatrixFile"/>, mode replace): a weight delta would be dense
    /// here (every kept entry moved by U·V, every pruned one by −W), so the file holds the pruned matrices themselves.
    /// </summary>
    public override IReadOnlyDictionary<string, string> SaveArtifacts(TransformerModel model, string outputDirectory)
    {
        if (!finished) throw new InvalidOperationException("PstTuner: Finish prunes the model; call it before SaveArtifacts");
        Directory.CreateDirectory(outputDirectory);
        using var scope = NewDisposeScope();
        var entries = modules.Select(m =>
        {
            Tensor indices = keptIndices[m.Name + ".weight"];
            return new SparseMatrixFile.Entry(m.Name + ".weight", indices, m.Layer.weight.detach().reshape(-1).index_select(0, indices), m.Layer.weight.shape);
        }).ToList();
        var dense = ParametersUnder(model, trainedModules).Select(d => new KeyValuePair<string, Tensor>(d.Name, d.Parameter.detach())).ToList();
        string path = Path.Combine(outputDirectory, SparseWeightsFileName);
        SparseMatrixFile.Save(path, SparseMatrixMode.Replace, Name, entries, dense, MethodArtifacts.HeadMetadata(model),
            new Dictionary<string, string> { ["sparsity"] = options.FinalSparsity.ToString("R", System.Globalization.CultureInfo.InvariantCulture) });
        return new Dictionary<string, string> { ["pst_sparse"] = path };
    }

    /// <summary>Finish already wrote (W + β·U·V) ⊙ M into W and detached the adapters.</summary>
    public override void MergeIntoModel(TransformerModel model)
    {
        if (!finished) throw new InvalidOperationException("PstTuner: Finish prunes the model; call it before MergeIntoModel");
    }

    /// <summary>PST tensors, densely trained tensors, and the share of a full out×in score matrix per targeted weight.</summary>
    public string Summary()
    {
        long pst = modules.Sum(m => m.Adapter.TrainableParameters().Sum(p => p.Parameter.numel()));
        long head = ParametersUnder(Model, trainedModules).Sum(p => p.Parameter.numel());
        long scoreMatrices = modules.Sum(m => m.Layer.weight.numel());
        return $"PST params: {pst:N0} ({100.0 * pst / Math.Max(1, scoreMatrices):0.00}% of full score matrices) + trained modules {head:N0} || all params: {Model.ParameterCount():N0}";
    }

    public override void Dispose()
    {
        foreach (var m in modules)
        {
            if (ReferenceEquals(m.Layer.Adapter, m.Adapter)) m.Layer.Adapter = null;
            m.Adapter.Dispose();
        }
        modules.Clear();
        foreach (var t in keptIndices.Values) t.Dispose();
        keptIndices.Clear();
        base.Dispose();
    }
}
