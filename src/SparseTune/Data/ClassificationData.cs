using System.Globalization;

namespace SparseTune.Data;

/// <summary>Options of <see cref="ClassificationData.Load"/>.</summary>
public sealed record ClassificationDataOptions
{
    /// <summary>Column of the (first) text; default: the first of "text", "sentence", "sentence1" the file has.</summary>
    public string? TextColumn { get; init; }

    /// <summary>Column of the second text of a pair; default: "sentence2" when the file has it. "" means no pair.</summary>
    public string? TextPairColumn { get; init; }

    public string LabelColumn { get; init; } = "label";

    /// <summary>
    /// The file may lack <see cref="LabelColumn"/> (prediction input): its examples then carry no label and the
    /// dataset's <see cref="ClassificationDataset.HasLabels"/> is false. A file that has the column is read as usual.
    /// </summary>
    public bool LabelOptional { get; init; }

    /// <summary>
    /// A column naming each row (<see cref="Example.RowId"/>), used when the file has it; a row of such a file whose
    /// id is missing or empty is a bad row. Null: none.
    /// </summary>
    public string? IdColumn { get; init; }

    /// <summary>Most tokens of an example, special tokens included. Longer texts lose tokens from their end (of the
    /// longer text first, for pairs); the special tokens around them stay.</summary>
    public int MaxLength { get; init; } = 128;

    /// <summary>
    /// Fixed class names (pass the training set's <see cref="ClassificationDataset.Labels"/> when loading eval data):
    /// a label not among them is a bad row. Null: collected from this file — when every label is an integer, the
    /// labels are the ids themselves and the names are "0".."max"; otherwise the names in order of first appearance.
    /// </summary>
    public IReadOnlyList<string>? Labels { get; init; }

    /// <summary>
    /// Names of the class ids when the file's labels are all integers (a model's id2label): ids must then be below
    /// its count. Null: integer labels must be exactly 0…K−1, each used.
    /// </summary>
    public IReadOnlyList<string>? IdLabels { get; init; }

    /// <summary>Float targets (STS-B). Off: a label that is a non-integer number is an unknown label.</summary>
    public bool Regression { get; init; }

    /// <summary>Skip bad rows (counted in <see cref="ClassificationDataset.SkippedRows"/>) instead of throwing.</summary>
    public bool SkipBadRows { get; init; }

    public TableFormat Format { get; init; } = TableFormat.Auto;
}

/// <summary>
/// Sequence-classification and regression data from CSV (header row, RFC 4180 quoting), TSV (header row, no
/// quoting) or JSONL (one object a line) files.
/// </summary>
public static class ClassificationData
{
    static readonly string[] DefaultTextColumns = ["text", "sentence", "sentence1"];
    const string DefaultPairColumn = "sentence2";

    /// <exception cref="DataFormatException">A bad row (missing field, empty text, unknown label, invalid JSON,
    /// undecodable UTF-8 …) without SkipBadRows, or a bad header / missing column (always).</exception>
    public static ClassificationDataset Load(string path, ITextEncoder encoder, ClassificationDataOptions? options = null)
    {
        options ??= new ClassificationDataOptions();
        if (options.MaxLength < 1) throw new ArgumentOutOfRangeException(nameof(options), "MaxLength must be at least 1");
        if (options.Regression && options.Labels is not null) throw new ArgumentException("Labels cannot be set for regression data");
        var table = TableFile.Read(path, options.Format);
        var (textColumn, pairColumn, labelColumn) = ResolveColumns(table, options);
        string? idColumn = options.IdColumn is { } named && table.Columns.Contains(named) ? named : null;
        var bad = new BadRows(path, options.SkipBadRows);
        Dictionary<string, int>? fixedIds = null;
        if (options.Labels is { } fixedLabels)
        {
            fixedIds = [];
            for (int i = 0; i < fixedLabels.Count; i++) fixedIds.TryAdd(fixedLabels[i], i);
        }

        var rows = new List<(int Line, int[] Ids, int[]? Types, string Label, float Value, string? RowId)>();
        foreach (var record in table.Records)
        {
            if (record.Error is not null) { bad.Report(record.Line, record.Error); continue; }
            var fields = record.Fields!;
            string? problem = null;
            string? rowId = idColumn is null ? null : Field(fields, idColumn, "id", ref problem);
            string? text = Field(fields, textColumn, "text", ref problem);
            string? pair = pairColumn is null ? null : Field(fields, pairColumn, "text", ref problem);
            string? label = labelColumn is null ? "" : Field(fields, labelColumn, "label", ref problem);
            if (problem is null && labelColumn is not null && record.StructuredFields?.Contains(labelColumn) == true)
                problem = $"label {label} is a JSON {(label is "true" or "false" ? "boolean" : label![0] == '[' ? "list" : "object")}; labels are strings or integers";
            float value = 0;
            if (problem is null && labelColumn is not null)
            {
                if (options.Regression)
                {
                    if (!double.TryParse(label, NumberStyles.Float, CultureInfo.InvariantCulture, out double target) || !double.IsFinite(target))
                        problem = $"label '{label}' is not a number";
                    else value = (float)target;
                }
                else if (fixedIds is not null)
                {
                    // A given label list: a name, or an integer id into the list.
                    if (fixedIds.TryGetValue(label!, out int id)) value = id;
                    else if (IsInteger(label!, out long given) && given >= 0 && given < options.Labels!.Count) { value = given; label = options.Labels[(int)given]; }
                    else problem = $"unknown label '{label}' (labels: {string.Join(", ", options.Labels!)})";
                }
                else if (!IsInteger(label!, out _) && double.TryParse(label, NumberStyles.Float, CultureInfo.InvariantCulture, out _))
                    problem = $"unknown label '{label}': a non-integer number (set Regression for float targets)";
            }
            if (problem is not null) { bad.Report(record.Line, problem); continue; }

            int[] ids; int[]? types = null;
            if (pair is null) ids = Truncation.EncodeSingle(encoder, text!, options.MaxLength);
            else (ids, types) = Truncation.EncodePair(encoder, text!, pair, options.MaxLength);
            rows.Add((record.Line, ids, types, label!, value, rowId));
        }

        IReadOnlyList<string> labels = options.Labels ?? [];
        if (!options.Regression && fixedIds is null && labelColumn is not null)
        {
            var collected = CollectLabels(path, rows.Select(r => (r.Line, r.Label)).ToList(), bad, options.IdLabels);
            labels = collected.Names;
            for (int i = 0; i < rows.Count; i++)
                rows[i] = rows[i] with { Value = collected.Ids.TryGetValue(rows[i].Label, out int id) ? id : -1 };
            rows.RemoveAll(r => r.Value < 0);
        }

        var examples = rows.Select(r => new Example(r.Ids, r.Types, r.Value) { SourceLine = r.Line, RowId = r.RowId }).ToList();
        return new ClassificationDataset(examples, labels, options.Regression, bad.Count, bad.Reasons) { HasLabels = labelColumn is not null };
    }

    /// <summary>
    /// The text, pair and label columns: the options' or the defaults; a named column the file lacks throws, except an
    /// optional label column (then null).
    /// </summary>
    static (string Text, string? Pair, string? Label) ResolveColumns(TableFile table, ClassificationDataOptions options)
    {
        var columns = table.Columns;
        string listed = columns.Count == 0 ? "none" : string.Join(", ", columns);
        string text = options.TextColumn ?? DefaultTextColumns.FirstOrDefault(columns.Contains)
            ?? throw new DataFormatException(table.Path, 1, $"no text column: none of {string.Join(", ", DefaultTextColumns)} (columns: {listed}); set TextColumn");
        string? pair = options.TextPairColumn switch
        {
            null => columns.Contains(DefaultPairColumn) && text != DefaultPairColumn ? DefaultPairColumn : null,
            "" => null,
            var named => named,
        };
        string? label = options.LabelOptional && !columns.Contains(options.LabelColumn) ? null : options.LabelColumn;
        foreach (string? column in new[] { text, pair, label })
            if (column is not null && !columns.Contains(column))
                throw new DataFormatException(table.Path, 1, $"no column '{column}' (columns: {listed})");
        return (text, pair, label);
    }

    /// <summary>A row's field; <paramref name="what"/> ("text", "label", "id") names it in the problem. Texts are kept as they are, labels and ids trimmed.</summary>
    static string? Field(IReadOnlyDictionary<string, string?> fields, string column, string what, ref string? problem)
    {
        if (problem is not null) return null;
        if (!fields.TryGetValue(column, out string? value) || value is null) { problem = $"missing field '{column}'"; return null; }
        if (string.IsNullOrWhiteSpace(value)) { problem = $"empty {what} in '{column}'"; return null; }
        return what == "text" ? value : value.Trim();
    }

    static bool IsInteger(string label, out long value) =>
        long.TryParse(label, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value);

    /// <summary>
    /// Label names and ids from the rows' labels. Integer labels are class ids: 0…K−1 with every id used, or below
    /// the count of <paramref name="idLabels"/> (then named by it); a negative or out-of-range id is a bad row, an
    /// unused id in the middle an error naming the line of the largest one. Names are numbered in order of first
    /// appearance. A file that mixes integers and names is an error naming one line of each.
    /// </summary>
    static (IReadOnlyList<string> Names, Dictionary<string, int> Ids) CollectLabels(string path, List<(int Line, string Label)> rows, BadRows bad,
        IReadOnlyList<string>? idLabels)
    {
        var ids = new Dictionary<string, int>();
        var integer = rows.FirstOrDefault(r => IsInteger(r.Label, out _));
        var named = rows.FirstOrDefault(r => !IsInteger(r.Label, out _));
        if (integer.Label is not null && named.Label is not null)
            throw new DataFormatException(path, Math.Max(integer.Line, named.Line),
                $"labels mix integer ids (line {integer.Line}: {integer.Label}) and names (line {named.Line}: '{named.Label}'); use one kind");
        if (rows.Count > 0 && integer.Label is not null)
        {
            long limit = idLabels?.Count ?? 100_000;
            long max = -1;
            int maxLine = 0;
            foreach (var (line, label) in rows)
            {
                IsInteger(label, out long value);
                if (value < 0) { bad.Report(line, $"label {label} is negative; integer labels are class ids from 0"); continue; }
                if (value >= limit)
                {
                    bad.Report(line, idLabels is null ? $"label {label} is too large for a class id" : $"label {label} is not a class id of the model's {idLabels.Count} labels");
                    continue;
                }
                ids[label] = (int)value;
                if (value > max) { max = value; maxLine = line; }
            }
            if (idLabels is not null) return (idLabels, ids);
            var unused = Enumerable.Range(0, (int)max + 1).Where(i => !ids.ContainsKey(i.ToString(CultureInfo.InvariantCulture))).ToList();
            if (unused.Count > 0)
                throw new DataFormatException(path, maxLine,
                    $"label {max} makes {max + 1} classes but ids {string.Join(", ", unused.Take(5))}{(unused.Count > 5 ? ", …" : "")} never appear; integer labels must be 0…K−1 (or give the label names with --labels)");
            return (Enumerable.Range(0, (int)max + 1).Select(i => i.ToString(CultureInfo.InvariantCulture)).ToList(), ids);
        }
        var names = new List<string>();
        foreach (var (_, label) in rows)
            if (ids.TryAdd(label, names.Count)) names.Add(label);
        return (names, ids);
    }
}
