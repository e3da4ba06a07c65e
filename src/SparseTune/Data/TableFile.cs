using System.Text;
using System.Text.Json;

namespace SparseTune.Data;

/// <summary>How a table file is laid out; <see cref="Auto"/> goes by the extension (.csv, .tsv/.tab, .jsonl/.ndjson/.json).</summary>
public enum TableFormat { Auto, Csv, Tsv, Jsonl }

/// <summary>One data row: the line where it starts and its fields by column name (a null value: JSON null), or
/// why it could not be read.</summary>
/// <param name="StructuredFields">JSONL fields whose value was a boolean, array or object (not a string or number).</param>
internal sealed record TableRecord(int Line, IReadOnlyDictionary<string, string?>? Fields, string? Error, IReadOnlySet<string>? StructuredFields = null);

/// <summary>One record of a header-less CSV file: the line where it starts and its fields, or why it could not be read.</summary>
internal sealed record HeaderlessCsvRecord(int Line, IReadOnlyList<string>? Fields, string? Error);

/// <summary>
/// Rows of a CSV (header row, RFC 4180 quoting), TSV (header row, no quoting) or JSONL (one object a line) file.
/// Blank lines are skipped. A row that cannot be read (undecodable UTF-8, invalid JSON, wrong field count, broken
/// quoting) becomes a record with an <see cref="TableRecord.Error"/>; a bad header throws.
/// </summary>
internal sealed class TableFile
{
    public required string Path { get; init; }
    /// <summary>Header columns (CSV/TSV) or the keys seen in any JSONL object, in order of first appearance.</summary>
    public required IReadOnlyList<string> Columns { get; init; }
    public required IReadOnlyList<TableRecord> Records { get; init; }

    public static TableFormat FormatOf(string path, TableFormat format)
    {
        if (format != TableFormat.Auto) return format;
        return System.IO.Path.GetExtension(path).ToLowerInvariant() switch
        {
            ".csv" => TableFormat.Csv,
            ".tsv" or ".tab" => TableFormat.Tsv,
            ".jsonl" or ".ndjson" or ".json" => TableFormat.Jsonl,
            _ => throw new ArgumentException($"{path}: cannot tell the format from the extension (.csv, .tsv, .jsonl); set the format explicitly"),
        };
    }

    public static TableFile Read(string path, TableFormat format)
    {
        var lines = TextLines.Read(path);
        return FormatOf(path, format) switch
        {
            TableFormat.Csv => ReadDelimited(path, lines, csv: true),
            TableFormat.Tsv => ReadDelimited(path, lines, csv: false),
            _ => ReadJsonl(path, lines),
        };
    }

    /// <summary>
    /// The records of a CSV file without a header row (the MMLU release), RFC 4180 quoting as in <see cref="Read"/>;
    /// blank lines skipped. Each record carries the line where it starts, its fields, or why it could not be read.
    /// </summary>
    public static IReadOnlyList<HeaderlessCsvRecord> ReadHeaderlessCsv(string path)
    {
        var lines = TextLines.Read(path);
        var records = new List<HeaderlessCsvRecord>();
        int i = 0;
        while (i < lines.Count)
        {
            if (IsBlank(lines[i])) { i++; continue; }
            int line = lines[i].Number;
            var (fields, error) = ParseCsvRecord(lines, ref i);
            records.Add(new HeaderlessCsvRecord(line, fields, error));
        }
        return records;
    }

    static bool IsBlank(TextLine line) => line.Text is { } text && string.IsNullOrWhiteSpace(text);

    static TableFile ReadDelimited(string path, List<TextLine> lines, bool csv)
    {
        int i = 0;
        while (i < lines.Count && IsBlank(lines[i])) i++;
        if (i == lines.Count) throw new DataFormatException(path, Math.Max(1, lines.Count), "no header row");
        int headerLine = lines[i].Number;
        var (header, headerError) = csv ? ParseCsvRecord(lines, ref i) : ParseTsvRecord(lines, ref i);
        if (headerError is not null) throw new DataFormatException(path, headerLine, "header row: " + headerError);
        var columns = header!.Select(h => h.Trim()).ToList();
        var duplicate = columns.GroupBy(c => c).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new DataFormatException(path, headerLine, $"header row: column '{duplicate.Key}' appears twice");

        var records = new List<TableRecord>();
        while (i < lines.Count)
        {
            if (IsBlank(lines[i])) { i++; continue; }
            int line = lines[i].Number;
            var (fields, error) = csv ? ParseCsvRecord(lines, ref i) : ParseTsvRecord(lines, ref i);
            if (error is null && fields!.Count != columns.Count)
                error = fields.Count < columns.Count
                    ? $"missing field: expected {columns.Count} fields ({string.Join(", ", columns)}), found {fields.Count}"
                    : $"too many fields: expected {columns.Count}, found {fields.Count}";
            if (error is not null) { records.Add(new TableRecord(line, null, error)); continue; }
            var row = new Dictionary<string, string?>(columns.Count);
            for (int c = 0; c < columns.Count; c++) row[columns[c]] = fields![c];
            records.Add(new TableRecord(line, row, null));
        }
        return new TableFile { Path = path, Columns = columns, Records = records };
    }

    static (List<string>? Fields, string? Error) ParseTsvRecord(List<TextLine> lines, ref int i)
    {
        string? text = lines[i++].Text;
        return text is null ? (null, "invalid UTF-8 bytes") : ([.. text.Split('\t')], null);
    }

    /// <summary>
    /// One RFC 4180 record from line i on (quoted fields may hold commas, line breaks and "" for a quote); advances i
    /// past it. A quote inside an unquoted field is kept literally; text after a closing quote is an error.
    /// </summary>
    static (List<string>? Fields, string? Error) ParseCsvRecord(List<TextLine> lines, ref int i)
    {
        var fields = new List<string>();
        var field = new StringBuilder();
        TextLine current = lines[i++];
        if (current.Text is null) return (null, "invalid UTF-8 bytes");
        string text = current.Text;
        int p = 0;
        while (true)
        {
            field.Clear();
            if (p < text.Length && text[p] == '"')
            {
                p++;
                while (true)
                {
                    if (p == text.Length)
                    {
                        // The quoted field goes on past the line break.
                        if (i == lines.Count) return (null, "unterminated quoted field");
                        field.Append(current.Break);
                        current = lines[i++];
                        if (current.Text is null) return (null, $"invalid UTF-8 bytes (line {current.Number})");
                        text = current.Text;
                        p = 0;
                        continue;
                    }
                    char c = text[p++];
                    if (c != '"') { field.Append(c); continue; }
                    if (p < text.Length && text[p] == '"') { field.Append('"'); p++; continue; }
                    break; // closing quote
                }
                fields.Add(field.ToString());
                if (p == text.Length) return (fields, null);
                if (text[p] != ',') return (null, $"unexpected '{text[p]}' after a closing quote (line {current.Number})");
                p++;
            }
            else
            {
                int comma = text.IndexOf(',', p);
                int end = comma < 0 ? text.Length : comma;
                fields.Add(text[p..end]);
                if (comma < 0) return (fields, null);
                p = comma + 1;
            }
        }
    }

    static TableFile ReadJsonl(string path, List<TextLine> lines)
    {
        var columns = new List<string>();
        var known = new HashSet<string>();
        var records = new List<TableRecord>();
        foreach (var line in lines)
        {
            if (IsBlank(line)) continue;
            if (line.Text is null) { records.Add(new TableRecord(line.Number, null, "invalid UTF-8 bytes")); continue; }
            JsonDocument document;
            try { document = JsonDocument.Parse(line.Text); }
            catch (JsonException e)
            {
                records.Add(new TableRecord(line.Number, null, "invalid JSON: " + FirstSentence(e.Message)));
                continue;
            }
            using (document)
            {
                if (document.RootElement.ValueKind != JsonValueKind.Object)
                {
                    records.Add(new TableRecord(line.Number, null, $"expected a JSON object, found {document.RootElement.ValueKind.ToString().ToLowerInvariant()}"));
                    continue;
                }
                var row = new Dictionary<string, string?>();
                HashSet<string>? structured = null;
                foreach (var property in document.RootElement.EnumerateObject())
                {
                    row[property.Name] = Scalar(property.Value);
                    if (property.Value.ValueKind is JsonValueKind.True or JsonValueKind.False or JsonValueKind.Array or JsonValueKind.Object)
                        (structured ??= []).Add(property.Name);
                    if (known.Add(property.Name)) columns.Add(property.Name);
                }
                records.Add(new TableRecord(line.Number, row, null, structured));
            }
        }
        return new TableFile { Path = path, Columns = columns, Records = records };
    }

    /// <summary>A JSON value as text: strings as they are, numbers as written (1 → "1", 1.0 → "1.0"), booleans as
    /// true/false, null as null, objects and arrays as their JSON.</summary>
    static string? Scalar(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString(),
        JsonValueKind.Null => null,
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        _ => value.GetRawText(),
    };

    static string FirstSentence(string message)
    {
        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        if (cut < 0) cut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return (cut < 0 ? message : message[..cut]).TrimEnd();
    }
}
