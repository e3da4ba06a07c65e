using System.Text.Json;
using System.Text.Json.Nodes;
using SparseTune.IO;
using SparseTune.Models;

namespace SparseTune.Tuners.Lora;

/// <summary>
/// The Hugging Face PEFT on-disk layout of a LoRA adapter, so <c>PeftModel.from_pretrained(base, dir)</c> loads
/// what SparseTune writes and the other way round:
/// <code>
///   adapter_config.json          LoraConfig fields (peft_type "LORA", r, lora_alpha, target_modules, …), keys sorted
///   adapter_model.safetensors    base_model.model.&lt;module&gt;.lora_A.weight  (r, in_features)
///                                base_model.model.&lt;module&gt;.lora_B.weight  (out_features, r)
///                                base_model.model.&lt;module to save&gt;.&lt;param&gt;  full tensor (e.g. classifier.weight)
///                                metadata {"format": "pt"}
/// </code>
/// Checked against huggingface/peft: utils/save_and_load.py (get_peft_model_state_dict keeps "lora_" keys for
/// bias="none", drops the adapter name; ModulesToSaveWrapper.adapter_state_dict in utils/other.py saves
/// modules_to_save under the wrapped module's own name), utils/constants.py (file names), tuners/lora/layer.py
/// (lora_A = Linear(in, r), lora_B = Linear(r, out) also for GPT-2's Conv1D, whose fan_in_fan_out only transposes
/// the merged delta), peft_model.py (the "base_model.model." prefix, inference_mode=True when saving).
/// </summary>
public static class PeftAdapterFormat
{
    public const string ConfigFileName = "adapter_config.json";
    public const string WeightsFileName = "adapter_model.safetensors";

    /// <summary>PeftModel's prefix on every key: PeftModel.base_model (LoraModel) .model (the transformers model).</summary>
    public const string KeyPrefix = "base_model.model.";

    /// <summary>Safetensors metadata key (ignored by PEFT) holding the classification labels as id2label JSON.</summary>
    public const string Id2LabelMetadataKey = MethodArtifacts.Id2LabelMetadataKey;

    /// <summary>PEFT's TaskType for a head; null for masked-LM models (PEFT has no task type for them).</summary>
    public static string? TaskTypeOf(ModelHead head) => head switch
    {
        ModelHead.SequenceClassification => "SEQ_CLS",
        ModelHead.CausalLM => "CAUSAL_LM",
        ModelHead.QuestionAnswering => "QUESTION_ANS",
        _ => null,
    };

    /// <summary>The head a PEFT task type implies; null when the type does not fix one.</summary>
    public static ModelHead? HeadOf(string? taskType) => taskType switch
    {
        "SEQ_CLS" => ModelHead.SequenceClassification,
        "CAUSAL_LM" => ModelHead.CausalLM,
        "QUESTION_ANS" => ModelHead.QuestionAnswering,
        _ => null,
    };

    public static string LoraAKey(string module) => $"{KeyPrefix}{module}.lora_A.weight";
    public static string LoraBKey(string module) => $"{KeyPrefix}{module}.lora_B.weight";
}

/// <summary>The fields of adapter_config.json that SparseTune writes and reads.</summary>
public sealed record PeftLoraConfig
{
    public int R { get; init; }
    public double LoraAlpha { get; init; }
    public double LoraDropout { get; init; }
    public IReadOnlyList<string> TargetModules { get; init; } = [];
    public IReadOnlyList<string>? ModulesToSave { get; init; }
    public string? TaskType { get; init; }
    public string? BaseModelNameOrPath { get; init; }
    /// <summary>True for GPT-2: Hugging Face stores its Conv1D weights (in, out), so PEFT transposes the merged delta.</summary>
    public bool FanInFanOut { get; init; }
    public string Bias { get; init; } = "none";
    /// <summary>Per-module ranks that differ from r (PEFT's rank_pattern), e.g. after ranks were dropped; keys match as PEFT's get_pattern_key.</summary>
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();
    /// <summary>Per-module lora_alpha that differs from lora_alpha (PEFT's alpha_pattern).</summary>
    public IReadOnlyDictionary<string, double> AlphaPattern { get; init; } = new Dictionary<string, double>();
    /// <summary>True when target_modules was one string: PEFT then matches it as a regular expression on the full module name.</summary>
    public bool TargetModulesIsRegex { get; init; }
    /// <summary>PEFT's exclude_modules: modules never adapted (names, suffix rule).</summary>
    public IReadOnlyList<string> ExcludeModules { get; init; } = [];

    /// <summary>Fields read and applied (or checked against the weights file) by SparseTune.</summary>
    static readonly HashSet<string> HonouredFields =
    [
        "peft_type", "r", "lora_alpha", "lora_dropout", "bias", "use_dora", "use_rslora", "rank_pattern", "alpha_pattern",
        "target_modules", "exclude_modules", "modules_to_save", "task_type", "base_model_name_or_path", "fan_in_fan_out",
    ];

    /// <summary>Fields that change the adapter's arithmetic or layout when set: accepted only at their default.</summary>
    static readonly Dictionary<string, string> DefaultOnlyFields = new()
    {
        ["layers_to_transform"] = "adapting only some layers",
        ["layers_pattern"] = "the layer naming for layers_to_transform",
        ["layer_replication"] = "layer replication",
        ["lora_bias"] = "a trained bias on lora_B",
        ["trainable_token_indices"] = "trained token embeddings",
        ["target_parameters"] = "LoRA on parameters instead of modules",
        ["use_qalora"] = "QA-LoRA",
        ["megatron_config"] = "Megatron parallel layers",
    };

    /// <summary>Fields that only matter while creating or training an adapter (initialisation, runtime, bookkeeping).</summary>
    static readonly HashSet<string> BenignFields =
    [
        "inference_mode", "init_lora_weights", "revision", "auto_mapping", "megatron_core", "loftq_config", "runtime_config",
        "eva_config", "corda_config", "qalora_group_size", "peft_version",
    ];

    static bool IsEmpty(JsonNode? value) => value switch
    {
        null => true,
        JsonValue v when v.TryGetValue(out bool b) => !b,
        JsonValue v when v.TryGetValue(out string? s) => string.IsNullOrEmpty(s),
        JsonArray a => a.Count == 0,
        JsonObject o => o.Count == 0,
        _ => false,
    };

    /// <summary>
    /// Whether PEFT would adapt <paramref name="moduleName"/> by target_modules and exclude_modules: a list matches by
    /// name suffix, one string as a regular expression on the full name ("all-linear": every block linear).
    /// </summary>
    public bool Targets(string moduleName)
    {
        if (ExcludeModules.Any(e => moduleName == e || moduleName.EndsWith("." + e, StringComparison.Ordinal))) return false;
        if (TargetModules.Count == 0 || TargetModules is [LoraOptions.AllLinear]) return true;
        return TargetModulesIsRegex
            ? System.Text.RegularExpressions.Regex.IsMatch(moduleName, $"^(?:{TargetModules[0]})$")
            : TargetModules.Any(t => moduleName == t || moduleName.EndsWith("." + t, StringComparison.Ordinal));
    }

    /// <summary>
    /// The rank and alpha of one module: PEFT's get_pattern_key picks the first pattern key that matches the module
    /// name as a regular expression <c>(.*\.)?KEY$</c>, else the global r and lora_alpha.
    /// </summary>
    public (int Rank, double Alpha) For(string moduleName)
    {
        static string? Key(IEnumerable<string> keys, string name) =>
            keys.FirstOrDefault(k => System.Text.RegularExpressions.Regex.IsMatch(name, $"^(.*\\.)?{k}$"));
        int rank = Key(RankPattern.Keys, moduleName) is { } rk ? RankPattern[rk] : R;
        double alpha = Key(AlphaPattern.Keys, moduleName) is { } ak ? AlphaPattern[ak] : LoraAlpha;
        return (rank, alpha);
    }

    /// <summary>Writes adapter_config.json as PEFT's save_pretrained does (indent 2, sorted keys).</summary>
    public void Save(string directory)
    {
        static JsonArray? List(IReadOnlyList<string>? names) => names is null ? null : new JsonArray(names.Select(n => (JsonNode?)JsonValue.Create(n)).ToArray());
        // lora_alpha is an int in PEFT's LoraConfig; keep whole numbers integral so the file reads like PEFT's own.
        JsonNode alpha = LoraAlpha == Math.Floor(LoraAlpha) && Math.Abs(LoraAlpha) < int.MaxValue ? JsonValue.Create((int)LoraAlpha) : JsonValue.Create(LoraAlpha);
        var fields = new SortedDictionary<string, JsonNode?>(StringComparer.Ordinal)
        {
            ["alpha_pattern"] = new JsonObject(AlphaPattern.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)JsonValue.Create(p.Value)))),
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = BaseModelNameOrPath,
            ["bias"] = Bias,
            ["fan_in_fan_out"] = FanInFanOut,
            ["inference_mode"] = true,
            ["init_lora_weights"] = true,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = alpha,
            ["lora_dropout"] = LoraDropout,
            ["modules_to_save"] = List(ModulesToSave),
            ["peft_type"] = "LORA",
            ["r"] = R,
            ["rank_pattern"] = new JsonObject(RankPattern.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)JsonValue.Create(p.Value)))),
            ["revision"] = null,
            ["target_modules"] = List(TargetModules),
            ["task_type"] = TaskType,
            ["use_dora"] = false,
            ["use_rslora"] = false,
        };
        var root = new JsonObject();
        foreach (var (key, value) in fields) root[key] = value;
        Directory.CreateDirectory(directory);
        AtomicFile.WriteAllText(Path.Combine(directory, PeftAdapterFormat.ConfigFileName), root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// Reads DIR/adapter_config.json. Options that change the arithmetic and that SparseTune does not implement
    /// (DoRA, rsLoRA, per-module rank/alpha patterns, trained biases) are refused, naming each.
    /// </summary>
    public static PeftLoraConfig Load(string directory)
    {
        string file = Path.Combine(directory, PeftAdapterFormat.ConfigFileName);
        if (!File.Exists(file)) throw new FileNotFoundException($"no {PeftAdapterFormat.ConfigFileName} in {directory}", file);
        JsonNode root;
        try { root = JsonNode.Parse(File.ReadAllText(file)) ?? throw new InvalidDataException($"{file} is empty"); }
        catch (JsonException e) { throw new InvalidDataException($"{file}: invalid JSON: {e.Message}"); }

        var problems = new List<string>();
        string? peftType = Str("peft_type");
        if (peftType != "LORA") problems.Add($"peft_type is '{peftType ?? "(missing)"}', expected 'LORA'");
        int r = root["r"] is JsonValue rv && rv.TryGetValue(out int ri) ? ri : 0;
        if (r < 1) problems.Add("r is missing or not a positive integer");
        double alpha = Num("lora_alpha", 8);          // PEFT's LoraConfig defaults
        double dropout = Num("lora_dropout", 0);
        string bias = Str("bias") ?? "none";
        // Every other field is honoured or refused by name: those that change what the adapter computes must be at
        // their default; unknown fields must be empty (a newer PEFT's field whose meaning SparseTune cannot know).
        foreach (var (key, value) in root.AsObject())
        {
            if (HonouredFields.Contains(key)) continue;
            if (DefaultOnlyFields.TryGetValue(key, out var what))
            {
                if (!IsEmpty(value)) problems.Add($"{key} ({what}) is not supported: it must be null, false or empty (got {value!.ToJsonString()})");
                continue;
            }
            if (!BenignFields.Contains(key) && !IsEmpty(value))
                problems.Add($"unknown field {key} = {value!.ToJsonString()}: SparseTune cannot tell what it changes");
        }
        bool targetsRegex = root["target_modules"] is JsonValue tv && tv.TryGetValue(out string? _);
        if (root["target_modules"] is not (null or JsonArray) && !targetsRegex) problems.Add("target_modules must be a list of names or a regular expression");
        if (root["target_modules"] is JsonArray targetList && targetList.Any(t => t is not JsonValue tj || !tj.TryGetValue(out string? _)))
            problems.Add("target_modules must hold only names");
        if (root["exclude_modules"] is JsonArray excluded && excluded.Any(t => t is not JsonValue ej || !ej.TryGetValue(out string? _)))
            problems.Add("exclude_modules must hold only names");
        if (bias != "none") problems.Add($"bias '{bias}' (trained biases) is not supported; only 'none'");
        if (Bool("use_dora")) problems.Add("use_dora (DoRA) is not supported");
        if (Bool("use_rslora")) problems.Add("use_rslora (rank-stabilised scaling) is not supported");
        var rankPattern = new Dictionary<string, int>();
        if (root["rank_pattern"] is JsonObject ranks)
            foreach (var (key, value) in ranks)
                if (value is JsonValue v && v.TryGetValue(out int rank) && rank >= 1) rankPattern[key] = rank;
                else problems.Add($"rank_pattern[{key}] is not a positive integer");
        var alphaPattern = new Dictionary<string, double>();
        if (root["alpha_pattern"] is JsonObject alphas)
            foreach (var (key, value) in alphas)
                if (value is JsonValue v && v.TryGetValue(out double a)) alphaPattern[key] = a;
                else problems.Add($"alpha_pattern[{key}] is not a number");
        if (problems.Count > 0) throw new NotSupportedException($"{file}: {string.Join("; ", problems)}");
        if (root["target_modules"] is JsonValue rx && rx.TryGetValue(out string? pattern) && pattern != LoraOptions.AllLinear)
        {
            try { _ = new System.Text.RegularExpressions.Regex(pattern); }
            catch (ArgumentException) { throw new NotSupportedException($"{file}: target_modules '{pattern}' is not a valid regular expression"); }
        }

        return new PeftLoraConfig
        {
            R = r,
            LoraAlpha = alpha,
            LoraDropout = dropout,
            // PEFT allows a single string (a regex, or "all-linear"); the weights file says which modules it hit.
            TargetModules = root["target_modules"] switch
            {
                JsonArray a => a.Select(n => n!.GetValue<string>()).ToList(),
                JsonValue v when v.TryGetValue(out string? s) => [s],
                _ => [],
            },
            TargetModulesIsRegex = targetsRegex,
            ExcludeModules = root["exclude_modules"] switch
            {
                JsonArray e => e.Select(n => n!.GetValue<string>()).ToList(),
                JsonValue e when e.TryGetValue(out string? one) => [one],
                _ => [],
            },
            ModulesToSave = root["modules_to_save"] is JsonArray m ? m.Select(n => n!.GetValue<string>()).ToList() : null,
            TaskType = Str("task_type"),
            BaseModelNameOrPath = Str("base_model_name_or_path"),
            FanInFanOut = Bool("fan_in_fan_out"),
            Bias = bias,
            RankPattern = rankPattern,
            AlphaPattern = alphaPattern,
        };

        string? Str(string key) => root[key] is JsonValue v && v.TryGetValue(out string? s) ? s : null;
        double Num(string key, double fallback)
        {
            if (root[key] is null) return fallback;
            if (root[key] is JsonValue v && v.TryGetValue(out double d) && double.IsFinite(d)) return d;
            problems.Add($"{key} must be a number (got {root[key]!.ToJsonString()})");
            return fallback;
        }
        bool Bool(string key) => root[key] is JsonValue v && v.TryGetValue(out bool b) && b;
    }
}
