using System.Globalization;
using System.Text.Json;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Nn;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Tuners.Lora;

/// <summary>One adapted linear layer: its state-dict prefix (a Hugging Face module name), the layer and its adapter.</summary>
public sealed record LoraModule(string Name, TunableLinear Layer, LoraAdapter Adapter);

/// <summary>
/// LoRA as PEFT applies it: the whole base model is frozen, each targeted linear layer gets a
/// <see cref="LoraAdapter"/>, and the task head (modules_to_save) trains in full. The optimizer sees only
/// <c>&lt;module&gt;.lora_A.weight</c>, <c>&lt;module&gt;.lora_B.weight</c> and the head's own parameters.
/// Artifacts are a PEFT adapter folder (<see cref="PeftAdapterFormat"/>); <see cref="MergeAndDetach"/> leaves a
/// plain model that <see cref="PretrainedModel.Save"/> can write.
/// </summary>
public sealed class LoraTuner : Tuner
{
    readonly LoraOptions options;
    readonly List<LoraModule> modules = [];
    TransformerModel? model;
    List<string> savedModules = [];                  // full module names trained in full
    IReadOnlyList<string> configTargets = [];        // target_modules as adapter_config.json records them
    IReadOnlyList<string>? configModulesToSave;      // modules_to_save as adapter_config.json records them

    public LoraTuner(LoraOptions options)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems), nameof(options));
        this.options = options;
    }

    public override string Name => "lora";
    public override LoraOptions Options => options;

    /// <summary>The adapted layers, in model order; empty after <see cref="MergeAndDetach"/>.</summary>
    public IReadOnlyList<LoraModule> Modules => modules;

    /// <summary>Full names of the modules trained in full (PEFT's modules_to_save, resolved against the model).</summary>
    public IReadOnlyList<string> SavedModuleNames => savedModules;

    TransformerModel Model => model ?? throw new InvalidOperationException("LoraTuner: Attach first");

    public override void Attach(TransformerModel model)
    {
        if (this.model is not null) throw new InvalidOperationException("LoraTuner is already attached to a model");
        var saved = ResolveTrainedModules(model).ToList();
        var targets = ResolveTargets(model, options, saved, out var recordedTargets);
        AttachTo(model, targets, saved, recordedTargets, Context.TrainedModules ?? saved, _ => (options.Rank, options.Alpha));
    }

    /// <summary>
    /// The linear layers LoRA adapts: PEFT's name-suffix rule over the block linears (never the task head, never a
    /// module that trains in full). <paramref name="recordedTargets"/> is what adapter_config.json records: the
    /// given names, or for "all-linear" the distinct last name components, as PEFT expands the shorthand.
    /// </summary>
    public static List<(string Name, TunableLinear Layer)> ResolveTargets(
        TransformerModel model, LoraOptions options, IReadOnlyList<string> savedModules, out IReadOnlyList<string> recordedTargets)
    {
        List<(string Name, TunableLinear Layer)> selected;
        if (options.TargetsAllLinear)
        {
            selected = ModuleSelection.BlockLinears(model);
            selected.RemoveAll(l => ModuleSelection.IsUnder(l.Name, savedModules));
            recordedTargets = selected.Select(l => LastComponent(l.Name)).Distinct().Order(StringComparer.Ordinal).ToList();
        }
        else
        {
            var targets = options.TargetModules ?? LoraOptions.DefaultTargetModules(model.Config.ModelType);
            selected = ModuleSelection.Select(model, targets);   // throws, listing what exists, for a target that matches nothing
            selected.RemoveAll(l => ModuleSelection.IsUnder(l.Name, savedModules));
            recordedTargets = targets.ToList();
        }
        if (selected.Count == 0)
            throw new ArgumentException($"LoRA targets no linear layer of this {model.Config.ModelType} model outside the modules trained in full ({string.Join(", ", savedModules)})");
        return selected;
    }

    void AttachTo(TransformerModel model, IReadOnlyList<(string Name, TunableLinear Layer)> targets, List<string> saved,
        IReadOnlyList<string> recordedTargets, IReadOnlyList<string>? recordedModulesToSave, Func<string, (int Rank, double Alpha)> rankOf)
    {
        var occupied = targets.Where(t => t.Layer.Adapter is not null).Select(t => $"{t.Name} ({t.Layer.Adapter!.GetType().Name})").ToList();
        if (occupied.Count > 0)
            throw new InvalidOperationException($"LoRA cannot wrap layers that already carry an adapter: {string.Join(", ", occupied)}");

        FreezeAll(model);
        foreach (var (name, layer) in targets)
        {
            var (rank, alpha) = rankOf(name);
            var adapter = new LoraAdapter(layer, rank, alpha, options.Dropout);
            layer.Adapter = adapter;
            modules.Add(new LoraModule(name, layer, adapter));
        }
        foreach (var (_, p) in ParametersUnder(model, saved)) p.requires_grad = true;
        this.model = model;
        savedModules = saved;
        configTargets = recordedTargets;
        configModulesToSave = recordedModulesToSave is { Count: > 0 } ? recordedModulesToSave.ToList() : null;
    }

    public override IEnumerable<(string Name, Parameter Parameter)> TrainableParameters()
    {
        var model = Model;
        foreach (var m in modules)
            foreach (var (name, p) in m.Adapter.TrainableParameters())
                yield return ($"{m.Name}.{name}", p);
        foreach (var item in ParametersUnder(model, savedModules))
            yield return item;
    }

    /// <summary>
    /// Removes whole adapters: each named module's adapter is detached from its layer and disposed, and the module
    /// leaves <see cref="Modules"/>, the trainable set and everything <see cref="SaveAdapter"/> writes. Once a module
    /// was dropped, adapter_config.json's target_modules lists the full names of the modules still adapted (PEFT
    /// matches a full name exactly), so PEFT does not re-create the dropped ones. Names must be adapted modules; a
    /// merged adapter cannot be dropped (its change is in W).
    /// </summary>
    public void DropModules(IEnumerable<string> names)
    {
        var drop = names.ToHashSet(StringComparer.Ordinal);
        if (drop.Count == 0) return;
        var unknown = drop.Where(n => !modules.Any(m => m.Name == n)).ToList();
        if (unknown.Count > 0)
            throw new ArgumentException($"LoRA has no adapter on {string.Join(", ", unknown)}", nameof(names));
        var merged = modules.Where(m => drop.Contains(m.Name) && m.Adapter.Merged).Select(m => m.Name).ToList();
        if (merged.Count > 0)
            throw new InvalidOperationException($"cannot drop merged LoRA adapters ({string.Join(", ", merged)}); unmerge first");
        foreach (var m in modules.Where(m => drop.Contains(m.Name)))
        {
            if (ReferenceEquals(m.Layer.Adapter, m.Adapter)) m.Layer.Adapter = null;
            m.Adapter.Dispose();
        }
        modules.RemoveAll(m => drop.Contains(m.Name));
        configTargets = modules.Select(m => m.Name).ToList();
    }

    /// <summary>Folds every adapter into its base weight (W += B·A·alpha/r); forward passes then use W alone.</summary>
    public void Merge()
    {
        foreach (var m in modules) m.Adapter.Merge(m.Layer);
    }

    /// <summary>Takes every merged adapter back out of its base weight.</summary>
    public void Unmerge()
    {
        foreach (var m in modules) m.Adapter.Unmerge(m.Layer);
    }

    /// <summary>
    /// Merges every adapter and removes it from its layer (PEFT's merge_and_unload): the model is then a plain
    /// model whose state dict is a Hugging Face checkpoint. The base weights stay frozen; the head keeps training.
    /// </summary>
    public void MergeAndDetach()
    {
        Merge();
        DetachAdapters();
    }

    /// <summary>Trainable and total parameter counts; total = base model + adapters (PEFT counts the same way,
    /// except that it also counts the base copy of each modules_to_save module, which SparseTune does not keep).</summary>
    public (long Trainable, long All) CountParameters()
    {
        var model = Model;
        var seen = new HashSet<IntPtr>();
        long trainable = TrainableParameters().Where(t => t.Parameter.requires_grad && seen.Add(t.Parameter.Handle)).Sum(t => t.Parameter.numel());
        long adapters = modules.Sum(m => m.Adapter.LoraA.numel() + m.Adapter.LoraB.numel());
        return (trainable, model.ParameterCount() + adapters);
    }

    /// <summary>PEFT's print_trainable_parameters line.</summary>
    public string TrainableParametersSummary()
    {
        var (trainable, all) = CountParameters();
        double percent = all == 0 ? 0 : 100.0 * trainable / all;
        return string.Create(CultureInfo.InvariantCulture, $"trainable params: {trainable:N0} || all params: {all:N0} || trainable%: {percent:F4}");
    }

    public override IReadOnlyDictionary<string, string> SaveArtifacts(TransformerModel model, string outputDirectory)
    {
        SaveAdapter(outputDirectory);
        return new Dictionary<string, string> { ["adapter"] = outputDirectory };
    }

    /// <summary>Merges every adapter into its base weight and detaches it (PEFT's merge_and_unload).</summary>
    public override void MergeIntoModel(TransformerModel model) => MergeAndDetach();

    /// <summary>Writes adapter_config.json and adapter_model.safetensors in PEFT's layout.</summary>
    public void SaveAdapter(string directory)
    {
        var model = Model;
        if (modules.Count == 0) throw new InvalidOperationException("LoraTuner: the adapters were merged and detached; there is no adapter to save");
        Directory.CreateDirectory(directory);
        using (var scope = NewDisposeScope())
        {
            var tensors = new List<KeyValuePair<string, Tensor>>();
            foreach (var m in modules)
            {
                tensors.Add(new(PeftAdapterFormat.LoraAKey(m.Name), m.Adapter.LoraA.detach()));
                tensors.Add(new(PeftAdapterFormat.LoraBKey(m.Name), m.Adapter.LoraB.detach()));
            }
            var table = model.WeightTable.Entries.ToDictionary(e => e.ParameterName);
            foreach (var (name, p) in ParametersUnder(model, savedModules))
            {
                // modules_to_save are stored as the transformers model holds them (GPT-2 Conv1D weights as (in, out)).
                bool transposed = table.TryGetValue(name, out var entry) && entry.Transposed;
                tensors.Add(new(PeftAdapterFormat.KeyPrefix + name, transposed ? p.detach().t() : p.detach()));
            }
            var metadata = new Dictionary<string, string>(MethodArtifacts.HeadMetadata(model)) { ["format"] = "pt" };
            FiniteChecks.EnsureWritable(Path.Combine(directory, PeftAdapterFormat.WeightsFileName), tensors);
            SafeTensors.Save(Path.Combine(directory, PeftAdapterFormat.WeightsFileName), tensors, metadata);
        }
        new PeftLoraConfig
        {
            R = options.Rank,
            LoraAlpha = options.Alpha,
            // Modules whose ranks were dropped keep their function: alpha' = Scaling · r' (Scaling stays alpha / r).
            RankPattern = modules.Where(m => m.Adapter.Rank != options.Rank).ToDictionary(m => m.Name, m => m.Adapter.Rank),
            AlphaPattern = modules.Where(m => m.Adapter.Rank != options.Rank).ToDictionary(m => m.Name, m => m.Adapter.Scaling * m.Adapter.Rank),
            LoraDropout = options.Dropout,
            TargetModules = configTargets,
            ModulesToSave = configModulesToSave,
            TaskType = PeftAdapterFormat.TaskTypeOf(model.Head),
            BaseModelNameOrPath = Context.BaseModelPath,
            FanInFanOut = model.Config is Gpt2Config,
        }.Save(directory);
    }

    /// <summary>
    /// Reads a PEFT LoRA adapter folder and attaches it to <paramref name="model"/>: the layers named in the weights
    /// file get adapters holding the saved A and B; the modules_to_save get the saved values. Every key and shape is
    /// checked first; all problems are reported in one error naming the missing, unexpected or misshapen keys.
    /// </summary>
    public static LoraTuner LoadAdapter(TransformerModel model, string directory)
    {
        var config = PeftLoraConfig.Load(directory);
        string weightsPath = Path.Combine(directory, PeftAdapterFormat.WeightsFileName);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"no {PeftAdapterFormat.WeightsFileName} in {directory}", weightsPath);
        using var file = SafeTensorsFile.Open(weightsPath);

        var problems = new List<string>();
        var linears = model.NamedLinears().ToDictionary(l => l.Name, l => l.Layer);
        var loraKeys = new Dictionary<string, (bool A, bool B)>();
        var otherKeys = new List<string>();
        foreach (var info in file.Tensors)
        {
            string key = info.Name;
            if (!key.StartsWith(PeftAdapterFormat.KeyPrefix, StringComparison.Ordinal))
            {
                problems.Add($"unexpected key {key} (PEFT keys start with '{PeftAdapterFormat.KeyPrefix}')");
                continue;
            }
            string rest = key[PeftAdapterFormat.KeyPrefix.Length..];
            if (rest.EndsWith(".lora_A.weight", StringComparison.Ordinal) || rest.EndsWith(".lora_B.weight", StringComparison.Ordinal))
            {
                string module = rest[..^".lora_A.weight".Length];
                bool isA = rest.EndsWith(".lora_A.weight", StringComparison.Ordinal);
                loraKeys.TryGetValue(module, out var seen);
                loraKeys[module] = isA ? (true, seen.B) : (seen.A, true);
            }
            else if (rest.Split('.').Any(part => part.StartsWith("lora_", StringComparison.Ordinal)))
                problems.Add($"unsupported key {key} (only lora_A.weight and lora_B.weight are supported)");
            else otherKeys.Add(key);
        }

        var targets = new List<(string Name, TunableLinear Layer)>();
        foreach (var (module, (hasA, hasB)) in loraKeys)
        {
            if (!linears.TryGetValue(module, out var layer))
            {
                problems.Add($"{PeftAdapterFormat.LoraAKey(module)}: this {model.Config.ModelType} model has no linear layer {module}");
                continue;
            }
            if (!hasA) problems.Add($"missing key {PeftAdapterFormat.LoraAKey(module)}");
            if (!hasB) problems.Add($"missing key {PeftAdapterFormat.LoraBKey(module)}");
            int rank = config.For(module).Rank;
            if (hasA) CheckShape(PeftAdapterFormat.LoraAKey(module), [rank, layer.InFeatures]);
            if (hasB) CheckShape(PeftAdapterFormat.LoraBKey(module), [layer.OutFeatures, rank]);
            targets.Add((module, layer));
        }
        if (loraKeys.Count == 0) problems.Add("the weights file holds no lora_A/lora_B tensors");
        // target_modules and exclude_modules are honoured: the weights must adapt exactly the block linears they name.
        foreach (string module in loraKeys.Keys.Where(m => !config.Targets(m)))
            problems.Add($"{module} has LoRA tensors but target_modules/exclude_modules do not select it");
        foreach (var (name, _) in ModuleSelection.BlockLinears(model).Where(l => config.Targets(l.Name) && !loraKeys.ContainsKey(l.Name)))
            if (config.TargetModules.Count > 0 && config.TargetModules is not [LoraOptions.AllLinear])
                problems.Add($"target_modules selects {name} but the weights file has no LoRA tensors for it");
        // PEFT turns fan_in_fan_out on by itself for GPT-2's Conv1D; on nn.Linear layers it would transpose the update.
        if (config.FanInFanOut && model.Config is not Gpt2Config)
            problems.Add($"fan_in_fan_out is true, but this {model.Config.ModelType} model's linears are not Conv1D (the update would be transposed)");

        // modules_to_save: PeftModelForSequenceClassification adds "classifier" and "score" itself, and PEFT skips
        // names that match no module (a BERT adapter's config lists "score"); the weights file must then hold
        // every parameter of the modules that do match.
        IReadOnlyList<string>? recordedSaveNames = config.ModulesToSave ?? (config.TaskType == "SEQ_CLS" ? new[] { "classifier", "score" } : null);
        var moduleNames = model.named_modules().Select(m => m.name).ToList();
        List<string> saveNames = (recordedSaveNames ?? []).Where(n => moduleNames.Any(m => ModuleSelection.Matches(m, [n]))).ToList();
        List<string> saved = ModuleSelection.ResolveTrainedModules(model, saveNames);
        var table = model.WeightTable.Entries.ToDictionary(e => e.ParameterName);
        var expected = new Dictionary<string, (Parameter Parameter, bool Transposed)>();
        foreach (var (name, p) in ParametersUnder(model, saved))
            expected[PeftAdapterFormat.KeyPrefix + name] = (p, table.TryGetValue(name, out var entry) && entry.Transposed);
        foreach (string key in otherKeys)
        {
            if (!expected.TryGetValue(key, out var target)) problems.Add($"unexpected key {key}");
            else CheckShape(key, target.Transposed ? [target.Parameter.shape[1], target.Parameter.shape[0]] : target.Parameter.shape);
        }
        foreach (string key in expected.Keys.Where(k => !otherKeys.Contains(k)))
            problems.Add($"missing key {key} (modules_to_save {string.Join(", ", saved)})");

        if (problems.Count > 0)
            throw new InvalidDataException($"{directory}: the LoRA adapter does not fit this {model.Config.ModelType} model: {string.Join("; ", problems)}");

        var options = new LoraOptions
        {
            Rank = config.R,
            Alpha = config.LoraAlpha,
            Dropout = config.LoraDropout,
            TargetModules = config.TargetModules.Count > 0 ? config.TargetModules : targets.Select(t => LastComponent(t.Name)).Distinct().ToList(),
        };
        var tuner = new LoraTuner(options) { Context = new TunerContext { TrainedModules = saveNames, BaseModelPath = config.BaseModelNameOrPath } };
        // Attach in the model's own module order, as Attach does.
        var ordered = model.NamedLinears().Where(l => loraKeys.ContainsKey(l.Name)).ToList();
        tuner.AttachTo(model, ordered, saved, options.TargetModules!, recordedSaveNames, config.For);
        using (no_grad())
        {
            foreach (var m in tuner.modules)
            {
                foreach (var (key, target) in new[] { (PeftAdapterFormat.LoraAKey(m.Name), m.Adapter.LoraA), (PeftAdapterFormat.LoraBKey(m.Name), m.Adapter.LoraB) })
                {
                    using var loaded = file.Load(key);
                    FiniteChecks.EnsureFinite(weightsPath, key, loaded);
                    target.copy_(loaded);
                }
            }
            foreach (var (key, (p, transposed)) in expected)
            {
                using var loaded = file.Load(key);
                FiniteChecks.EnsureFinite(weightsPath, key, loaded);
                using var oriented = transposed ? loaded.t() : loaded.alias();
                p.copy_(oriented);
            }
        }
        return tuner;

        void CheckShape(string key, long[] want)
        {
            long[] have = file.Info(key).Shape;
            if (!have.SequenceEqual(want))
                problems.Add($"{key} is [{string.Join(", ", have)}], expected [{string.Join(", ", want)}]");
        }
    }

    void DetachAdapters()
    {
        foreach (var m in modules)
        {
            if (ReferenceEquals(m.Layer.Adapter, m.Adapter)) m.Layer.Adapter = null;
            m.Adapter.Dispose();
        }
        modules.Clear();
    }

    static string LastComponent(string name) => name[(name.LastIndexOf('.') + 1)..];

    /// <summary>Removes the adapters from the model (a merged adapter's change stays in W) and frees them.</summary>
    public override void Dispose()
    {
        DetachAdapters();
        base.Dispose();
    }
}
