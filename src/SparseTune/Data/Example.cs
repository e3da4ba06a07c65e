namespace SparseTune.Data;

/// <summary>
/// One training example. <see cref="Label"/> is the class id or regression target (unused for language modelling);
/// <see cref="LabelIds"/> are the causal-LM labels, index for index with <see cref="InputIds"/> (the model shifts),
/// -100 where the loss must not count (Alpaca prompt tokens).
/// </summary>
public sealed record Example(int[] InputIds, int[]? TokenTypeIds = null, float Label = 0, int[]? LabelIds = null)
{
    /// <summary>Physical line (from 1) of the row or document the example came from; 0 when not from a file.</summary>
    public int SourceLine { get; init; }

    /// <summary>The row's own name from the file's id column (<see cref="ClassificationDataOptions.IdColumn"/>); null when none.</summary>
    public string? RowId { get; init; }

    /// <summary>
    /// Extractive QA (<see cref="Training.TaskKind.QuestionAnswering"/>): the token positions of the answer's first and
    /// last token in <see cref="InputIds"/>; (0, 0) — the [CLS] / &lt;s&gt; position — when the window holds no answer.
    /// </summary>
    public (int Start, int End) AnswerSpan { get; init; }

    /// <summary>
    /// Multiple choice (<see cref="Training.TaskKind.MultipleChoice"/>): one sequence per choice (its ids and token
    /// types; <see cref="Label"/> is the correct choice's index). <see cref="InputIds"/> is then the first choice's.
    /// </summary>
    public IReadOnlyList<Example>? Choices { get; init; }

    /// <summary>Longest sequence of the example: its own, or its longest choice's.</summary>
    public int Length => Choices is { Count: > 0 } choices ? choices.Max(c => c.InputIds.Length) : InputIds.Length;
}

/// <summary>A loaded classification or regression file.</summary>
/// <param name="Labels">Class names; <c>Examples[i].Label</c> indexes it. Empty for regression.</param>
/// <param name="SkippedReasons">The first few skipped rows' messages (FILE:LINE: what is wrong).</param>
public sealed record ClassificationDataset(IReadOnlyList<Example> Examples, IReadOnlyList<string> Labels, bool Regression,
    int SkippedRows, IReadOnlyList<string> SkippedReasons)
{
    /// <summary>False for a file read with <see cref="ClassificationDataOptions.LabelOptional"/> that has no label column: every Label is then 0 and meaningless.</summary>
    public bool HasLabels { get; init; } = true;

    public Training.TaskKind Task => Regression ? Training.TaskKind.Regression : Training.TaskKind.Classification;
}

/// <summary>A loaded causal-LM file: packed blocks (<see cref="LanguageModelData.FromText"/>) or masked prompts (Alpaca).</summary>
/// <param name="Tokens">Tokens the file encoded to, before packing dropped a remainder or truncation cut responses.</param>
public sealed record LanguageModelDataset(IReadOnlyList<Example> Examples, long Tokens, int SkippedRows, IReadOnlyList<string> SkippedReasons);
