using SparseTune.Tokenization;

namespace SparseTune.Data;

/// <summary>Options of <see cref="QaFeatures.Build"/>; the defaults are Hugging Face run_qa.py's / BERT's run_squad.py's.</summary>
public sealed record QaFeatureOptions
{
    /// <summary>Most tokens of one feature, special tokens included (run_qa.py's max_seq_length).</summary>
    public int MaxLength { get; init; } = 384;

    /// <summary>
    /// Context tokens two consecutive windows share (the Hugging Face tokenizer's <c>stride</c>, as run_qa.py passes
    /// doc_stride): each window starts (room − DocStride) tokens after the previous one.
    /// </summary>
    public int DocStride { get; init; } = 128;

    /// <summary>Question tokens kept; longer questions lose their end (BERT run_squad.py's max_query_length).</summary>
    public int MaxQueryLength { get; init; } = 64;
}

/// <summary>
/// One window of one question's context, ready for the model: <see cref="Example"/> holds the ids, token types and
/// the training answer span; the rest maps its tokens back to the context.
/// </summary>
/// <param name="ExampleIndex">Index of the question in the list given to <see cref="QaFeatures.Build"/>.</param>
/// <param name="Offsets">Index for index with the example's InputIds: the token's character span in the context, null
/// for question and special tokens (Hugging Face's offset_mapping with non-context entries set to None).</param>
/// <param name="ContextStart">Index of the window's first context token.</param>
/// <param name="ContextEnd">Index after the window's last context token.</param>
public sealed record QaFeature(Example Example, int ExampleIndex, IReadOnlyList<CharSpan?> Offsets, int ContextStart, int ContextEnd);

/// <summary>
/// Splits extractive questions into model inputs as Hugging Face run_qa.py does (truncation="only_second",
/// return_overflowing_tokens, stride = doc_stride): the question (left-stripped, cut to MaxQueryLength tokens)
/// in front of overlapping windows of the context, as many windows as it takes to reach the context's end.
/// </summary>
public static class QaFeatures
{
    /// <summary>
    /// The features of every question, in order (all windows of question 0, then of question 1 ...). The training
    /// label of a window (<see cref="Example.AnswerSpan"/>) is the first answer's first and last token when the whole
    /// answer lies in the window, else (0, 0), the [CLS] / &lt;s&gt; position; impossible questions get (0, 0).
    /// </summary>
    /// <exception cref="ArgumentException">The options leave no room for context after a MaxQueryLength question
    /// and the special tokens, or DocStride is not smaller than that room.</exception>
    public static IReadOnlyList<QaFeature> Build(IReadOnlyList<QaExample> examples, ISpanEncoder encoder, QaFeatureOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentNullException.ThrowIfNull(encoder);
        options ??= new QaFeatureOptions();
        Validate(options, encoder.PairSpecialTokenCount);
        var features = new List<QaFeature>(examples.Count);
        for (int index = 0; index < examples.Count; index++) AddWindows(features, examples[index], index, encoder, options);
        return features;
    }

    /// <summary>Context tokens a window can hold next to the longest question: MaxLength − MaxQueryLength − special tokens.</summary>
    public static int MinContextRoom(QaFeatureOptions options, int pairSpecialTokens) => options.MaxLength - options.MaxQueryLength - pairSpecialTokens;

    static void Validate(QaFeatureOptions options, int specials)
    {
        var problems = new List<string>();
        if (options.MaxLength < 1) problems.Add($"MaxLength must be at least 1 (got {options.MaxLength})");
        if (options.MaxQueryLength < 1) problems.Add($"MaxQueryLength must be at least 1 (got {options.MaxQueryLength})");
        if (options.DocStride < 0) problems.Add($"DocStride must not be negative (got {options.DocStride})");
        int room = MinContextRoom(options, specials);
        if (problems.Count == 0 && room < 1)
            problems.Add($"MaxLength {options.MaxLength} leaves no room for context after a question of MaxQueryLength {options.MaxQueryLength} tokens and {specials} special tokens");
        else if (problems.Count == 0 && options.DocStride >= room)
            problems.Add($"DocStride {options.DocStride} must be smaller than the {room} context tokens a window holds " +
                         $"(MaxLength {options.MaxLength} − MaxQueryLength {options.MaxQueryLength} − {specials} special tokens), or windows would not advance");
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems), nameof(options));
    }

    static void AddWindows(List<QaFeature> features, QaExample example, int exampleIndex, ISpanEncoder encoder, QaFeatureOptions options)
    {
        // run_qa.py strips the question's left whitespace: some SQuAD questions start with many spaces.
        var question = encoder.EncodeWithOffsets(example.Question.TrimStart()).Ids;
        if (question.Count > options.MaxQueryLength) question = question.Take(options.MaxQueryLength).ToArray();
        var context = encoder.EncodeWithOffsets(example.Context);
        int room = options.MaxLength - question.Count - encoder.PairSpecialTokenCount;
        int step = room - options.DocStride;
        var answer = example.IsImpossible || example.Answers.Count == 0 ? null : example.Answers[0];

        // The windows of a Hugging Face tokenizers overflow: starts 0, step, 2·step ... up to the first that reaches the end.
        for (int start = 0; ; start += step)
        {
            int end = Math.Min(start + room, context.Ids.Count);
            var window = context.Ids.Skip(start).Take(end - start).ToArray();
            var pair = encoder.BuildPair(question, window);
            var offsets = new CharSpan?[pair.Ids.Count];
            for (int k = 0; k < window.Length; k++) offsets[pair.SecondStart + k] = context.Offsets[start + k];
            int contextStart = pair.SecondStart, contextEnd = pair.SecondStart + window.Length;
            var span = answer is null ? (0, 0) : AnswerTokens(offsets, contextStart, contextEnd, answer);
            var input = new Example([.. pair.Ids], [.. pair.TokenTypeIds]) { AnswerSpan = span, SourceLine = example.SourceLine, RowId = example.Id };
            features.Add(new QaFeature(input, exampleIndex, offsets, contextStart, contextEnd));
            if (end >= context.Ids.Count) break;
        }
    }

    /// <summary>
    /// The answer's first and last token in the window as run_qa.py finds them: (0, 0) unless the window's context
    /// starts at or before the answer's first character and ends at or after its last; then the last token starting
    /// at or before the answer's start and the first token (from the end) ending at or after the answer's end.
    /// </summary>
    static (int Start, int End) AnswerTokens(CharSpan?[] offsets, int contextStart, int contextEnd, QaAnswer answer)
    {
        if (contextEnd <= contextStart) return (0, 0);
        if (offsets[contextStart]!.Value.Start > answer.Start || offsets[contextEnd - 1]!.Value.End < answer.End) return (0, 0);
        int first = contextStart;
        while (first + 1 < contextEnd && offsets[first + 1]!.Value.Start <= answer.Start) first++;
        int last = contextEnd - 1;
        while (last - 1 >= contextStart && offsets[last - 1]!.Value.End >= answer.End) last--;
        return (first, Math.Max(first, last));
    }
}
