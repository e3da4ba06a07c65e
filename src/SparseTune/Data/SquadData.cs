using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace SparseTune.Data;

/// <summary>How a SQuAD file is laid out; <see cref="SquadFormat.Auto"/> looks at the content.</summary>
public enum SquadFormat
{
    /// <summary>.jsonl/.ndjson are JSONL; otherwise a file that parses as one JSON object with "data" is SQuAD JSON, else JSONL.</summary>
    Auto,
    /// <summary>The official layout: {"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers", "is_impossible"}]}]}]}.</summary>
    SquadJson,
    /// <summary>One object a line: question, context, answers ({"text": [...], "answer_start": [...]} or [{"text", "answer_start"}]), optional id and is_impossible.</summary>
    Jsonl,
}

/// <summary>Options of <see cref="SquadData.Load"/>.</summary>
public sealed record SquadDataOptions
{
    public SquadFormat Format { get; init; } = SquadFormat.Auto;

    /// <summary>Skip bad questions (counted in <see cref="SquadDataset.SkippedRows"/>) instead of throwing.</summary>
    public bool SkipBadRows { get; init; }

    /// <summary>A question may lack "answers" (prediction input): it is then read with no answers and not as impossible.</summary>
    public bool AnswersOptional { get; init; }
}

/// <summary>
/// Extractive question-answering data in SQuAD v1.1 / v2.0 JSON or flat JSONL (Hugging Face datasets' squad
/// columns). Every answer must sit in its context where answer_start says: <c>context.Substring(answer_start,
/// text.Length) == text</c>. Version 2.0 is detected from "version": "v2.0" or any question without an answer.
/// </summary>
public static class SquadData
{
    static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <exception cref="DataFormatException">A bad question (misaligned or out-of-range answer, empty question or
    /// context, invalid JSON line, duplicate id …) without SkipBadRows, or a file that is not SQuAD JSON at all (always).</exception>
    public static SquadDataset Load(string path, SquadDataOptions? options = null)
    {
        options ??= new SquadDataOptions();
        if (!File.Exists(path)) throw new FileNotFoundException($"SQuAD file '{path}' does not exist.", path);
        var reader = new Reader(path, options);
        return Detect(path, options.Format) == SquadFormat.SquadJson ? reader.ReadSquadJson() : reader.ReadJsonl();
    }

    /// <summary>
    /// Whether a file looks like extractive QA data: SQuAD JSON (a root object whose "data" is a list) or JSONL whose
    /// first line has "question", "context" and "answers". Unreadable or other files: false.
    /// </summary>
    public static bool LooksLikeSquad(string path)
    {
        try
        {
            string? first = File.ReadLines(path).FirstOrDefault(l => !string.IsNullOrWhiteSpace(l));
            if (first is null) return false;
            try
            {
                using var line = JsonDocument.Parse(first);
                var root = line.RootElement;
                if (root.ValueKind != JsonValueKind.Object) return false;
                return root.TryGetProperty("data", out var data) ? data.ValueKind == JsonValueKind.Array
                    : root.TryGetProperty("question", out _) && root.TryGetProperty("context", out _) && root.TryGetProperty("answers", out _);
            }
            catch (JsonException) when (first.TrimStart().StartsWith('{'))
            {
                // A pretty-printed SQuAD file: its first line is not a whole object.
                using var stream = File.OpenRead(path);
                using var whole = JsonDocument.Parse(stream);
                return whole.RootElement.ValueKind == JsonValueKind.Object && whole.RootElement.TryGetProperty("data", out var data) && data.ValueKind == JsonValueKind.Array;
            }
        }
        catch (Exception e) when (e is JsonException or IOException or DecoderFallbackException) { return false; }
    }

    static SquadFormat Detect(string path, SquadFormat format)
    {
        if (format != SquadFormat.Auto) return format;
        string extension = Path.GetExtension(path).ToLowerInvariant();
        if (extension is ".jsonl" or ".ndjson") return SquadFormat.Jsonl;
        var lines = TextLines.Read(path);
        var first = lines.FirstOrDefault(l => l.Text is null || !string.IsNullOrWhiteSpace(l.Text));
        // One object per line when the first line is a whole JSON object without "data"; SQuAD JSON otherwise
        // (including a broken one, so that its parse error is reported as such).
        if (first.Text is { } text)
        {
            try
            {
                using var doc = JsonDocument.Parse(text);
                if (doc.RootElement.ValueKind == JsonValueKind.Object && !doc.RootElement.TryGetProperty("data", out _)) return SquadFormat.Jsonl;
            }
            catch (JsonException) { }
        }
        return SquadFormat.SquadJson;
    }

    /// <summary>Reads one file, collecting examples and bad rows.</summary>
    sealed class Reader(string path, SquadDataOptions options)
    {
        readonly BadRows bad = new(path, options.SkipBadRows);
        readonly List<QaExample> examples = [];
        readonly Dictionary<string, int> lineOfId = new(StringComparer.Ordinal);

        public SquadDataset ReadJsonl()
        {
            foreach (var line in TextLines.Read(path))
            {
                if (line.Text is { } blank && string.IsNullOrWhiteSpace(blank)) continue;
                if (line.Text is null) { bad.Report(line.Number, "invalid UTF-8 bytes"); continue; }
                JsonDocument document;
                try { document = JsonDocument.Parse(line.Text); }
                catch (JsonException e) { bad.Report(line.Number, "invalid JSON: " + FirstSentence(e.Message)); continue; }
                using (document)
                {
                    var row = document.RootElement;
                    if (row.ValueKind != JsonValueKind.Object)
                    {
                        bad.Report(line.Number, $"expected a JSON object, found {row.ValueKind.ToString().ToLowerInvariant()}");
                        continue;
                    }
                    string? problem = null;
                    string id = row.TryGetProperty("id", out var idValue) ? IdText(idValue, ref problem) ?? "" : line.Number.ToString(System.Globalization.CultureInfo.InvariantCulture);
                    string? question = Text(row, "question", ref problem);
                    string? context = Text(row, "context", ref problem);
                    var answers = Answers(row, ref problem);
                    bool impossible = Impossible(row, ref problem);
                    Add(line.Number, id, question, context, answers, impossible, title: null, problem);
                }
            }
            return Finish(version2Declared: false);
        }

        public SquadDataset ReadSquadJson()
        {
            byte[] bytes = File.ReadAllBytes(path);
            string json;
            try { json = Strict.GetString(bytes); }
            catch (DecoderFallbackException e)
            {
                throw new DataFormatException(path, LineOfByte(bytes, e.Index), "invalid UTF-8 bytes");
            }
            if (json.Length > 0 && json[0] == '\uFEFF') json = json[1..];
            JsonDocument document;
            try { document = JsonDocument.Parse(json); }
            catch (JsonException e) { throw new DataFormatException(path, (int)(e.LineNumber ?? 0) + 1, "invalid JSON: " + FirstSentence(e.Message)); }
            using (document)
            {
                var root = document.RootElement;
                if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("data", out var data) || data.ValueKind != JsonValueKind.Array)
                    throw new DataFormatException(path, 1, "not a SQuAD file: expected an object with a \"data\" list of articles (or use the JSONL layout)");
                bool declared = root.TryGetProperty("version", out var version) && version.ValueKind == JsonValueKind.String
                                && version.GetString()!.StartsWith("v2", StringComparison.OrdinalIgnoreCase);
                var lines = new IdLines(json);
                int articleNumber = 0;
                foreach (var article in data.EnumerateArray())
                {
                    articleNumber++;
                    string? title = article.ValueKind == JsonValueKind.Object && article.TryGetProperty("title", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
                    foreach (var (paragraph, paragraphNumber) in List(article, "paragraphs", $"article {articleNumber}"))
                    {
                        string where = $"article {articleNumber} paragraph {paragraphNumber}";
                        string? paragraphProblem = null;
                        string? context = Text(paragraph, "context", ref paragraphProblem);
                        foreach (var (qa, questionNumber) in List(paragraph, "qas", where))
                        {
                            string? problem = qa.ValueKind == JsonValueKind.Object ? paragraphProblem : $"{where} question {questionNumber} is not an object";
                            string? id = problem is null && qa.TryGetProperty("id", out var idValue) ? IdText(idValue, ref problem) : null;
                            if (problem is null && id is null) problem = $"{where} question {questionNumber} has no \"id\"";
                            string? question = Text(qa, "question", ref problem);
                            var answers = Answers(qa, ref problem);
                            bool impossible = Impossible(qa, ref problem);
                            Add(lines.Of(id), id ?? "", question, context, answers, impossible, title, problem, nameId: id is not null);
                        }
                    }
                }
                return Finish(declared);
            }
        }

        /// <summary>Items of an array property; a missing or non-array property is a structural error.</summary>
        IEnumerable<(JsonElement Item, int Number)> List(JsonElement parent, string name, string where)
        {
            if (parent.ValueKind != JsonValueKind.Object || !parent.TryGetProperty(name, out var list) || list.ValueKind != JsonValueKind.Array)
                throw new DataFormatException(path, 1, $"not a SQuAD file: {where} has no \"{name}\" list");
            int number = 0;
            foreach (var item in list.EnumerateArray()) yield return (item, ++number);
        }

        /// <summary>Keeps the question, or reports it as bad (<paramref name="nameId"/>: the message starts with its id, for SQuAD JSON).</summary>
        void Add(int line, string id, string? question, string? context, List<QaAnswer>? answers, bool impossible, string? title, string? problem,
            bool nameId = false)
        {
            if (problem is null && impossible && answers is { Count: > 0 }) problem = "is_impossible is true but the question has answers";
            if (problem is null)
                for (int i = 0; i < answers!.Count && problem is null; i++)
                    problem = Misplaced(answers[i], i + 1, context!);
            if (problem is null && lineOfId.TryGetValue(id, out int firstLine)) problem = $"duplicate id '{id}' (first on line {firstLine})";
            if (problem is not null) { bad.Report(line, nameId ? $"question id '{id}': {problem}" : problem); return; }
            lineOfId[id] = line;
            bool noAnswer = impossible || (answers!.Count == 0 && !options.AnswersOptional);
            examples.Add(new QaExample(id, question!, context!, answers!, noAnswer) { Title = title, SourceLine = line });
        }

        SquadDataset Finish(bool version2Declared) =>
            new(examples, version2Declared || examples.Any(e => e.IsImpossible), bad.Count, bad.Reasons);

        /// <summary>The answer list in either layout; null (with a problem) when malformed.</summary>
        List<QaAnswer>? Answers(JsonElement row, ref string? problem)
        {
            if (problem is not null) return null;
            if (!row.TryGetProperty("answers", out var answers) || answers.ValueKind == JsonValueKind.Null)
            {
                if (options.AnswersOptional || (row.TryGetProperty("is_impossible", out var flag) && flag.ValueKind == JsonValueKind.True)) return [];
                problem = "missing field 'answers'";
                return null;
            }
            var result = new List<QaAnswer>();
            if (answers.ValueKind == JsonValueKind.Object)
            {
                // Hugging Face datasets: {"text": [...], "answer_start": [...]}, index for index.
                if (!answers.TryGetProperty("text", out var texts) || texts.ValueKind != JsonValueKind.Array
                    || !answers.TryGetProperty("answer_start", out var starts) || starts.ValueKind != JsonValueKind.Array)
                { problem = "answers should be {\"text\": [...], \"answer_start\": [...]} or a list of {\"text\", \"answer_start\"}"; return null; }
                if (texts.GetArrayLength() != starts.GetArrayLength())
                { problem = $"answers has {texts.GetArrayLength()} texts but {starts.GetArrayLength()} answer_start values"; return null; }
                for (int i = 0; i < texts.GetArrayLength() && problem is null; i++)
                    if (Answer(texts[i], starts[i], i + 1, ref problem) is { } answer) result.Add(answer);
            }
            else if (answers.ValueKind == JsonValueKind.Array)
            {
                int number = 0;
                foreach (var answer in answers.EnumerateArray())
                {
                    number++;
                    if (answer.ValueKind != JsonValueKind.Object || !answer.TryGetProperty("text", out var text) || !answer.TryGetProperty("answer_start", out var start))
                    { problem = $"answer {number} should be an object with \"text\" and \"answer_start\""; return null; }
                    if (Answer(text, start, number, ref problem) is { } parsed) result.Add(parsed);
                    else return null;
                }
            }
            else { problem = $"answers is a JSON {answers.ValueKind.ToString().ToLowerInvariant()}, not a list or an object"; return null; }
            return problem is null ? result : null;
        }

        static QaAnswer? Answer(JsonElement text, JsonElement start, int number, ref string? problem)
        {
            if (text.ValueKind != JsonValueKind.String || string.IsNullOrEmpty(text.GetString()))
            { problem = $"answer {number} has no text"; return null; }
            if (start.ValueKind != JsonValueKind.Number || !start.TryGetInt32(out int at))
            { problem = $"answer {number} has answer_start {start.GetRawText()}, not an integer"; return null; }
            return new QaAnswer(text.GetString()!, at);
        }

        /// <summary>Why the answer does not sit in the context where it says; null when it does.</summary>
        static string? Misplaced(QaAnswer answer, int number, string context)
        {
            if (answer.Start < 0 || answer.End > context.Length)
                return $"answer {number} '{answer.Text}' at {answer.Start}..{answer.End} lies outside the context ({context.Length} characters)";
            if (string.CompareOrdinal(context, answer.Start, answer.Text, 0, answer.Text.Length) != 0)
                return $"answer {number} '{answer.Text}' does not match the context at answer_start {answer.Start}, which reads '{context.Substring(answer.Start, answer.Text.Length)}'";
            return null;
        }

        static bool Impossible(JsonElement row, ref string? problem)
        {
            if (!row.TryGetProperty("is_impossible", out var flag) || flag.ValueKind == JsonValueKind.Null) return false;
            if (flag.ValueKind is JsonValueKind.True or JsonValueKind.False) return flag.GetBoolean();
            problem ??= $"is_impossible is {flag.GetRawText()}, not true or false";
            return false;
        }

        static string? Text(JsonElement row, string name, ref string? problem)
        {
            if (problem is not null) return null;
            if (row.ValueKind != JsonValueKind.Object || !row.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
            { problem = $"missing field '{name}'"; return null; }
            if (value.ValueKind != JsonValueKind.String) { problem = $"'{name}' is a JSON {value.ValueKind.ToString().ToLowerInvariant()}, not a string"; return null; }
            string text = value.GetString()!;
            if (string.IsNullOrWhiteSpace(text)) { problem = $"empty {name}"; return null; }
            return text;
        }

        static string? IdText(JsonElement value, ref string? problem)
        {
            switch (value.ValueKind)
            {
                case JsonValueKind.String when !string.IsNullOrWhiteSpace(value.GetString()): return value.GetString();
                case JsonValueKind.Number: return value.GetRawText();
                default:
                    problem ??= $"id {value.GetRawText()} is not a non-empty string or a number";
                    return null;
            }
        }

        static int LineOfByte(byte[] bytes, int index)
        {
            int line = 1;
            for (int i = 0; i < Math.Min(index, bytes.Length); i++) if (bytes[i] == (byte)'\n') line++;
            return line;
        }
    }

    /// <summary>
    /// Lines of the question ids in a SQuAD JSON text, so a bad question can be reported as FILE:LINE: JsonDocument
    /// keeps no positions, so the "id": value pairs are found in the raw text.
    /// </summary>
    sealed class IdLines
    {
        static readonly Regex IdPattern = new("\"id\"\\s*:\\s*(\"(?:[^\"\\\\]|\\\\.)*\"|-?[0-9][0-9.eE+-]*)", RegexOptions.CultureInvariant);
        readonly Dictionary<string, int> lines = new(StringComparer.Ordinal);

        public IdLines(string json)
        {
            int line = 1, position = 0;
            for (var match = IdPattern.Match(json); match.Success; match = match.NextMatch())
            {
                for (; position < match.Index; position++) if (json[position] == '\n') line++;
                string raw = match.Groups[1].Value;
                string id;
                try { id = raw[0] == '"' ? JsonSerializer.Deserialize<string>(raw)! : raw; }
                catch (JsonException) { continue; }
                lines.TryAdd(id, line);
            }
        }

        /// <summary>The line of the id, or 1 when the question has none.</summary>
        public int Of(string? id) => id is not null && lines.TryGetValue(id, out int line) ? line : 1;
    }

    static string FirstSentence(string message)
    {
        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        if (cut < 0) cut = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return (cut < 0 ? message : message[..cut]).TrimEnd();
    }
}
