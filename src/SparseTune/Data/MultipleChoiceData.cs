using System.Globalization;
using System.Text.Json;

namespace SparseTune.Data;

/// <summary>One multiple-choice question: an optional context, the question, its choices and the correct one's index.</summary>
/// <param name="Label">Index of the correct choice; null in a file read for prediction without labels.</param>
public sealed record MultipleChoiceItem(string Id, string? Context, string Question, IReadOnlyList<string> Choices, int? Label)
{
    /// <summary>Physical line (from 1) of the item in its file.</summary>
    public int SourceLine { get; init; }
}

/// <summary>A loaded multiple-choice file.</summary>
public sealed record MultipleChoiceDataset(IReadOnlyList<MultipleChoiceItem> Items, int SkippedRows, IReadOnlyList<string> SkippedReasons);

/// <summary>
/// Multiple-choice JSONL: one object a line with <c>question</c>, an optional <c>context</c>, <c>choices</c> (a list of
/// at least two non-empty strings), <c>label</c> (the correct choice's index from 0, or its letter A, B, …) and an
/// optional <c>id</c> (default: the line number). Encoders read each choice as a sequence pair
/// (<see cref="EncoderExamples"/>, as Hugging Face's SWAG script: context first, then question and choice); decoders
/// score each choice's tokens after a prompt (<see cref="DecoderPrompt"/>) and train on the correct one
/// (<see cref="DecoderTrainingExamples"/>).
/// </summary>
public static class MultipleChoiceData
{
    public const string QuestionField = "question";
    public const string ContextField = "context";
    public const string ChoicesField = "choices";
    public const string LabelField = "label";

    /// <summary>Whether a JSONL line looks like this format (has "choices" and "question").</summary>
    public static bool Looks(JsonElement first) =>
        first.ValueKind == JsonValueKind.Object && first.TryGetProperty(ChoicesField, out _) && first.TryGetProperty(QuestionField, out _);

    /// <exception cref="DataFormatException">A bad row without <paramref name="skipBadRows"/>: invalid JSON, a missing
    /// or empty question, fewer than two choices, an empty choice, a label that names no choice.</exception>
    public static MultipleChoiceDataset Read(string path, bool skipBadRows = false, bool labelOptional = false)
    {
        var bad = new BadRows(path, skipBadRows);
        var items = new List<MultipleChoiceItem>();
        foreach (var line in TextLines.Read(path))
        {
            if (line.Text is null) { bad.Report(line.Number, "invalid UTF-8 bytes"); continue; }
            if (string.IsNullOrWhiteSpace(line.Text)) continue;
            string? problem;
            MultipleChoiceItem? item = null;
            try { problem = Parse(line.Text, line.Number, labelOptional, out item); }
            catch (JsonException e) { problem = $"invalid JSON: {e.Message}"; }
            if (problem is not null) { bad.Report(line.Number, problem); continue; }
            items.Add(item!);
        }
        return new MultipleChoiceDataset(items, bad.Count, bad.Reasons);
    }

    static string? Parse(string text, int lineNumber, bool labelOptional, out MultipleChoiceItem? item)
    {
        item = null;
        using var doc = JsonDocument.Parse(text);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) return "a line must be a JSON object";
        string? question = StringField(root, QuestionField);
        if (string.IsNullOrWhiteSpace(question)) return $"missing or empty '{QuestionField}'";
        string? context = StringField(root, ContextField);
        if (!root.TryGetProperty(ChoicesField, out var choicesElement) || choicesElement.ValueKind != JsonValueKind.Array)
            return $"'{ChoicesField}' must be a list of strings";
        var choices = new List<string>();
        foreach (var choice in choicesElement.EnumerateArray())
        {
            if (choice.ValueKind != JsonValueKind.String || string.IsNullOrWhiteSpace(choice.GetString()))
                return $"choice {choices.Count} is {(choice.ValueKind == JsonValueKind.String ? "empty" : "not a string")}";
            choices.Add(choice.GetString()!);
        }
        if (choices.Count < 2) return $"{choices.Count} choice(s): a question needs at least two";
        int? label = null;
        if (root.TryGetProperty(LabelField, out var labelElement) && labelElement.ValueKind != JsonValueKind.Null)
        {
            label = LabelIndex(labelElement, choices.Count, out string? labelProblem);
            if (labelProblem is not null) return labelProblem;
        }
        else if (!labelOptional) return $"missing '{LabelField}'";
        string id = root.TryGetProperty("id", out var idElement) && idElement.ValueKind is JsonValueKind.String or JsonValueKind.Number
            ? idElement.ToString() : lineNumber.ToString(CultureInfo.InvariantCulture);
        item = new MultipleChoiceItem(id, string.IsNullOrWhiteSpace(context) ? null : context, question!, choices, label) { SourceLine = lineNumber };
        return null;
    }

    static string? StringField(JsonElement root, string name) =>
        root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    /// <summary>An index from 0 (a number or a numeric string) or a letter (A = 0).</summary>
    static int LabelIndex(JsonElement label, int choices, out string? problem)
    {
        problem = null;
        string raw = label.ToString().Trim();
        int index;
        if (label.ValueKind == JsonValueKind.Number ? label.TryGetInt32(out index)
            : int.TryParse(raw, NumberStyles.None, CultureInfo.InvariantCulture, out index)) { }
        else if (raw.Length == 1 && char.IsAsciiLetterUpper(raw[0])) index = raw[0] - 'A';
        else { problem = $"label '{raw}' is neither a choice index (0…{choices - 1}) nor a letter"; return -1; }
        if (index < 0 || index >= choices) { problem = $"label {raw} names no choice (there are {choices})"; return -1; }
        return index;
    }

    /// <summary>
    /// One example per item for an encoder's multiple-choice head: each choice is the pair (context, question + " " +
    /// choice), or (question, choice) without a context, truncated longest-first to <paramref name="maxLength"/>
    /// tokens. Every item must have as many choices as the first (a batch is (B, choices, T)).
    /// </summary>
    /// <exception cref="DataFormatException">An item with another number of choices than the first.</exception>
    public static IReadOnlyList<Example> EncoderExamples(string path, IReadOnlyList<MultipleChoiceItem> items, ITextEncoder encoder, int maxLength)
    {
        var examples = new List<Example>(items.Count);
        foreach (var item in items)
        {
            if (item.Choices.Count != items[0].Choices.Count)
                throw new DataFormatException(path, item.SourceLine,
                    $"{item.Choices.Count} choices where the first question (line {items[0].SourceLine}) has {items[0].Choices.Count}; an encoder's multiple-choice batches need the same number in every question");
            var choices = item.Choices.Select(choice =>
            {
                var (ids, types) = item.Context is null
                    ? Truncation.EncodePair(encoder, item.Question, choice, maxLength)
                    : Truncation.EncodePair(encoder, item.Context, item.Question + " " + choice, maxLength);
                return new Example(ids, types);
            }).ToList();
            examples.Add(new Example(choices[0].InputIds, choices[0].TokenTypeIds, item.Label ?? 0) { Choices = choices, SourceLine = item.SourceLine, RowId = item.Id });
        }
        return examples;
    }

    /// <summary>What a decoder reads before the choices: the context (when there is one) and the question on its own line.</summary>
    public static string DecoderPrompt(MultipleChoiceItem item) => item.Context is null ? item.Question : item.Context + "\n" + item.Question;

    /// <summary>A choice as the continuation of <see cref="DecoderPrompt"/>: after one space, as the likelihood scorers of lm-evaluation-harness do.</summary>
    public static string DecoderContinuation(string choice) => " " + choice;

    /// <summary>
    /// The prompt's ids (with the encoder's special-token prefix, e.g. Llama's BOS) and each choice's continuation ids
    /// (no special tokens), encoded separately so the boundary is exact. A prompt too long for
    /// <paramref name="maxLength"/> with its longest choice loses tokens from its start (the question stays).
    /// </summary>
    public static (int[] Prompt, int[][] Choices) DecoderTokens(MultipleChoiceItem item, ITextEncoder encoder, int maxLength)
    {
        int[] prompt = Truncation.EncodeWithoutSuffix(encoder, DecoderPrompt(item));
        int[][] choices = item.Choices.Select(c => encoder.Encode(DecoderContinuation(c), addSpecialTokens: false).ToArray()).ToArray();
        int longest = choices.Max(c => c.Length);
        if (longest >= maxLength) choices = choices.Select(c => c.Take(maxLength - 1).ToArray()).ToArray();
        int room = maxLength - Math.Min(longest, maxLength - 1);
        if (prompt.Length > room) prompt = prompt[^room..];
        return (prompt, choices);
    }

    /// <summary>
    /// Causal-LM training examples for a decoder: the prompt followed by the correct choice, the loss on the choice's
    /// tokens only (the prompt's labels are -100), as instruction tuning on the answer.
    /// </summary>
    public static IReadOnlyList<Example> DecoderTrainingExamples(IReadOnlyList<MultipleChoiceItem> items, ITextEncoder encoder, int maxLength)
    {
        var examples = new List<Example>(items.Count);
        foreach (var item in items)
        {
            if (item.Label is not int label) continue;
            var (prompt, choices) = DecoderTokens(item, encoder, maxLength);
            int[] answer = choices[label];
            examples.Add(new Example([.. prompt, .. answer], LabelIds: [.. Enumerable.Repeat(LanguageModelData.IgnoreIndex, prompt.Length), .. answer])
            {
                SourceLine = item.SourceLine,
                RowId = item.Id,
            });
        }
        return examples;
    }
}
