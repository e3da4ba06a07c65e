using SparseTune.Data;

namespace SparseTune.Evaluation;

/// <summary>Which MMLU split is evaluated: the files under <c>test/</c> (SUBJECT_test.csv) or <c>val/</c> (SUBJECT_val.csv).</summary>
public enum MmluSplit { Test, Val }

/// <summary>One MMLU question as its CSV row holds it.</summary>
/// <param name="Line">Physical line (from 1) where its row starts in <paramref name="File"/>.</param>
/// <param name="Choices">The four options, A to D.</param>
/// <param name="Answer">The right option: 0 (A) to 3 (D).</param>
public sealed record MmluQuestion(string File, int Line, string Question, IReadOnlyList<string> Choices, int Answer)
{
    public string AnswerLetter => MmluData.Letters[Answer];
}

/// <summary>One subject: its evaluated questions and its few-shot examples.</summary>
/// <param name="Name">The file name's subject part, e.g. "high_school_physics".</param>
/// <param name="Dev">Rows of DIR/dev/SUBJECT_dev.csv in file order (the shots); empty when there is no dev file.</param>
/// <param name="DevFile">The dev file; null when the subject has none.</param>
public sealed record MmluSubject(string Name, string File, IReadOnlyList<MmluQuestion> Questions, IReadOnlyList<MmluQuestion> Dev, string? DevFile);

/// <summary>
/// The MMLU release layout (Hendrycks et al., github.com/hendrycks/test): <c>DIR/dev/SUBJECT_dev.csv</c> (five
/// few-shot examples a subject), <c>DIR/val/SUBJECT_val.csv</c>, <c>DIR/test/SUBJECT_test.csv</c>; header-less CSV
/// rows of question, A, B, C, D, answer letter, RFC 4180 quoting. And the prompt of the release's <c>evaluate.py</c>,
/// which the LLaMA-era scripts (chain-of-thought-hub, QLoRA's and SIFT's MMLU evaluation) kept as it is.
/// </summary>
public static class MmluData
{
    /// <summary>The option letters, A to D.</summary>
    public static IReadOnlyList<string> Letters => letters;
    static readonly string[] letters = ["A", "B", "C", "D"];

    /// <summary>The folder and file suffix of a split: ("test", "_test.csv").</summary>
    public static (string Folder, string Suffix) SplitFiles(MmluSplit split) =>
        split == MmluSplit.Val ? ("val", "_val.csv") : ("test", "_test.csv");

    /// <summary>
    /// The subjects of <paramref name="directory"/>'s split (all, or those named in <paramref name="subjects"/>),
    /// sorted by name as <c>evaluate.py</c> does, each with its dev examples when DIR/dev has them.
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder or its split folder is missing.</exception>
    /// <exception cref="InvalidDataException">No SUBJECT_test.csv files, or a subject asked for is not there.</exception>
    /// <exception cref="DataFormatException">A bad row (FILE:LINE).</exception>
    public static IReadOnlyList<MmluSubject> Load(string directory, MmluSplit split = MmluSplit.Test, IReadOnlyCollection<string>? subjects = null)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"MMLU folder not found: {directory}");
        var (folder, suffix) = SplitFiles(split);
        string splitDirectory = Path.Combine(directory, folder);
        if (!Directory.Exists(splitDirectory))
            throw new DirectoryNotFoundException($"{directory} has no {folder}/ folder (the MMLU layout: {folder}/SUBJECT{suffix}, dev/SUBJECT_dev.csv)");
        var files = Directory.GetFiles(splitDirectory, "*" + suffix)
            .Select(f => (Subject: Path.GetFileName(f)[..^suffix.Length], File: f))
            .Where(s => s.Subject.Length > 0)
            .OrderBy(s => s.Subject, StringComparer.Ordinal)
            .ToList();
        if (files.Count == 0) throw new InvalidDataException($"{splitDirectory} has no SUBJECT{suffix} files");
        if (subjects is { Count: > 0 })
        {
            var missing = subjects.Where(s => files.All(f => f.Subject != s)).ToList();
            if (missing.Count > 0)
                throw new InvalidDataException($"{splitDirectory} has no subject {string.Join(", ", missing)} (it has: {string.Join(", ", files.Select(f => f.Subject))})");
            files = files.Where(f => subjects.Contains(f.Subject)).ToList();
        }

        var loaded = new List<MmluSubject>(files.Count);
        foreach (var (subject, file) in files)
        {
            var questions = ReadFile(file);
            if (questions.Count == 0) throw new InvalidDataException($"{file}: no questions");
            string devFile = Path.Combine(directory, "dev", subject + "_dev.csv");
            bool hasDev = File.Exists(devFile);
            loaded.Add(new MmluSubject(subject, file, questions, hasDev ? ReadFile(devFile) : [], hasDev ? devFile : null));
        }
        return loaded;
    }

    /// <summary>The questions of one header-less MMLU CSV file.</summary>
    /// <exception cref="DataFormatException">A row that is not six fields, or whose answer is not A, B, C or D.</exception>
    public static IReadOnlyList<MmluQuestion> ReadFile(string path)
    {
        var questions = new List<MmluQuestion>();
        foreach (var record in TableFile.ReadHeaderlessCsv(path))
        {
            if (record.Error is not null) throw new DataFormatException(path, record.Line, record.Error);
            var fields = record.Fields!;
            if (fields.Count != 6)
                throw new DataFormatException(path, record.Line, $"expected 6 fields (question, A, B, C, D, answer), found {fields.Count}");
            int answer = Array.IndexOf(letters, fields[5].Trim());
            if (answer < 0) throw new DataFormatException(path, record.Line, $"the answer '{fields[5]}' is not A, B, C or D");
            questions.Add(new MmluQuestion(path, record.Line, fields[0], [fields[1], fields[2], fields[3], fields[4]], answer));
        }
        return questions;
    }

    /// <summary>
    /// "The following are multiple choice questions (with answers) about {subject}.\n\n". As in
    /// <c>evaluate.py</c>'s format_subject, every word of the subject gets a leading space, so "about" is followed by
    /// two spaces ("about  high school physics."); models were compared on exactly this text.
    /// </summary>
    public static string Header(string subject) =>
        "The following are multiple choice questions (with answers) about " + string.Concat(subject.Split('_').Select(word => " " + word)) + ".\n\n";

    /// <summary>"question\nA. …\nB. …\nC. …\nD. …\nAnswer:", and for a shot the answer after it: " B\n\n".</summary>
    public static string FormatQuestion(MmluQuestion question, bool includeAnswer)
    {
        var text = new System.Text.StringBuilder(question.Question);
        for (int j = 0; j < question.Choices.Count; j++) text.Append('\n').Append(Letters[j]).Append(". ").Append(question.Choices[j]);
        text.Append("\nAnswer:");
        if (includeAnswer) text.Append(' ').Append(question.AnswerLetter).Append("\n\n");
        return text.ToString();
    }

    /// <summary>The header, the first <paramref name="shots"/> dev examples with their answers, then the question without its answer.</summary>
    public static string Prompt(string subject, IReadOnlyList<MmluQuestion> dev, int shots, MmluQuestion question)
    {
        if (shots < 0 || shots > dev.Count) throw new ArgumentOutOfRangeException(nameof(shots), $"{shots} shots from {dev.Count} dev examples");
        var text = new System.Text.StringBuilder(Header(subject));
        for (int i = 0; i < shots; i++) text.Append(FormatQuestion(dev[i], includeAnswer: true));
        return text.Append(FormatQuestion(question, includeAnswer: false)).ToString();
    }
}
