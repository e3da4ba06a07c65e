using System.Globalization;
using System.Text;
using System.Text.Json;
using SparseTune.IO;

namespace SparseTune.Inference;

/// <summary>How a predictions file is written: by its extension, <c>.csv</c> CSV, anything else JSONL.</summary>
public enum PredictionFormat { Jsonl, Csv }

/// <summary>
/// Writes predictions, one row per predicted input row, atomically (<see cref="AtomicFile"/>): a crash never leaves half a
/// file. A row's id is its id column's value (a string), else its line in the input (a number).
/// <code>
///   JSONL  {"id": 7, "label": "food", "scores": {"computers": 0.01, "food": 0.97, …}}     regression: {"id": 7, "value": 3.2}
///   CSV    id,label,score_computers,score_food,…                                      regression: id,value
/// </code>
/// Probabilities and values are float32, written in their shortest round-trip form; CSV follows RFC 4180 quoting.
/// </summary>
public static class PredictionFile
{
    public static PredictionFormat FormatOf(string path) =>
        Path.GetExtension(path).Equals(".csv", StringComparison.OrdinalIgnoreCase) ? PredictionFormat.Csv : PredictionFormat.Jsonl;

    /// <param name="labels">The model's labels in id order (<see cref="ClassificationPredictor.Labels"/>): the score columns and keys.</param>
    public static void Write(string path, IReadOnlyList<PredictedRow> rows, IReadOnlyList<string> labels, bool regression)
    {
        if (FormatOf(path) == PredictionFormat.Csv) AtomicFile.Write(path, s => WriteCsv(s, rows, labels, regression));
        else AtomicFile.Write(path, s => WriteJsonl(s, rows, labels, regression));
    }

    static void WriteJsonl(Stream stream, IReadOnlyList<PredictedRow> rows, IReadOnlyList<string> labels, bool regression)
    {
        var buffer = new MemoryStream();
        foreach (var row in rows)
        {
            buffer.SetLength(0);
            using (var json = new Utf8JsonWriter(buffer, JsonWriting))
            {
                json.WriteStartObject();
                if (row.Id is { } id) json.WriteString("id", id);
                else json.WriteNumber("id", row.Line);
                if (regression) WriteNumber(json, "value", row.Prediction.Value ?? float.NaN);
                else
                {
                    json.WriteString("label", row.Prediction.Label);
                    json.WriteStartObject("scores");
                    foreach (string label in labels) WriteNumber(json, label, row.Prediction.Scores[label]);
                    json.WriteEndObject();
                }
                json.WriteEndObject();
            }
            buffer.WriteByte((byte)'\n');
            buffer.Position = 0;
            buffer.CopyTo(stream);
        }
    }

    /// <summary>Label names and ids as written (é, not \u00E9), as the eval command's predictions.</summary>
    static readonly JsonWriterOptions JsonWriting = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>A float, or null where it is not finite (JSON has no NaN).</summary>
    static void WriteNumber(Utf8JsonWriter json, string name, float value)
    {
        if (float.IsFinite(value)) json.WriteNumber(name, value);
        else json.WriteNull(name);
    }

    static void WriteCsv(Stream stream, IReadOnlyList<PredictedRow> rows, IReadOnlyList<string> labels, bool regression)
    {
        using var writer = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true) { NewLine = "\n" };
        IEnumerable<string> header = regression ? ["id", "value"] : ["id", "label", .. labels.Select(l => "score_" + l)];
        writer.WriteLine(string.Join(',', header.Select(Quote)));
        var fields = new List<string>();
        foreach (var row in rows)
        {
            fields.Clear();
            fields.Add(Quote(row.Id ?? row.Line.ToString(CultureInfo.InvariantCulture)));
            if (regression) fields.Add(Number(row.Prediction.Value ?? float.NaN));
            else
            {
                fields.Add(Quote(row.Prediction.Label ?? ""));
                foreach (string label in labels) fields.Add(Number(row.Prediction.Scores[label]));
            }
            writer.WriteLine(string.Join(',', fields));
        }
    }

    /// <summary>
    /// Extractive QA answers, one per question: JSONL <c>{"id": "q1", "answer": "Elsa Dahl", "start": 141, "end": 150,
    /// "score": 7.2}</c> (start/end: the answer's character span in its context, end exclusive; an empty answer — no
    /// answer — has null start and end) or CSV <c>id,answer,start,end,score</c>.
    /// </summary>
    public static void WriteAnswers(string path, IReadOnlyList<QaPrediction> answers)
    {
        if (FormatOf(path) == PredictionFormat.Csv)
            AtomicFile.Write(path, stream =>
            {
                using var writer = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true) { NewLine = "\n" };
                writer.WriteLine("id,answer,start,end,score");
                foreach (var a in answers)
                    writer.WriteLine(string.Join(',', Quote(a.Id), Quote(a.Text), a.IsNoAnswer ? "" : a.Start.ToString(CultureInfo.InvariantCulture),
                        a.IsNoAnswer ? "" : a.End.ToString(CultureInfo.InvariantCulture), Number((float)a.Score)));
            });
        else
            AtomicFile.Write(path, stream =>
            {
                foreach (var a in answers)
                {
                    using (var json = new Utf8JsonWriter(stream, JsonWriting))
                    {
                        json.WriteStartObject();
                        json.WriteString("id", a.Id);
                        json.WriteString("answer", a.Text);
                        if (a.IsNoAnswer) { json.WriteNull("start"); json.WriteNull("end"); }
                        else { json.WriteNumber("start", a.Start); json.WriteNumber("end", a.End); }
                        WriteNumber(json, "score", (float)a.Score);
                        json.WriteEndObject();
                    }
                    stream.WriteByte((byte)'\n');
                }
            });
    }

    /// <summary>
    /// Multiple-choice picks, one per question: JSONL <c>{"id": "q7", "choice": 2, "answer": "zebra", "scores": [0.1, …]}</c>
    /// (scores: each choice's probability for an encoder, its summed log-likelihood for a decoder) or CSV
    /// <c>id,choice,answer,score_0,score_1,…</c>.
    /// </summary>
    public static void WriteChoices(string path, IReadOnlyList<ChoiceAnswer> answers)
    {
        if (FormatOf(path) == PredictionFormat.Csv)
            AtomicFile.Write(path, stream =>
            {
                using var writer = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true) { NewLine = "\n" };
                int most = answers.Max(a => a.Scores.Count);
                writer.WriteLine(string.Join(',', ["id", "choice", "answer", .. Enumerable.Range(0, most).Select(i => $"score_{i}")]));
                foreach (var a in answers)
                    writer.WriteLine(string.Join(',', [Quote(a.Item.Id), a.Choice.ToString(CultureInfo.InvariantCulture), Quote(a.Text),
                        .. a.Scores.Select(s => Number((float)s))]));
            });
        else
            AtomicFile.Write(path, stream =>
            {
                foreach (var a in answers)
                {
                    using (var json = new Utf8JsonWriter(stream, JsonWriting))
                    {
                        json.WriteStartObject();
                        json.WriteString("id", a.Item.Id);
                        json.WriteNumber("choice", a.Choice);
                        json.WriteString("answer", a.Text);
                        json.WriteStartArray("scores");
                        foreach (double s in a.Scores)
                            if (double.IsFinite(s)) json.WriteNumberValue((float)s); else json.WriteNullValue();
                        json.WriteEndArray();
                        json.WriteEndObject();
                    }
                    stream.WriteByte((byte)'\n');
                }
            });
    }

    static string Number(float value) => float.IsFinite(value) ? value.ToString("R", CultureInfo.InvariantCulture) : "";

    /// <summary>RFC 4180: a field holding a comma, quote or line break is quoted, its quotes doubled.</summary>
    static string Quote(string field) =>
        field.AsSpan().IndexOfAny(",\"\r\n") >= 0 ? "\"" + field.Replace("\"", "\"\"") + "\"" : field;
}
