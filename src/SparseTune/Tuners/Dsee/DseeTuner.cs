using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tuners.Masking;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Tuners.Dsee;

/// <summary>One adapted linear layer: its state-dict prefix, the layer and its adapter.</summary>
public sealed record DseeModule(string Name, TunableLinear Layer, DseeAdapter Adapter);

/// <summary>
/// DSEE (Chen et al., ACL 2023): a dually sparse update on the attention query and value of every layer,
/// ΔW = (α/r)·(B·A + S⊙Ω), then a sparse final model: tune → prune once → re-tune the same tensors.
/// <code>
///   Attach              freeze everything; a <see cref="DseeAdapter"/> on q and v (GPT-2: the q and v blocks of
///                       c_attn); the task head trains
///   Prepare             Ω per matrix: top-N |S| of the GreBsmo-style decomposition of W (or |W|, or random)
///   AfterOptimizerStep  once, after ⌊PruneAt·T⌉ steps: unstructured (W masked, exact zeros) or heads (removed
///                       physically, the adapters follow); training then continues with A, B, S and the head
///   Finish              pruning modes: W ← W⊙M + ΔW, adapters detached: a plain pruned model (model/)
///   SaveArtifacts       dsee_update.safetensors (<see cref="DseeUpdate"/>): base + this file = the tuned model
/// </code>
/// <see cref="ModifiesBaseWeights"/> is true when pruning (checkpoints then hold the whole, masked model; a resumed
/// head-pruned run removes the recorded heads again before loading it). The support, the pruning flag and the
/// removed heads are checkpointed as tuner state.
/// </summary>
/// <remarks>
/// DSEE: "DSEE: Dually Sparsity-embedded Efficient Tuning of Pre-trained Language Models", Chen et al., ACL 2023,
/// https://arxiv.org/abs/2111.00160; code https://github.com/VITA-Group/DSEE (a fork of Transformers 4.11, BERT,
/// RoBERTa and DeBERTa only). What the original does is summarised in METHODS.md ("DSEE").
///
/// Differences from the original:
///  • One run with one optimizer and one learning-rate schedule: the prune step is a share of the steps
///    (<see cref="DseeOptions.PruneAt"/>, a third as the RTE scripts' 5 + 10 epochs). The original re-tunes in a
///    second script (run_glue_prune_with_WAB.py) with a fresh AdamW and a fresh linear decay from the full learning
///    rate, and keeps the best checkpoint by eval accuracy (load_best_model_at_end); here the last ships unless
///    --keep-best (then the best evaluation after the pruning step: <see cref="HasFinalStructure"/>).
///  • GPT-2 is our extension (the original's GPT-2 part was never released): c_attn is fused, so the adapter
///    updates its query and value row blocks, each with its own A, B, S and Ω, exactly as separate q and v layers
///    would; in unstructured pruning c_attn's key block joins pool 1 and its q and v blocks pool 2. LLaMA-family
///    models (q_proj, v_proj; FFN gate/up/down in pool 1) are our extension too.
///  • Head pruning under grouped-query attention removes whole key/value groups: the share of heads is rounded to
///    whole groups (at least one group when the share rounds to at least one head, never every group); a group's
///    score is its query heads' Σ|ΔW_q rows| plus its shared key/value head's Σ|ΔW_v rows| once.
///  • Heads removed per layer = the share of the layer's heads, rounded half away from zero (3 of 12 by default,
///    as the scripts' fixed 3; 1 of 4 on the test models).
///  • Global pruning ranks a pool with a stable tie rule (<see cref="TopKMask"/>): exactly ⌊ratio·n⌋ entries per
///    pool become zero. The original thresholds a sorted score, where ties at the threshold are unspecified.
///  • The decomposition's random start comes from a generator of its own (<see cref="DseeOptions.SupportSeed"/>),
///    so choosing Ω does not move the training seed's random stream; the original draws from the global one.
///  • S's path in the forward pass is a gather + index_add over the N support entries, not a dense masked matrix
///    (same function, memory independent of the matrix size).
///  • The shipped model/ has the update merged (a plain Hugging Face checkpoint); the compact form with the update
///    beside the pruned weights is dsee_update.safetensors. The original saves the model with its LoRA and sparse
///    tensors in the state dict.
///  • The task head trains through the shared modules-trained-in-full option: for BERT that is the classifier
///    and the pooler (2,352 more values on the test model, 590,592 on BERT-base). The original freezes every
///    parameter under bert./roberta. except its LoRA tensors, so its pooler stays frozen; pass
///    --modules-to-save classifier to match.
///  • Ω has exactly N entries (<see cref="GreBsmo.Support"/>); the original's kthvalue threshold with ≥ takes more
///    on ties, and every entry when the decomposition's S is zero (its fit reaches full rank on matrices up to
///    about 500 wide: the test models, the demo). Here the entries S lacks are the largest |W| among its zeros. Its S is an nn.Linear under a pruning mask (dense storage, N values trained); here S is N values.
///  • Decomposition, magnitude and random supports come from the same seeded generator; the original's random
///    ablation ("rp") ranks randn scores, here Ω is the first N of a random permutation (same distribution).
///  • Unstructured pruning masks W in place at the prune step; the original's second script
///    (run_glue_prune_with_WAB.py) applies torch.nn.utils.prune global L1 masks after loading the phase-1 folder
///    (same zeros, same kept update). Its pool 1 is every module whose name contains key, dense or in_proj, which
///    also takes in BERT's pooler.dense (RoBERTa's classifier.dense); here pool 1 is the blocks' key,
///    attention-output and FFN matrices only, the head being trained in full.
///  • A resumed run restores Ω, the pruning flag and the removed heads from the checkpoint (the original re-runs
///    phase 2 from the phase-1 folder).
/// </remarks>
public sealed class DseeTuner : Tuner
{
    readonly DseeOptions options;
    readonly List<DseeModule> modules = [];
    readonly Dictionary<int, int[]> removedHeads = [];            // layer → ORIGINAL head indices this run removed
    readonly Dictionary<string, Tensor> prunedIndices = [];       // after Finish: weight name → its zeros, packed bits
    List<string> trainedModules = [];
    TransformerModel? model;
    bool pruned;
    bool finished;
    int retuneSteps;                 // --retune-epochs in steps (0: prune at the --prune-at share of one run)
    double denseFlops;               // forward FLOPs per token of the blocks as loaded (InferenceFlops)
    double supportSeconds;           // time to choose Ω (the decomposition)
    DseeReport? report;

    public DseeTuner(DseeOptions options)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems), nameof(options));
        this.options = options;
    }

    public override string Name => "dsee";
    public override DseeOptions Options => options;

    /// <summary>Pruning changes W (exact zeros, or fewer heads); the dually sparse update alone does not.</summary>
    public override bool ModifiesBaseWeights => options.Prune != DseePruning.None;

    /// <summary>W changes only at the pruning step; steps train A, B, S and the head.</summary>
    public override bool StepsChangeBaseWeights => false;

    /// <summary>After the one pruning step (from the start with --prune none).</summary>
    public override bool HasFinalStructure => options.Prune == DseePruning.None || pruned;

    public IReadOnlyList<DseeModule> Modules => modules;

    /// <summary>True once the one pruning step has run.</summary>
    public bool Pruned => pruned;

    /// <summary>Layer → original indices of the heads removed by this run.</summary>
    public IReadOnlyDictionary<int, int[]> RemovedHeads => removedHeads;

    TransformerModel Model => model ?? throw new InvalidOperationException("DseeTuner: Attach first");

    public override void Attach(TransformerModel model)
    {
        if (this.model is not null) throw new InvalidOperationException("DseeTuner is already attached to a model");
        var targets = new List<(NamedLinear Linear, List<(QkvPart, long, long)> Blocks)>();
        foreach (TransformerLayerView view in model.Layers)
        {
            AttentionView attention = view.Attention;
            if (attention.FusedQkv is { } fused)
            {
                long width = fused.Layer.OutFeatures / 3;                 // c_attn rows: [q | k | v]
                targets.Add((fused, [(QkvPart.Query, 0, width), (QkvPart.Value, 2 * width, width)]));
            }
            else
            {
                targets.Add((attention.Query!, [(QkvPart.Query, 0, attention.Query!.Layer.OutFeatures)]));
                targets.Add((attention.Value!, [(QkvPart.Value, 0, attention.Value!.Layer.OutFeatures)]));
            }
        }
        var occupied = targets.Where(t => t.Linear.Layer.Adapter is not null).Select(t => $"{t.Linear.Name} ({t.Linear.Layer.Adapter!.GetType().Name})").ToList();
        if (occupied.Count > 0) throw new InvalidOperationException($"DSEE cannot wrap layers that already carry an adapter: {string.Join(", ", occupied)}");
        var trained = ResolveTrainedModules(model).ToList();

        FreezeAll(model);
        foreach (var (linear, blocks) in targets)
        {
            var adapter = new DseeAdapter(linear.Layer, blocks, options.Rank, options.Alpha, options.SparseEntries);
            linear.Layer.Adapter = adapter;
            modules.Add(new DseeModule(linear.Name, linear.Layer, adapter));
        }
        trainedModules = trained;
        foreach (var (_, p) in ParametersUnder(model, trainedModules)) p.requires_grad = true;
        denseFlops = InferenceFlops.PerToken(model, skipZeros: false);
        this.model = model;
    }

    /// <summary>--retune-epochs: the re-tuning phase runs after the planned steps.</summary>
    public override int AdditionalSteps(int plannedSteps, int stepsPerEpoch)
    {
        retuneSteps = options.Prune == DseePruning.None ? 0 : options.RetuneEpochs * stepsPerEpoch;
        return retuneSteps;
    }

    /// <summary>Chooses Ω of every block (not on resume: the support is tuner state).</summary>
    public override void Prepare(TransformerModel model, IEnumerable<Action> backwardOfBatch)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        ChooseSupports();
        supportSeconds = clock.Elapsed.TotalSeconds;
    }

    /// <summary>Ω of every block from the pretrained W, by <see cref="DseeOptions.Support"/>; one seeded generator in model order.</summary>
    public void ChooseSupports()
    {
        using var generator = new Generator((ulong)options.SupportSeed);
        foreach (var m in modules)
        {
            foreach (var block in m.Adapter.Blocks)
            {
                using var scope = NewDisposeScope();
                Tensor w = m.Layer.weight.detach().narrow(0, block.RowStart, block.Rows);
                Tensor support = options.Support switch
                {
                    DseeSupport.Decomposition => GreBsmo.Support(GreBsmo.Decompose(w, options.DecompositionRounds, options.DecompositionThreshold, generator).Sparse, options.SparseEntries, fallback: w),
                    DseeSupport.Magnitude => GreBsmo.Support(w, options.SparseEntries),
                    _ => randperm(w.numel(), generator: generator).narrow(0, 0, Math.Min(options.SparseEntries, w.numel())),
                };
                block.SetSupport(support.data<long>().ToArray());
            }
            NativeHeap.Trim();
        }
    }

    public override IEnumerable<(string Name, Parameter Parameter)> TrainableParameters()
    {
        var model = Model;
        foreach (var m in modules)
            foreach (var (name, p) in m.Adapter.TrainableParameters())
                yield return ($"{m.Name}.{name}", p);
        foreach (var item in ParametersUnder(model, trainedModules))
            yield return item;
    }

    /// <summary>
    /// Prunes once: after ⌊PruneAt·T⌉ steps, or with --retune-epochs after the planned steps. Head pruning changes
    /// shapes, so the optimizer is rebuilt; a separate re-tuning phase restarts it (<see cref="RestartsTraining"/>).
    /// </summary>
    public override bool AfterOptimizerStep(TrainingStepContext context)
    {
        int pruneStep = retuneSteps > 0 ? context.TotalSteps - retuneSteps : options.PruneStep(context.TotalSteps);
        if (pruned || options.Prune == DseePruning.None || context.Step + 1 < pruneStep) return false;
        if (options.Prune == DseePruning.Unstructured)
        {
            PruneUnstructured();
            return retuneSteps > 0;
        }
        PruneHeads();
        return true;
    }

    /// <summary>With --retune-epochs the re-tuning is a new stage: fresh AdamW, fresh schedule (the original's second script).</summary>
    public override bool RestartsTraining(TrainingStepContext context) => retuneSteps > 0;

    /// <summary>
    /// Global magnitude pruning in two pools, each to exactly ⌊ratio·n⌋ zeros: pool 1 = key, attention-output and FFN
    /// weights ranked by |W|; pool 2 = query and value weights ranked by |ΔW| (or |W + ΔW|). Only W is masked, in
    /// place (frozen, so its zeros stay); the update stays beside it.
    /// </summary>
    public void PruneUnstructured()
    {
        if (pruned) throw new InvalidOperationException("DSEE prunes once");
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (backbone, queryValue) = Pools();
        MaskPool(backbone.Select(w => (w, w.abs())).ToList(), options.BackboneSparsity);
        MaskPool(queryValue.Select(p => (p.Weight, options.QueryValueScore == DseeUpdateScore.Update ? p.Delta.abs() : (p.Weight + p.Delta).abs())).ToList(),
            options.QueryValueSparsity);
        pruned = true;
    }

    /// <summary>
    /// The two pools of unstructured pruning, as views of W: pool 1 the key, attention-output and FFN weights (GPT-2:
    /// c_attn's key block); pool 2 the query and value weights (blocks) with their current ΔW. Call in a dispose scope.
    /// </summary>
    (List<Tensor> Backbone, List<(Tensor Weight, Tensor Delta)> QueryValue) Pools()
    {
        var backbone = new List<Tensor>();
        var queryValue = new List<(Tensor Weight, Tensor Delta)>();
        foreach (TransformerLayerView view in Model.Layers)
        {
            AttentionView attention = view.Attention;
            foreach (QkvPart part in new[] { QkvPart.Query, QkvPart.Value })
            {
                var (layer, block) = BlockOf(attention, part);
                queryValue.Add((layer.weight.narrow(0, block.RowStart, block.Rows), block.Delta(options.Scaling)));
            }
            Tensor key = attention.FusedQkv is { } fused
                ? fused.Layer.weight.narrow(0, fused.Layer.OutFeatures / 3, fused.Layer.OutFeatures / 3)
                : attention.Key!.Layer.weight;
            backbone.AddRange(new[] { key, attention.Output.Layer.weight }.Concat(view.FeedForward.Linears.Select(l => (Tensor)l.Layer.weight)));
        }
        return (backbone, queryValue);
    }

    /// <summary>One global top-k over the pool's scores, split back into per-matrix masks; W[¬keep] ← +0.</summary>
    static void MaskPool(List<(Tensor Weight, Tensor Score)> pool, double sparsity)
    {
        if (pool.Count == 0) return;
        Tensor keep = TopKMask.Keep(cat(pool.Select(p => p.Score.reshape(-1)).ToList(), 0), sparsity);
        long offset = 0;
        foreach (var (weight, _) in pool)
        {
            MaskedWeights.ZeroPruned(weight, keep.narrow(0, offset, weight.numel()).view(weight.shape));
            offset += weight.numel();
        }
    }

    /// <summary>
    /// Per layer, removes the heads (for grouped-query attention: whole key/value groups) with the smallest
    /// Σ|ΔW_q rows of the head| + Σ|ΔW_v rows of the head|, physically (<see cref="TransformerModel.PruneHeads"/>);
    /// the adapters drop their B rows and S entries there. Ties: the lower head goes first.
    /// </summary>
    public void PruneHeads()
    {
        if (pruned) throw new InvalidOperationException("DSEE prunes once");
        var model = Model;
        foreach (TransformerLayerView view in model.Layers)
        {
            AttentionView attention = view.Attention;
            int groupSize = attention.GroupSize, groups = attention.NumKeyValueHeads;
            int heads = (int)Math.Round(options.HeadShare * attention.NumHeads, MidpointRounding.AwayFromZero);
            int removeGroups = Math.Min(groups - 1, (heads + groupSize - 1) / groupSize);
            if (removeGroups <= 0) continue;
            double[] queryRows = RowScores(attention, QkvPart.Query), valueRows = RowScores(attention, QkvPart.Value);
            var (_, queryBlock) = BlockOf(attention, QkvPart.Query);
            var (_, valueBlock) = BlockOf(attention, QkvPart.Value);
            double[] score = new double[groups];
            for (int g = 0; g < groups; g++)
            {
                for (int h = g * groupSize; h < (g + 1) * groupSize; h++)
                    score[g] += attention.HeadRows(QkvPart.Query, h).Sum(r => queryRows[r - queryBlock.RowStart]);
                score[g] += attention.HeadRows(QkvPart.Value, g * groupSize).Sum(r => valueRows[r - valueBlock.RowStart]);
            }
            int[] remove = Enumerable.Range(0, groups).OrderBy(g => score[g]).ThenBy(g => g).Take(removeGroups)
                .SelectMany(g => Enumerable.Range(g * groupSize, groupSize)).Order().ToArray();
            removedHeads[view.Index] = remove.Select(h => attention.PresentHeads[h]).Order().ToArray();
            model.PruneHeads(view.Index, remove);
        }
        pruned = true;
    }

    /// <summary>Σ_j |ΔW[i, j]| for each row i of the part's block.</summary>
    double[] RowScores(AttentionView attention, QkvPart part)
    {
        using var scope = NewDisposeScope();
        var (_, block) = BlockOf(attention, part);
        return block.Delta(options.Scaling).abs().sum(1).to_type(ScalarType.Float64).data<double>().ToArray();
    }

    (TunableLinear Layer, DseeBlock Block) BlockOf(AttentionView attention, QkvPart part)
    {
        TunableLinear layer = attention.ProjectionOf(part).Layer;
        var adapter = modules.First(m => ReferenceEquals(m.Layer, layer)).Adapter;
        return (layer, adapter.Blocks.First(b => b.Part == part));
    }

    /// <summary>
    /// Pruning modes: remembers where W is zero (unstructured), then folds ΔW into W and detaches the adapters,
    /// leaving the plain pruned model that model/ ships. No pruning: nothing (<see cref="MergeIntoModel"/> merges).
    /// </summary>
    public override void Finish(TransformerModel model)
    {
        if (finished) return;
        report ??= MakeReport();
        if (options.Prune == DseePruning.None) return;
        if (pruned && options.Prune == DseePruning.Unstructured) CapturePrunedIndices();
        MergeAndDetach();
        finished = true;
    }

    void CapturePrunedIndices()
    {
        using var _ = no_grad();
        foreach (TransformerLayerView view in Model.Layers)
        {
            foreach (NamedLinear linear in view.Attention.Linears.Concat(view.FeedForward.Linears))
            {
                using var scope = NewDisposeScope();
                prunedIndices[linear.Name + ".weight"] = DseeUpdate.PackZeros(linear.Layer.weight).DetachFromDisposeScope();
            }
        }
    }

    void MergeAndDetach()
    {
        foreach (var m in modules)
        {
            m.Adapter.Merge(m.Layer);
            if (ReferenceEquals(m.Layer.Adapter, m.Adapter)) m.Layer.Adapter = null;
        }
    }

    /// <summary>
    /// The figures report.json carries (measured before the update is merged): the final sparsity of each pool, the
    /// heads removed, and the blocks' forward FLOPs per token relative to the dense model as loaded — with the update
    /// kept beside the sparse W (the compact form: the low-rank path costs r·(in + out), S its N entries), and as the
    /// merged model/ ships (the dense update fills the query/value zeros, so only pool 1's zeros still save).
    /// </summary>
    DseeReport MakeReport()
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var (backbone, queryValue) = Pools();
        double sparseW = InferenceFlops.PerToken(Model, skipZeros: true);
        double updateFlops = modules.SelectMany(m => m.Adapter.Blocks.Select(b => 2.0 * (options.Rank * (m.Layer.InFeatures + b.Rows) + b.Support.Count))).Sum();
        // Merged: the query/value blocks become dense again (B·A is dense), pool 1 keeps its zeros.
        double mergedFlops = sparseW + queryValue.Sum(p => 2.0 * ZeroCount(p.Weight));
        bool unstructured = options.Prune == DseePruning.Unstructured;
        return new DseeReport
        {
            Prune = options.Prune.ToString().ToLowerInvariant(),
            Pruned = pruned,
            BackboneSparsity = unstructured ? ZeroShare(backbone) : null,
            QueryValueSparsity = unstructured ? ZeroShare(queryValue.Select(p => p.Weight).ToList()) : null,
            HeadsRemoved = removedHeads.OrderBy(p => p.Key).ToDictionary(p => p.Key.ToString(System.Globalization.CultureInfo.InvariantCulture), p => p.Value),
            UpdateParameters = modules.Sum(m => m.Adapter.TrainableParameters().Sum(t => t.Parameter.numel())),
            InferenceFlopsRelativeUpdateSeparate = (sparseW + updateFlops) / denseFlops,
            InferenceFlopsRelativeMerged = mergedFlops / denseFlops,
            SupportSeconds = supportSeconds,
            RetuneSteps = retuneSteps,
        };

        static long ZeroCount(Tensor w) => w.numel() - w.count_nonzero().item<long>();
        static double ZeroShare(IReadOnlyList<Tensor> weights) =>
            weights.Sum(w => w.numel()) is var total && total > 0 ? (double)weights.Sum(ZeroCount) / total : 0;
    }

    public override object? Report(TransformerModel model) => report ??= MakeReport();

    /// <summary>Folds ΔW into W and detaches the adapters (already done by <see cref="Finish"/> when pruning).</summary>
    public override void MergeIntoModel(TransformerModel model) => MergeAndDetach();

    /// <summary>Writes dsee_update.safetensors: base + this file reproduces the tuned model (see <see cref="DseeUpdate"/>).</summary>
    public override IReadOnlyDictionary<string, string> SaveArtifacts(TransformerModel model, string outputDirectory)
    {
        if (pruned && options.Prune == DseePruning.Unstructured && prunedIndices.Count == 0)
        {
            if (modules.Any(m => m.Adapter.Merged)) throw new InvalidOperationException("DseeTuner: the update was merged before its pruned entries were recorded; call Finish first");
            CapturePrunedIndices();
        }
        Directory.CreateDirectory(outputDirectory);
        using var scope = NewDisposeScope();
        var blocks = modules.SelectMany(m => m.Adapter.Blocks.Select(b => new DseeUpdate.Block(
            m.Name + ".weight", b.Part, b.RowStart, b.Rows, b.A, b.B, tensor(b.Support.ToArray()), b.Values))).ToList();
        var dense = ParametersUnder(model, trainedModules).Select(d => new KeyValuePair<string, Tensor>(d.Name, d.Parameter.detach())).ToList();
        string path = Path.Combine(outputDirectory, DseeUpdate.FileName);
        DseeUpdate.Save(path, options.Scaling, options.Prune, blocks, prunedIndices, removedHeads, dense, MethodArtifacts.HeadMetadata(model));
        return new Dictionary<string, string> { ["dsee_update"] = path };
    }

    const string PrunedKey = "dsee.pruned";
    const string RemovedHeadsPrefix = "dsee.removed_heads.";

    /// <summary>Ω of every block, whether pruning has run, and the heads it removed.</summary>
    public override IEnumerable<KeyValuePair<string, Tensor>> ExtraState()
    {
        foreach (var m in modules)
            foreach (var b in m.Adapter.Blocks)
                yield return new($"{m.Name}.{DseeUpdate.PartName(b.Part)}.sparse_indices", tensor(b.Support.ToArray(), dtype: ScalarType.Int64));
        yield return new(PrunedKey, tensor(new[] { pruned ? 1L : 0L }));
        foreach (var (layer, heads) in removedHeads)
            yield return new(RemovedHeadsPrefix + layer, tensor(heads.Select(h => (long)h).ToArray()));
    }

    /// <summary>Re-removes the recorded heads (so the checkpoint's shapes fit), then restores Ω and the pruning flag.</summary>
    public override void LoadExtraState(IReadOnlyDictionary<string, Tensor> state)
    {
        var model = Model;
        foreach (var (key, value) in state.Where(p => p.Key.StartsWith(RemovedHeadsPrefix, StringComparison.Ordinal)).OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            int layer = int.Parse(key[RemovedHeadsPrefix.Length..], System.Globalization.CultureInfo.InvariantCulture);
            int[] original = value.data<long>().Select(h => (int)h).ToArray();
            var present = model.Layers[layer].Attention.PresentHeads;
            model.PruneHeads(layer, original.Select(h => present.ToList().IndexOf(h)).ToArray());
            removedHeads[layer] = original;
        }
        foreach (var m in modules)
        {
            foreach (var b in m.Adapter.Blocks)
            {
                string key = $"{m.Name}.{DseeUpdate.PartName(b.Part)}.sparse_indices";
                if (!state.TryGetValue(key, out var indices)) throw new InvalidDataException($"DSEE state has no support for {key}");
                b.SetSupport(indices.data<long>().ToArray());
            }
        }
        pruned = state.TryGetValue(PrunedKey, out var flag) && flag.data<long>()[0] == 1;
    }

    /// <summary>Trainable values: per targeted matrix r·(in + out) + |Ω|, plus the modules trained in full.</summary>
    public long TrainableCount() => TrainableParameters().Sum(t => t.Parameter.numel());

    public override void Dispose()
    {
        foreach (var m in modules)
        {
            if (ReferenceEquals(m.Layer.Adapter, m.Adapter)) m.Layer.Adapter = null;
            m.Adapter.Dispose();
        }
        modules.Clear();
        foreach (var t in prunedIndices.Values) t.Dispose();
        prunedIndices.Clear();
        base.Dispose();
    }
}
