namespace SparseTune.Tuners.Lora;

/// <summary>
/// LoRA options (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"). Names follow PEFT's
/// LoraConfig: Rank = r, Alpha = lora_alpha, Dropout = lora_dropout. The random seed for lora_A's
/// initialisation is the caller's (torch's global generator).
/// </summary>
public sealed record LoraOptions : IMethodOptions
{
    /// <summary>PEFT's shorthand for "every linear layer except the output / classification head".</summary>
    public const string AllLinear = "all-linear";

    /// <summary>r: the inner dimension of B·A.</summary>
    public int Rank { get; init; } = 8;

    /// <summary>lora_alpha: the update is scaled by alpha / r, so changing r does not retune the learning rate.</summary>
    public double Alpha { get; init; } = 16;

    /// <summary>Dropout on the adapter's input (the base path sees x unchanged); training mode only.</summary>
    public double Dropout { get; init; } = 0.05;

    /// <summary>
    /// Module-name suffixes to adapt (PEFT's rule: a module is targeted when its name equals a target or ends
    /// with "." + target). Null: the family default PEFT uses (<see cref="DefaultTargetModules"/>);
    /// ["all-linear"]: every linear layer of the transformer blocks.
    /// </summary>
    public IReadOnlyList<string>? TargetModules { get; init; }

    /// <summary>alpha / r, the factor on B·A.</summary>
    public double Scaling => Alpha / Rank;

    /// <summary>True when the targets are PEFT's "all-linear" shorthand.</summary>
    public bool TargetsAllLinear =>
        TargetModules is [var only] && string.Equals(only, AllLinear, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// PEFT's per-family defaults (peft/utils/constants.py, TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING):
    /// the attention query and value projections.
    /// </summary>
    public static IReadOnlyList<string> DefaultTargetModules(string modelType) => modelType switch
    {
        "bert" or "roberta" => ["query", "value"],
        "gpt2" => ["c_attn"],
        "llama" or "mistral" or "qwen2" => ["q_proj", "v_proj"],
        _ => throw new ArgumentException($"no default LoRA target modules for model_type '{modelType}'; pass target modules explicitly", nameof(modelType)),
    };

    /// <summary>Every problem with these options, as CLI-ready sentences.</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (Rank < 1) problems.Add($"LoRA rank r must be at least 1 (got {Rank})");
        if (!(Alpha > 0) || double.IsInfinity(Alpha)) problems.Add($"LoRA alpha must be positive (got {Alpha})");
        if (!(Dropout >= 0 && Dropout < 1)) problems.Add($"LoRA dropout must be in [0, 1) (got {Dropout})");
        if (TargetModules is { Count: 0 }) problems.Add("LoRA target modules: name at least one module (or leave unset for the family default)");
        if (TargetModules is { Count: > 1 } && TargetModules.Any(t => string.Equals(t, AllLinear, StringComparison.OrdinalIgnoreCase)))
            problems.Add($"LoRA target modules: '{AllLinear}' cannot be combined with other names");
        if (TargetModules?.Any(string.IsNullOrWhiteSpace) == true) problems.Add("LoRA target modules include an empty name");
        return problems;
    }
}
