using System.Text.Json;
using SparseTune.Models;
using SparseTune.Tuners.Lora;

namespace SparseTune.Tuners.LightPeft;

/// <summary>Light-PEFT (Gu et al., Findings of ACL 2024): the method's name, flags, learning rates and artifact reader.</summary>
public sealed class LightPeftMethod : MethodDescriptor<LightPeftOptions>
{
    public override string Name => "light-peft";
    public override string Summary =>
        "Light-PEFT (Gu et al. 2024): short estimation with head/neuron masks and LoRA scores, physical pruning of model and LoRA, then LoRA on the smaller model";

    /// <summary>The original scripts' learning rate (estimation and fine-tuning).</summary>
    public override double DefaultLearningRate => 3e-4;

    /// <summary>Measured on the bundled demo (see the method's notes): LoRA's demo rate.</summary>
    public override double DemoLearningRate => 5e-3;

    public override IReadOnlyList<MethodFlag> Flags =>
    [
        Flag("--estimate-steps", "Light-PEFT estimation length in optimizer steps (capped by --estimate-ratio of the run).", o => o.EstimateSteps, (o, v) => o with { EstimateSteps = v }),
        Flag("--estimate-ratio", "Largest share of the run the estimation may take: min(--estimate-steps, ratio·steps).", o => o.EstimateRatio, (o, v) => o with { EstimateRatio = v }),
        Flag("--head-prune-ratio", "Share of each layer's attention heads removed (GQA: key/value groups).", o => o.HeadPruneRatio, (o, v) => o with { HeadPruneRatio = v }, defaultText: "1/3"),
        Flag("--ffn-prune-ratio", "Share of FFN neurons removed.", o => o.FfnPruneRatio, (o, v) => o with { FfnPruneRatio = v }, defaultText: "1/3"),
        Flag("--ffn-granularity", "Rank FFN neurons over the whole model (global) or within each layer (layer).", o => o.FfnGranularity, (o, v) => o with { FfnGranularity = v }),
        Flag("--lora-module-keep", "Share of LoRA modules kept, by ‖ΔW·x‖/‖W·x+b‖ over the estimation.", o => o.LoraModuleKeep, (o, v) => o with { LoraModuleKeep = v }),
        Flag("--lora-rank-keep", "Share of the kept modules' LoRA ranks kept (global first-order ranking).", o => o.LoraRankKeep, (o, v) => o with { LoraRankKeep = v }),
        Flag("--mask-l1", "λ of the L1 penalty on the head and neuron masks during estimation.", o => o.MaskL1, (o, v) => o with { MaskL1 = v }),
        Flag("--light-peft-stage", "estimate: only estimate and write light_peft_estimate.json (prunes nothing); all: estimate, prune, fine-tune.", o => o.Stage, (o, v) => o with { Stage = v }),
        Flag("--lora-rank", "LoRA rank r during estimation.", o => o.Rank, (o, v) => o with { Rank = v }),
        Flag("--lora-alpha", "LoRA alpha (the update stays scaled by alpha/r of the original r).", o => o.Alpha, (o, v) => o with { Alpha = v }),
        Flag("--lora-dropout", "Dropout on the LoRA input.", o => o.Dropout, (o, v) => o with { Dropout = v }),
        Flag("--export-hf", "Also write model-hf/: the pruned model as Hugging Face transformers loads it (pruned FFN neurons, and LLaMA-family heads, as zeros; no sparsetune_ config keys).",
            o => o.ExportHuggingFace, (o, v) => o with { ExportHuggingFace = v }),
    ];

    /// <summary>Half the benchmark's steps estimate, half fine-tune the pruned model: both stages get timed steps.</summary>
    public override IMethodOptions BenchOptions => new LightPeftOptions { EstimateRatio = 0.5 };

    public override IArtifactReader ArtifactReader => LightPeftReader.Instance;

    protected override Tuner Create(LightPeftOptions options) => new LightPeftTuner(options);
}

/// <summary>
/// Recognises a Light-PEFT output (light_peft.json with an adapter folder): applies the recorded pruning to the base
/// model, then merges the PEFT adapter (which fits only the pruned shapes).
/// </summary>
public sealed class LightPeftReader : IArtifactReader
{
    public static readonly LightPeftReader Instance = new();

    public string Description => $"a Light-PEFT output ({LightPeftEstimate.FileName} naming its adapter folder)";

    public IReadOnlyList<string> Locate(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, LightPeftEstimate.FileName) : path;
        if (!File.Exists(file) || Path.GetFileName(file) != LightPeftEstimate.FileName) return [];
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(file));
            return doc.RootElement.TryGetProperty("method", out var method) && method.GetString() == "light-peft"
                && doc.RootElement.TryGetProperty("adapter", out var adapter) && adapter.ValueKind == JsonValueKind.String
                ? [Path.GetDirectoryName(Path.GetFullPath(file))!] : [];
        }
        catch (JsonException) { return []; }
    }

    /// <summary>The artifact is the output folder holding light_peft.json (a folder, so other readers do not try to open the JSON).</summary>
    static string AdapterOf(string artifact, out LightPeftEstimate estimate)
    {
        if (Directory.Exists(artifact)) artifact = Path.Combine(artifact, LightPeftEstimate.FileName);
        estimate = LightPeftEstimate.Load(artifact);
        if (estimate.Adapter is null) throw new InvalidDataException($"{artifact} names no adapter folder");
        return Path.Combine(Path.GetDirectoryName(Path.GetFullPath(artifact))!, estimate.Adapter);
    }

    public ArtifactHead HeadOf(string artifact) => PeftLoraReader.Instance.HeadOf(AdapterOf(artifact, out _));

    public IReadOnlyCollection<string> ApplyTo(TransformerModel model, string artifact)
    {
        string adapter = AdapterOf(artifact, out var estimate);
        LightPeftTuner.PruneFoundation(model, estimate.Plan);
        return PeftLoraReader.Instance.ApplyTo(model, adapter);
    }
}
