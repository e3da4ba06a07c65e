using System.Text.Json;
using SparseTune.Models;

namespace SparseTune.Tuners.Lora;

/// <summary>LoRA (Hu et al. 2021): the method's name, flags, learning rates, bench arm and adapter reader.</summary>
public sealed class LoraMethod : MethodDescriptor<LoraOptions>
{
    public override string Name => "lora";
    public override string Summary => "LoRA (Hu et al. 2021): frozen model, trained low-rank B·A beside chosen linears; writes a PEFT adapter";
    public override double DefaultLearningRate => 5e-4;
    public override double DemoLearningRate => 5e-3;

    public override IReadOnlyList<MethodFlag> Flags =>
    [
        Flag("--lora-rank", "LoRA rank r.", o => o.Rank, (o, v) => o with { Rank = v }),
        Flag("--lora-alpha", "LoRA alpha (the update is scaled by alpha/r).", o => o.Alpha, (o, v) => o with { Alpha = v }),
        Flag("--lora-dropout", "Dropout on the LoRA input.", o => o.Dropout, (o, v) => o with { Dropout = v }),
        Flag("--target-modules", "Comma-separated layer names LoRA adapts, or 'all-linear'.", o => o.TargetModules, (o, v) => o with { TargetModules = v },
            defaultText: "per family as PEFT: bert/roberta query,value; gpt2 c_attn; llama-family q_proj,v_proj"),
    ];

    /// <summary>LoRA on query and value with the rank that matches SIFT at 1% of the block weights.</summary>
    public override IReadOnlyList<AccuracyArm> AccuracyArms(AccuracyBudget budget)
    {
        long siftBudget = (long)Math.Ceiling(0.01 * budget.BlockParameters);
        // 2 modules (query, value) × layers × r × (hidden + hidden) parameters.
        int rank = Math.Max(1, (int)Math.Round(siftBudget / (4.0 * budget.HiddenSize * budget.Layers)));
        return [new($"lora r={rank}", Name, new LoraOptions { Rank = rank, Alpha = 2 * rank })];
    }

    public override IArtifactReader ArtifactReader => PeftLoraReader.Instance;

    protected override Tuner Create(LoraOptions options) => new LoraTuner(options);
}

/// <summary>Recognises a PEFT LoRA adapter folder by its adapter_config.json (peft_type LORA) and merges it (W += B·A·alpha/r).</summary>
public sealed class PeftLoraReader : IArtifactReader
{
    public static readonly PeftLoraReader Instance = new();

    public string Description => "a PEFT LoRA adapter folder (adapter_config.json with peft_type LORA)";

    public IReadOnlyList<string> Locate(string path)
    {
        string folder = File.Exists(path) && Path.GetFileName(path) == PeftAdapterFormat.ConfigFileName ? Path.GetDirectoryName(Path.GetFullPath(path))! : path;
        string config = Path.Combine(folder, PeftAdapterFormat.ConfigFileName);
        if (!Directory.Exists(folder) || !File.Exists(config)) return [];
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(config));
            return doc.RootElement.TryGetProperty("peft_type", out var type) && type.GetString() == "LORA" ? [folder] : [];
        }
        catch (JsonException) { return []; }
    }

    /// <summary>
    /// task_type SEQ_CLS: a classification head with the labels SparseTune records in the adapter (else the base
    /// config's); CAUSAL_LM: the LM head; otherwise the base's own head.
    /// </summary>
    public ArtifactHead HeadOf(string artifact)
    {
        var config = PeftLoraConfig.Load(artifact);
        ModelHead? head = PeftAdapterFormat.HeadOf(config.TaskType);
        string weights = Path.Combine(artifact, PeftAdapterFormat.WeightsFileName);
        // PEFT has no task type for multiple choice: SparseTune's own metadata names the head.
        var recorded = File.Exists(weights) ? MethodArtifacts.HeadFromRecordedLabels(weights) : new ArtifactHead(null, null);
        head ??= recorded.Head;
        return new ArtifactHead(head, head == ModelHead.SequenceClassification ? MethodArtifacts.RecordedLabels(weights) : null);
    }

    public IReadOnlyCollection<string> ApplyTo(TransformerModel model, string artifact)
    {
        using var tuner = LoraTuner.LoadAdapter(model, artifact);
        var covered = model.named_parameters().Select(p => p.name).Where(n => ModuleSelection.IsUnder(n, tuner.SavedModuleNames)).ToList();
        tuner.MergeAndDetach();
        return covered;
    }
}
