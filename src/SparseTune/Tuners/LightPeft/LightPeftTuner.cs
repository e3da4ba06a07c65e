using System.Text;
using SparseTune.Models;
using SparseTune.Tuners.Lora;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Tuners.LightPeft;

/// <summary>
/// Light-PEFT (Gu et al., Findings of ACL 2024): estimate early which parts of the model and of the LoRA matter,
/// prune both physically, and fine-tune the smaller model.
/// <code>
///   Attach              freeze everything; LoRA (a <see cref="LoraTuner"/>) on q, k, v (GPT-2: c_attn), attention
///                       output, FFN input(s) and FFN output of every layer; the head trains; a mask of ones per
///                       head (the layer's HeadGate) and per FFN neuron (NeuronGate), trained
///   steps 0 … E−1       estimation: loss + λ·Σ|m| (ExtraLoss); over the second half of it, each LoRA module's
///                       ‖ΔW·x‖ / ‖W·x + b‖ (LoraAdapter.OutputObserver) and each rank's first-order score
///                       |mean(A⊙∇A)[i,:]| + |mean(B⊙∇B)[:,i]| (BeforeOptimizerStep, gradients before the step)
///   AfterOptimizerStep(E−1)  prune (returns true; RestartsTraining: fresh optimizer and schedule):
///                       masks dropped (not folded in); heads per layer and FFN neurons (global or per layer) with
///                       the lowest raw mask removed from the pretrained weights (model.PruneHeads / PruneNeurons,
///                       the LoRA factors follow); LoRA modules outside the top 25% by the norm ratio dropped; the
///                       top half of the remaining ranks kept (global); a module left without ranks dropped
///   steps E … T−1       fine-tuning of the pruned model: surviving LoRA + head, no L1 term
///   Finish              LoRA merged into W (adapters stay attached, merged), so model/ is the shipped model
///   SaveArtifacts       adapter/ (PEFT LoRA with rank_pattern, for the pruned base) + light_peft.json (masks,
///                       scores, the plan), with --export-hf also model-hf/ (<see cref="HuggingFaceExport"/>);
///                       stage estimate: light_peft_estimate.json only
/// </code>
/// E = min(--estimate-steps, ⌊--estimate-ratio · T⌋) (defaults 800 and 0.25), within [1, T − 1]. Resume: before the
/// pruning the score sums travel in the checkpoint; after it the estimate (with the plan) does, and
/// <see cref="LoadExtraState"/> replays the plan on the freshly attached model before the trainer copies the tensors.
/// </summary>
/// <remarks>
/// Paper: https://aclanthology.org/2024.findings-acl.447; code https://github.com/gccnlp/Light-PEFT (NLU/, RoBERTa
/// only), read for this port, not copied: NLU/trainer_base.py (MaskTrainer: L1 on the masks, rank scores after
/// backward), NLU/nlu_utils.py (quantile selections, pruning of the model and of the LoRA), scripts/estimate.sh.
///
/// Differences from the original, and why:
///  • Counts instead of quantile thresholds: ⌊ratio · n⌋ lowest units go, ties to the lower index
///    (<see cref="LightPeftSelection"/>); np.quantile's "strictly above" removes 1 + ⌊ratio·(n−1)⌋ without ties and
///    every tied unit with them. A layer always keeps one head and one neuron.
///  • One pass: estimation, pruning and fine-tuning are one run, the pruned model continuing from the estimation's
///    weights (the original saves the estimation's adapter and reloads it into a second script; same result).
///  • Estimation length: 800 steps capped at a quarter of the run (--estimate-ratio), so short runs still fine-tune.
///  • The head mask multiplies each head's context before the output projection (the original multiplies the
///    attention probabilities after dropout: the same product, since context = probs · V).
///  • Grouped-query attention (LLaMA family, not in the original): masks stay one per query head, but the unit removed
///    is a whole key/value group scored by the mean mask of its query heads, ⌊ratio · groups⌋ groups per layer —
///    removing single query heads would leave unequal groups.
///  • Decoders (GPT-2, LLaMA) are our extension; GPT-2's fused c_attn is one LoRA module; LLaMA's FFN input is
///    gate_proj and up_proj, two modules.
///  • ‖ΔW·x‖ / ‖W·x + b‖ is averaged over every position, padding included: the linear layer does not see the
///    attention mask (the original averages over non-pad tokens). Per forward pass a non-finite mean counts as 0.
///  • Rank scores are read once per optimizer step from the accumulated, clipped gradient (the original: after each
///    micro-batch's backward, before clipping).
///  • Masks train with the run's learning rate and no weight decay (the original's mask-lr coefficients are 1 in its
///    scripts; its weight decay is the run's, 0 there).
///  • The shipped model/ has the LoRA merged; adapter/ holds the unmerged PEFT adapter for the pruned base, which
///    light_peft.json's plan rebuilds from the original base (the artifact reader does both).
/// </remarks>
public sealed class LightPeftTuner : Tuner
{
    readonly LightPeftOptions options;
    LoraTuner? lora;
    TransformerModel? model;
    Parameter[] headMasks = [];
    Parameter[] neuronMasks = [];
    List<string> moduleNames = [];              // LoRA modules in attach order (the accumulators' rows)
    double[,] ratioSums = new double[0, 2];     // per module: Σ per-forward mean ‖ΔW·x‖/‖W·x+b‖, forward passes
    double[][] rankSums = [];                   // per module: Σ per-step rank scores
    double[,] pendingRatioSums = new double[0, 2];  // data-parallel: this step's ratio sums, before the ranks' sum
    int scoredSteps;
    bool recording;
    int totalSteps;
    double denseFlops;                          // the blocks' forward FLOPs per token as loaded (InferenceFlops)
    LightPeftEstimate? estimate;                // set when the plan was made (stage all) or at Finish (stage estimate)
    bool pruned;
    bool finished;
    readonly System.Diagnostics.Stopwatch clock = new();   // estimation, then fine-tuning (report only)

    public LightPeftTuner(LightPeftOptions options)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems), nameof(options));
        this.options = options;
    }

    public override string Name => "light-peft";
    public override LightPeftOptions Options => options;

    /// <summary>The run ships the pruned model (model/), and checkpoints after the pruning hold its shapes.</summary>
    public override bool ModifiesBaseWeights => true;

    /// <summary>W changes only at the pruning; steps train the LoRA, the masks and the head.</summary>
    public override bool StepsChangeBaseWeights => false;

    /// <summary>After the pruning (stage all); stage estimate prunes nothing, and Finish folds the masks without changing the function.</summary>
    public override bool HasFinalStructure => options.Stage != LightPeftStage.All || pruned;

    /// <summary>The LoRA inside (its modules shrink and disappear with the pruning).</summary>
    public LoraTuner Lora => lora ?? throw new InvalidOperationException("LightPeftTuner: Attach first");

    /// <summary>True once the model and the LoRA were pruned (fine-tuning stage).</summary>
    public bool Pruned => pruned;

    /// <summary>The estimation's numbers and the plan, once made.</summary>
    public LightPeftEstimate? Estimate => estimate;

    /// <summary>The head masks per layer (the layers' HeadGate) while estimating; empty after the pruning.</summary>
    public IReadOnlyList<Parameter> HeadMasks => headMasks;

    /// <summary>The FFN neuron masks per layer (the layers' NeuronGate) while estimating; empty after the pruning.</summary>
    public IReadOnlyList<Parameter> NeuronMasks => neuronMasks;

    TransformerModel Model => model ?? throw new InvalidOperationException("LightPeftTuner: Attach first");

    /// <summary>Every layer's q, k, v (or c_attn), attention output, FFN input(s) and FFN output, in model order.</summary>
    public static List<string> TargetModules(TransformerModel model) =>
        model.Layers.SelectMany(l => l.Attention.Linears.Concat(l.FeedForward.Linears)).Select(l => l.Name).ToList();

    public override void Attach(TransformerModel model)
    {
        if (this.model is not null) throw new InvalidOperationException("LightPeftTuner is already attached to a model");
        var loraOptions = new LoraOptions { Rank = options.Rank, Alpha = options.Alpha, Dropout = options.Dropout, TargetModules = TargetModules(model) };
        lora = new LoraTuner(loraOptions) { Context = Context };
        lora.Attach(model);   // freezes the model, adapts the targets, unfreezes the head
        this.model = model;
        denseFlops = InferenceFlops.PerToken(model, skipZeros: false);
        moduleNames = lora.Modules.Select(m => m.Name).ToList();
        ratioSums = new double[moduleNames.Count, 2];
        pendingRatioSums = new double[moduleNames.Count, 2];
        rankSums = moduleNames.Select(_ => new double[options.Rank]).ToArray();
        for (int i = 0; i < lora.Modules.Count; i++)
        {
            int row = i;
            lora.Modules[i].Adapter.OutputObserver = (output, update) => ObserveNormRatio(row, output, update);
        }
        var dtype = model.Layers[0].Attention.Output.Layer.weight.dtype;
        var device = model.Layers[0].Attention.Output.Layer.weight.device;
        headMasks = model.Layers.Select(l => Mask(l.Attention.NumHeads)).ToArray();
        neuronMasks = model.Layers.Select(l => Mask(l.FeedForward.IntermediateSize)).ToArray();
        for (int i = 0; i < model.Layers.Count; i++)
        {
            model.Layers[i].Attention.HeadGate = headMasks[i];
            model.Layers[i].FeedForward.NeuronGate = neuronMasks[i];
        }

        Parameter Mask(int size)
        {
            var mask = new Parameter(ones(size, dtype: dtype, device: device), requires_grad: true);
            mask.DetachFromDisposeScope();
            return mask;
        }
    }

    /// <summary>LoRA factors, the head, and while estimating the masks (light_peft.layer.L.head_mask / ffn_mask).</summary>
    public override IEnumerable<(string Name, Parameter Parameter)> TrainableParameters()
    {
        foreach (var item in Lora.TrainableParameters()) yield return item;
        for (int i = 0; i < headMasks.Length; i++) yield return ($"light_peft.layer.{i}.head_mask", headMasks[i]);
        for (int i = 0; i < neuronMasks.Length; i++) yield return ($"light_peft.layer.{i}.ffn_mask", neuronMasks[i]);
    }

    bool Estimating => estimate is null && !finished;

    public override void BeforeStep(TrainingStepContext context)
    {
        totalSteps = context.TotalSteps;
        clock.Start();
        int e = options.EstimationSteps(context.TotalSteps);
        // The second half of the estimation: its last ⌈E/2⌉ steps.
        recording = Estimating && context.Step < e && context.Step >= e - (e + 1) / 2;
    }

    /// <summary>λ·Σ(|m_head| + |m_ffn|) while the masks exist; no term after the pruning.</summary>
    public override Tensor? ExtraLoss(TrainingStepContext context)
    {
        if (headMasks.Length == 0 || options.MaskL1 == 0) return null;
        Tensor? sum = null;
        foreach (var m in headMasks.Concat(neuronMasks)) sum = sum is null ? m.abs().sum() : sum + m.abs().sum();
        return sum! * options.MaskL1;
    }

    void ObserveNormRatio(int row, Tensor output, Tensor update)
    {
        if (!recording) return;
        using var scope = NewDisposeScope();
        // Per position ‖ΔW·x‖₂ / ‖W·x + b‖₂, then the mean over all positions of the batch.
        using var _ = no_grad();
        Tensor mean = update.detach().norm(-1, keepdim: false).div(output.detach().norm(-1, keepdim: false)).mean();
        double ratio = mean.to_type(ScalarType.Float64).item<double>();
        // Data-parallel: this rank's ratios wait for the step's all-reduce (BeforeOptimizerStep) before they count.
        var sums = Group.Size > 1 ? pendingRatioSums : ratioSums;
        sums[row, 0] += double.IsFinite(ratio) ? ratio : 0;
        sums[row, 1] += 1;
    }

    /// <summary>Accumulates each rank's first-order score from the gradients about to be applied.</summary>
    public override void BeforeOptimizerStep(TrainingStepContext context)
    {
        if (!recording) return;
        if (Group.Size > 1) AddRanksRatios();
        for (int i = 0; i < Lora.Modules.Count; i++)
        {
            var adapter = Lora.Modules[i].Adapter;
            using var scope = NewDisposeScope();   // .grad hands out a new wrapper each time: dispose it with the step's temporaries
            using var _ = no_grad();
            Tensor? gradA = adapter.LoraA.grad, gradB = adapter.LoraB.grad;
            if (gradA is null || gradB is null) continue;
            // |mean_j (A ⊙ ∇A)[i, j]| + |mean_k (B ⊙ ∇B)[k, i]|, one value per rank i.
            Tensor score = adapter.LoraA.mul(gradA).mean([1]).abs() + adapter.LoraB.mul(gradB).mean([0]).abs();
            double[] values = score.to_type(ScalarType.Float64).data<double>().ToArray();
            int row = moduleNames.IndexOf(Lora.Modules[i].Name);
            for (int r = 0; r < values.Length; r++) rankSums[row][r] += values[r];
        }
        scoredSteps++;
    }

    /// <summary>
    /// Adds every rank's ratio sums of this step (each rank saw its own rows) to the totals, the same on every rank; the
    /// module scores are then the mean over all ranks' forward passes. The rank scores come from averaged gradients.
    /// </summary>
    void AddRanksRatios()
    {
        int modules = pendingRatioSums.GetLength(0);
        double[] flat = new double[modules * 2];
        Buffer.BlockCopy(pendingRatioSums, 0, flat, 0, flat.Length * sizeof(double));
        Group.AllReduceSum(flat);
        for (int i = 0; i < modules; i++)
        {
            ratioSums[i, 0] += flat[2 * i];
            ratioSums[i, 1] += flat[2 * i + 1];
        }
        Array.Clear(pendingRatioSums);
    }

    public override bool AfterOptimizerStep(TrainingStepContext context)
    {
        recording = false;
        if (!Estimating || options.Stage != LightPeftStage.All || context.Step != options.EstimationSteps(context.TotalSteps) - 1) return false;
        var made = MakeEstimate(options.EstimationSteps(context.TotalSteps));
        long foundationBefore = Model.ParameterCount(), loraBefore = LoraParameterCount();
        ApplyPlan(made.Plan);
        pruned = true;
        estimate = made with
        {
            FoundationParametersBefore = foundationBefore,
            FoundationParametersAfter = Model.ParameterCount(),
            LoraParametersBefore = loraBefore,
            LoraParametersAfter = LoraParameterCount(),
            EstimationSeconds = clock.Elapsed.TotalSeconds,
        };
        clock.Restart();
        return true;
    }

    /// <summary>Only asked after the pruning step: fine-tuning starts with a fresh optimizer and schedule.</summary>
    public override bool RestartsTraining(TrainingStepContext context) => Pruned;

    long LoraParameterCount() => Lora.Modules.Sum(m => m.Adapter.LoraA.numel() + m.Adapter.LoraB.numel());

    /// <summary>The numbers so far and what they decide (nothing is changed).</summary>
    public LightPeftEstimate MakeEstimate(int estimationSteps)
    {
        var model = Model;
        float[][] heads = headMasks.Select(Values).ToArray();
        float[][] neurons = neuronMasks.Select(Values).ToArray();
        int[] groups = model.Layers.Select(l => l.Attention.GroupSize).ToArray();
        var moduleScores = new Dictionary<string, double>();
        var rankScores = new Dictionary<string, double[]>();
        for (int i = 0; i < moduleNames.Count; i++)
        {
            double mean = ratioSums[i, 1] > 0 ? ratioSums[i, 0] / ratioSums[i, 1] : 0;
            moduleScores[moduleNames[i]] = double.IsFinite(mean) ? mean : 0;
            rankScores[moduleNames[i]] = rankSums[i].Select(s => scoredSteps > 0 && double.IsFinite(s / scoredSteps) ? s / scoredSteps : 0).ToArray();
        }

        int[][] removedHeads = heads.Select((m, l) => LightPeftSelection.HeadsToRemove(m, groups[l], options.HeadPruneRatio)).ToArray();
        int[][] removedNeurons = options.FfnGranularity == FfnGranularity.Global
            ? LightPeftSelection.NeuronsToRemoveGlobally(neurons, options.FfnPruneRatio)
            : LightPeftSelection.NeuronsToRemovePerLayer(neurons, options.FfnPruneRatio);
        var dropped = LightPeftSelection.ModulesToDrop(moduleNames.Select(n => (n, moduleScores[n])).ToList(), options.LoraModuleKeep);
        var kept = LightPeftSelection.RanksToKeep(moduleNames.Where(n => !dropped.Contains(n)).Select(n => (n, rankScores[n])).ToList(), options.LoraRankKeep);
        dropped.AddRange(kept.Where(k => k.Value.Length == 0).Select(k => k.Key));
        var plan = new LightPeftPlan
        {
            RemovedHeads = removedHeads,
            RemovedNeurons = removedNeurons,
            DroppedModules = moduleNames.Where(dropped.Contains).ToArray(),
            KeptRanks = kept.Where(k => k.Value.Length > 0).ToDictionary(k => k.Key, k => k.Value),
        };
        return new LightPeftEstimate
        {
            HeadsKept = model.Layers.Select((l, i) => l.Attention.NumHeads - removedHeads[i].Length).ToArray(),
            NeuronsKept = model.Layers.Select((l, i) => l.FeedForward.IntermediateSize - removedNeurons[i].Length).ToArray(),
            EstimationSeconds = clock.Elapsed.TotalSeconds,
            Stage = options.Stage.ToString().ToLowerInvariant(),
            EstimationSteps = estimationSteps,
            ScoredSteps = scoredSteps,
            HeadMasks = heads,
            HeadGroupSizes = groups,
            NeuronMasks = neurons,
            ModuleScores = moduleScores,
            RankScores = rankScores,
            Plan = plan,
            FoundationParametersBefore = model.ParameterCount(),
            LoraParametersBefore = LoraParameterCount(),
        };

        static float[] Values(Parameter p)
        {
            using var f = p.detach().to_type(ScalarType.Float32);
            return f.data<float>().ToArray();
        }
    }

    /// <summary>
    /// Carries out <paramref name="plan"/> (what the end of the estimation does): the masks are dropped (their values
    /// are not folded in), the dropped LoRA modules are removed first (so nothing slices them), then heads and neurons
    /// are removed from the pretrained weights (the surviving LoRA factors follow), then the surviving modules keep
    /// their ranks. Does not record an estimate: the trainer's path is <see cref="AfterOptimizerStep"/>.
    /// </summary>
    public void ApplyPlan(LightPeftPlan plan)
    {
        var model = Model;
        DropMasks();
        foreach (var m in Lora.Modules) m.Adapter.OutputObserver = null;
        Lora.DropModules(plan.DroppedModules);
        PruneFoundation(model, plan);
        foreach (var m in Lora.Modules)
        {
            if (!plan.KeptRanks.TryGetValue(m.Name, out var ranks))
                throw new InvalidDataException($"Light-PEFT plan: no ranks recorded for the surviving LoRA module {m.Name}");
            if (ranks.Length == m.Adapter.Rank) continue;
            using var index = tensor(ranks.Select(r => (long)r).ToArray(), device: m.Adapter.LoraA.device);
            m.Adapter.KeepRanks(index);
        }
    }

    /// <summary>Removes the plan's heads and neurons from <paramref name="model"/> (in the numbering it was loaded with).</summary>
    public static void PruneFoundation(TransformerModel model, LightPeftPlan plan)
    {
        if (plan.RemovedHeads.Length != model.Layers.Count || plan.RemovedNeurons.Length != model.Layers.Count)
            throw new InvalidDataException($"Light-PEFT plan covers {plan.RemovedHeads.Length} layers, the {model.Config.ModelType} model has {model.Layers.Count}");
        for (int l = 0; l < model.Layers.Count; l++)
        {
            model.PruneHeads(l, plan.RemovedHeads[l]);
            model.PruneNeurons(l, plan.RemovedNeurons[l]);
        }
    }

    void DropMasks()
    {
        if (model is { } m)
        {
            foreach (var layer in m.Layers)
            {
                if (headMasks.Any(h => ReferenceEquals(h, layer.Attention.HeadGate))) layer.Attention.HeadGate = null;
                if (neuronMasks.Any(n => ReferenceEquals(n, layer.FeedForward.NeuronGate))) layer.FeedForward.NeuronGate = null;
            }
        }
        foreach (var p in headMasks.Concat(neuronMasks)) p.Dispose();
        headMasks = [];
        neuronMasks = [];
    }

    /// <summary>
    /// Stage all: merges the LoRA into W (adapters stay attached, merged), so model/ is the tuned model. Stage estimate:
    /// records the estimate, merges, and folds the masks into the output projections' columns (W·diag(m)), so the
    /// shipped model computes what the masked model computed.
    /// </summary>
    public override void Finish(TransformerModel model)
    {
        if (finished) return;
        finished = true;
        if (estimate is null)
        {
            estimate = MakeEstimate(options.EstimationSteps(totalSteps));
            foreach (var m in Lora.Modules) m.Adapter.OutputObserver = null;
        }
        else if (pruned) estimate = estimate with { FineTuningSeconds = clock.Elapsed.TotalSeconds };
        Lora.Merge();
        if (headMasks.Length == 0) return;
        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            for (int l = 0; l < model.Layers.Count; l++)
            {
                var attention = model.Layers[l].Attention;
                attention.Output.Layer.weight.mul_(headMasks[l].detach().repeat_interleave(attention.HeadDim).unsqueeze(0));
                model.Layers[l].FeedForward.Output.Layer.weight.mul_(neuronMasks[l].detach().unsqueeze(0));
            }
        }
        DropMasks();
    }

    /// <summary>
    /// report.json's method_report: heads and FFN neurons kept per layer, foundation and LoRA parameters before and
    /// after the pruning, the blocks' forward FLOPs per token relative to the unpruned model (attention at 128 tokens),
    /// and the wall time of the estimation and of the fine-tuning after it. Stage estimate: what would be kept.
    /// </summary>
    public override object? Report(TransformerModel model) => estimate is not { } e ? null : new
    {
        stage = e.Stage,
        pruned,
        estimation_steps = e.EstimationSteps,
        heads_kept = e.HeadsKept,
        neurons_kept = e.NeuronsKept,
        foundation_parameters_before = e.FoundationParametersBefore,
        foundation_parameters_after = e.FoundationParametersAfter,
        lora_parameters_before = e.LoraParametersBefore,
        lora_parameters_after = e.LoraParametersAfter,
        lora_modules_dropped = e.Plan.DroppedModules.Length,
        lora_modules_kept = e.Plan.KeptRanks.Count,
        inference_flops_relative = pruned ? InferenceFlops.PerToken(model, skipZeros: false) / denseFlops : 1.0,
        estimation_seconds = e.EstimationSeconds,
        fine_tuning_seconds = e.FineTuningSeconds,
    };

    /// <summary>Stage all: adapter/ and light_peft.json (and with --export-hf model-hf/); stage estimate: light_peft_estimate.json.</summary>
    public override IReadOnlyDictionary<string, string> SaveArtifacts(TransformerModel model, string outputDirectory)
    {
        if (estimate is null) throw new InvalidOperationException("LightPeftTuner: nothing estimated yet; call Finish before SaveArtifacts");
        Directory.CreateDirectory(outputDirectory);
        if (!Pruned)
        {
            string path = Path.Combine(outputDirectory, LightPeftEstimate.EstimateFileName);
            estimate.Save(path);
            return new Dictionary<string, string> { ["light_peft_estimate"] = path };
        }
        const string adapterFolder = "adapter";
        string adapter = Path.Combine(outputDirectory, adapterFolder);
        Lora.SaveAdapter(adapter);
        string file = Path.Combine(outputDirectory, LightPeftEstimate.FileName);
        (estimate with { Adapter = adapterFolder }).Save(file);
        var outputs = new Dictionary<string, string> { ["adapter"] = adapter, ["light_peft"] = file };
        if (options.ExportHuggingFace)
        {
            string exported = Path.Combine(outputDirectory, ExportFolder);
            // Heads padded back with zeros for every family: transformers 5 no longer reads pruned_heads (its head
            // pruning was removed), and the zero-padded form loads in 4.x and 5.x alike with the same outputs.
            HuggingFaceExport.Save(model, exported, padHeads: true);
            if (Context.BaseModelPath is { } basePath) PretrainedModel.CopyTokenizerFiles(basePath, exported);
            outputs["model_hf"] = exported;
        }
        return outputs;
    }

    /// <summary>Where --export-hf writes the Hugging Face form of the pruned model, beside model/.</summary>
    public const string ExportFolder = "model-hf";

    /// <summary>Merges the LoRA (if Finish did not) and detaches it; masks of an unfinished estimation are dropped unfolded.</summary>
    public override void MergeIntoModel(TransformerModel model)
    {
        Lora.MergeAndDetach();
        DropMasks();
    }

    const string EstimateKey = "light_peft.estimate";
    const string RatioKey = "light_peft.module_ratio_sums";
    const string RankKey = "light_peft.rank_score_sums";
    const string StepsKey = "light_peft.scored_steps";

    /// <summary>Before the pruning: the score sums (float64, so a resumed run continues bit-exactly); after: the estimate with its plan (UTF-8 JSON).</summary>
    public override IEnumerable<KeyValuePair<string, Tensor>> ExtraState()
    {
        if (estimate is not null)
        {
            yield return new(EstimateKey, tensor(Encoding.UTF8.GetBytes(estimate.ToJson())));
            yield break;
        }
        yield return new(RatioKey, tensor(ratioSums));
        var ranks = new double[moduleNames.Count, options.Rank];
        for (int i = 0; i < moduleNames.Count; i++)
            for (int r = 0; r < options.Rank; r++) ranks[i, r] = rankSums[i][r];
        yield return new(RankKey, tensor(ranks));
        yield return new(StepsKey, tensor(new long[] { scoredSteps }));
    }

    /// <summary>Restores the score sums, or replays the recorded pruning on the freshly attached model.</summary>
    public override void LoadExtraState(IReadOnlyDictionary<string, Tensor> state)
    {
        if (state.TryGetValue(EstimateKey, out var json))
        {
            var recorded = LightPeftEstimate.FromJson(Encoding.UTF8.GetString(json.data<byte>().ToArray()));
            scoredSteps = recorded.ScoredSteps;
            if (recorded.FoundationParametersAfter is not null)
            {
                ApplyPlan(recorded.Plan);
                pruned = true;
            }
            estimate = recorded;
            return;
        }
        if (!state.TryGetValue(RatioKey, out var ratios) || !state.TryGetValue(RankKey, out var ranks) || !state.TryGetValue(StepsKey, out var steps))
            throw new InvalidDataException("--resume: the checkpoint holds no Light-PEFT state");
        if (ratios.shape[0] != moduleNames.Count || ranks.shape[1] != options.Rank)
            throw new InvalidDataException($"--resume: the checkpoint's Light-PEFT state covers {ratios.shape[0]} modules of rank {ranks.shape[1]}, this run {moduleNames.Count} of rank {options.Rank}");
        double[] r = ratios.to_type(ScalarType.Float64).data<double>().ToArray();
        double[] k = ranks.to_type(ScalarType.Float64).data<double>().ToArray();
        for (int i = 0; i < moduleNames.Count; i++)
        {
            ratioSums[i, 0] = r[2 * i];
            ratioSums[i, 1] = r[2 * i + 1];
            for (int j = 0; j < options.Rank; j++) rankSums[i][j] = k[i * options.Rank + j];
        }
        scoredSteps = (int)steps.data<long>()[0];
    }

    public override void Dispose()
    {
        DropMasks();
        lora?.Dispose();
        base.Dispose();
    }
}
