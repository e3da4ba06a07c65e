namespace SparseTune.Training;

/// <summary>What the model learns to predict; decides the loss and the metrics.</summary>
/// <summary>
/// What a batch's labels are and how the loss reads the logits: class ids, regression targets, next tokens, masked
/// tokens, answer spans (start/end token of extractive QA), or the index of the correct choice (multiple choice).
/// </summary>
public enum TaskKind { Classification, Regression, CausalLM, MaskedLM, QuestionAnswering, MultipleChoice }

/// <summary>Options of the one training loop every method uses. Defaults follow transformers' Trainer.</summary>
public sealed record TrainingOptions
{
    public int Epochs { get; init; } = 3;
    /// <summary>Optimizer steps; overrides Epochs when set.</summary>
    public int? MaxSteps { get; init; }
    public int BatchSize { get; init; } = 16;
    public int GradientAccumulation { get; init; } = 1;
    public double LearningRate { get; init; } = 5e-5;
    public double WeightDecay { get; init; } = 0.01;
    public ScheduleKind Schedule { get; init; } = ScheduleKind.Linear;
    /// <summary>Fraction of total steps spent warming up (ignored when WarmupSteps is set).</summary>
    public double WarmupRatio { get; init; }
    /// <summary>Warm-up steps (capped at the run's steps).</summary>
    public int? WarmupSteps { get; init; }
    /// <summary>Global gradient-norm clip; 0 disables.</summary>
    public double MaxGradNorm { get; init; } = 1.0;
    /// <summary>AdamW's ε (torch's default).</summary>
    public double AdamEpsilon { get; init; } = 1e-8;
    /// <summary>Label smoothing of the cross-entropy losses (classification and language modelling), as torch's: 0 is none.</summary>
    public double LabelSmoothing { get; init; }
    /// <summary>Evaluate every N optimizer steps (0: only at the end).</summary>
    public int EvalEvery { get; init; }
    /// <summary>
    /// Stop when the main eval metric (<see cref="Metrics.MetricSet.MainMetric"/>) has not improved for this many evaluations
    /// in a row (needs <see cref="EvalEvery"/>); null: train to the end. Only evaluations after the method's last structural
    /// change count (<see cref="Tuners.Tuner.HasFinalStructure"/>).
    /// </summary>
    public int? EarlyStoppingPatience { get; init; }
    /// <summary>
    /// Ship the weights of the best evaluation, not the last (needs <see cref="EvalEvery"/>): the tensors training changes
    /// are copied at each new best and restored before the method finishes; the state after the last step is evaluated
    /// as a candidate too. Candidates as for <see cref="EarlyStoppingPatience"/>.
    /// </summary>
    public bool KeepBest { get; init; }
    /// <summary>Checkpoint every N optimizer steps (0: none).</summary>
    public int SaveEvery { get; init; }
    public int LogEvery { get; init; } = 10;
    public int Seed { get; init; } = 42;
    /// <summary>Evaluate the untuned model first, for report.json's baseline_eval.</summary>
    public bool EvaluateBaseline { get; init; } = true;
    public string OutputDirectory { get; init; } = "runs/run";
    /// <summary>A checkpoint folder written by an earlier run (OUTPUT/checkpoint) to continue from.</summary>
    public string? ResumeFrom { get; init; }
    /// <summary>Recompute each transformer block in backward instead of keeping its activations (every method).</summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>fp32, or bf16 mixed precision (<see cref="Nn.Precision"/>): matrix products in bf16, master weights, loss and AdamW in float32.</summary>
    public Nn.Precision Precision { get; init; }
    /// <summary>
    /// Modules trained in full beside the method's own tensors, for every method (PEFT's modules_to_save, SIFT's
    /// exception modules), matched as PEFT does. Null: the task head for classification, nothing for a language model.
    /// </summary>
    public IReadOnlyList<string>? TrainedModules { get; init; }

    /// <summary>Names whose parameters get no weight decay (biases and norms, as the transformers examples).</summary>
    public static bool IsNoDecay(string parameterName) =>
        parameterName.EndsWith(".bias", StringComparison.Ordinal) || parameterName == "bias"
        || parameterName.Contains("LayerNorm", StringComparison.Ordinal) || parameterName.Contains("layer_norm", StringComparison.Ordinal)
        || parameterName.Contains("ln_", StringComparison.Ordinal) || parameterName.Contains("norm.", StringComparison.Ordinal)
        || parameterName.Contains("layernorm", StringComparison.Ordinal)
        // Multiplicative gates a method learns (Light-PEFT's head and neuron masks): decay would pull them to 0.
        || parameterName.EndsWith("_mask", StringComparison.Ordinal);

    /// <summary>True when early stopping or --keep-best follow the evaluations.</summary>
    public bool FollowsBestEvaluation => EarlyStoppingPatience is not null || KeepBest;

    /// <summary>"--keep-best needs …" (or "… and … need …"), naming the flags of <see cref="FollowsBestEvaluation"/> that are set.</summary>
    public string BestEvaluationNeeds(string what)
    {
        var flags = new[] { EarlyStoppingPatience is not null ? "--early-stopping-patience" : null, KeepBest ? "--keep-best" : null }.OfType<string>().ToList();
        return $"{string.Join(" and ", flags)} {(flags.Count > 1 ? "need" : "needs")} {what}";
    }

    /// <summary>Every problem with the options, all at once (empty when valid).</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (Epochs <= 0 && MaxSteps is null) problems.Add("--epochs must be positive");
        if (MaxSteps is <= 0) problems.Add("--max-steps must be positive");
        if (BatchSize <= 0) problems.Add("--batch-size must be positive");
        if (GradientAccumulation <= 0) problems.Add("--grad-accum must be positive");
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) problems.Add("--lr must be a positive number");
        if (WeightDecay < 0) problems.Add("--weight-decay must be ≥ 0");
        if (WarmupRatio is < 0 or >= 1) problems.Add("--warmup-ratio must be in [0, 1)");
        if (WarmupSteps is < 0) problems.Add("--warmup-steps must be ≥ 0");
        if (MaxGradNorm < 0) problems.Add("--max-grad-norm must be ≥ 0");
        if (!(AdamEpsilon > 0) || double.IsInfinity(AdamEpsilon)) problems.Add("--adam-epsilon must be a positive number");
        if (!(LabelSmoothing >= 0 && LabelSmoothing < 1)) problems.Add("--label-smoothing must be in [0, 1)");
        if (EvalEvery < 0) problems.Add("--eval-every must be ≥ 0");
        if (SaveEvery < 0) problems.Add("--save-every must be ≥ 0");
        if (EarlyStoppingPatience is < 1) problems.Add("--early-stopping-patience must be at least 1");
        if (FollowsBestEvaluation && EvalEvery == 0) problems.Add(BestEvaluationNeeds("evaluations during training: set --eval-every N"));
        if (TrainedModules is { Count: 0 } || TrainedModules?.Any(string.IsNullOrWhiteSpace) == true)
            problems.Add("--modules-to-save: name at least one module, and no empty names (leave it unset for the task head)");
        return problems;
    }
}
