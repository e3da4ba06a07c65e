namespace SparseTune.Data;

/// <summary>A bad row in a data file. The message reads <c>FILE:LINE: what is wrong</c>; LINE counts physical lines from 1.</summary>
public sealed class DataFormatException(string file, int line, string problem) : FormatException($"{file}:{line}: {problem}")
{
    public string File { get; } = file;

    /// <summary>Physical line (from 1) of the bad row; for a CSV record spanning lines, the line where it starts.</summary>
    public int Line { get; } = line;

    /// <summary>The message without the FILE:LINE prefix.</summary>
    public string Problem { get; } = problem;
}

/// <summary>Throws on the first bad row, or (SkipBadRows) counts them and keeps the first few reasons.</summary>
internal sealed class BadRows(string file, bool skip)
{
    public const int KeptReasons = 10;
    readonly List<string> reasons = [];

    public int Count { get; private set; }
    public IReadOnlyList<string> Reasons => reasons;

    /// <summary>Records a bad row; throws unless bad rows are being skipped.</summary>
    public void Report(int line, string problem)
    {
        var error = new DataFormatException(file, line, problem);
        if (!skip) throw error;
        Count++;
        if (reasons.Count < KeptReasons) reasons.Add(error.Message);
    }
}
