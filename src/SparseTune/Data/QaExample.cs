namespace SparseTune.Data;

/// <summary>A gold answer of an extractive question: its text and the character where it starts in the context.</summary>
public sealed record QaAnswer(string Text, int Start)
{
    /// <summary>Character after the answer's last: the answer is Context[Start..End].</summary>
    public int End => Start + Text.Length;
}

/// <summary>
/// One extractive question (SQuAD): a question about a context, its gold answers (the first is the training target;
/// evaluation takes the best over all), and whether it has no answer in the context (SQuAD 2.0).
/// </summary>
/// <param name="Id">The question's id (SQuAD's "id"; the line number in a JSONL file without ids).</param>
/// <param name="IsImpossible">No answer in the context: <see cref="Answers"/> is empty.</param>
public sealed record QaExample(string Id, string Question, string Context, IReadOnlyList<QaAnswer> Answers, bool IsImpossible)
{
    /// <summary>Title of the article the paragraph comes from (SQuAD JSON); null for JSONL.</summary>
    public string? Title { get; init; }

    /// <summary>Line (from 1) of the JSONL row, or of the question's "id" in a SQuAD JSON file.</summary>
    public int SourceLine { get; init; }
}

/// <summary>A loaded SQuAD file.</summary>
/// <param name="Version2">SQuAD 2.0: the file says "version": "v2.0" or has a question without an answer.</param>
/// <param name="SkippedReasons">The first few skipped questions' messages (FILE:LINE: what is wrong).</param>
public sealed record SquadDataset(IReadOnlyList<QaExample> Examples, bool Version2, int SkippedRows, IReadOnlyList<string> SkippedReasons);
