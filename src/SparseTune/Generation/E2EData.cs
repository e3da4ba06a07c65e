using System.Text.Json;
using SparseTune.Data;

namespace SparseTune.Generation;

/// <summary>One meaning representation of an E2E file with all of its references, in file order.</summary>
/// <param name="FirstLine">Physical line (from 1) of the first row with this meaning representation.</param>
public sealed record E2EGroup(string MeaningRepresentation, IReadOnlyList<string> References, int FirstLine);

/// <summary>An E2E file grouped for evaluation: one entry per distinct meaning representation.</summary>
public sealed record E2EReferences(IReadOnlyList<E2EGroup> Groups, int Rows, int SkippedRows, IReadOnlyList<string> SkippedReasons);

/// <summary>
/// E2E NLG data-to-text records (the Hugging Face <c>e2e_nlg</c> dataset as JSONL): one object a line with
/// "meaning_representation" (e.g. <c>name[The Eagle], eatType[coffee shop], food[French]</c>) and "reference"
/// (one human-written sentence). The same meaning representation appears on several rows, one per reference.
/// <para>
/// Training layout, as the GPT-2 E2E setup of LoRA (whose GPT-2 NLG experiments the PST paper repeats):
/// <c>[prefix] MR &lt;eos&gt; reference &lt;eos&gt;</c>. The separator is the tokenizer's end-of-sequence token
/// (GPT-2's <c>&lt;|endoftext|&gt;</c>) rather than a text marker: it cannot occur inside the texts, it does not
/// change how the BPE splits the MR's last word, and generation after a prompt ending in it starts a fresh
/// sentence. The MR is encoded with the encoder's special-token prefix (Llama's BOS, nothing for GPT-2) and the
/// reference on its own without special tokens, so the boundary is exact (as the Alpaca loader does).
/// </para>
/// </summary>
public static class E2EData
{
    public const string MeaningRepresentationField = "meaning_representation";
    public const string ReferenceField = "reference";

    /// <summary>
    /// The prompt the model sees at training and at generation time: the MR with the encoder's special-token
    /// prefix, then the EOS id as separator.
    /// </summary>
    /// <exception cref="ArgumentException">The encoder has no end-of-sequence token.</exception>
    public static int[] PromptIds(ITextEncoder encoder, string meaningRepresentation) =>
        [.. Truncation.EncodeWithoutSuffix(encoder, meaningRepresentation), RequireEos(encoder)];

    /// <summary>
    /// Causal-LM examples: ids = <see cref="PromptIds"/> + reference + EOS; labels -100 on the prompt (MR and
    /// separator), so the loss counts only the reference and its closing EOS. Longer examples lose reference tokens
    /// from the end, down to <paramref name="maxLength"/>; one whose prompt leaves no reference token is a bad row,
    /// and so are rows without a non-empty string in either field.
    /// </summary>
    /// <exception cref="DataFormatException">A bad row (FILE:LINE: problem) without <paramref name="skipBadRows"/>.</exception>
    public static LanguageModelDataset FromJsonl(string path, ITextEncoder encoder, int maxLength, bool skipBadRows = false)
    {
        if (maxLength < 2) throw new ArgumentOutOfRangeException(nameof(maxLength), "maxLength must be at least 2");
        int eos = RequireEos(encoder);
        var bad = new BadRows(path, skipBadRows);
        var examples = new List<Example>();
        long tokens = 0;
        foreach (var (line, mr, reference) in Rows(path, bad))
        {
            int[] prompt = PromptIds(encoder, mr);
            int[] response = [.. encoder.Encode(reference, addSpecialTokens: false), eos];
            if (prompt.Length >= maxLength)
            {
                bad.Report(line, $"the meaning representation ({prompt.Length} tokens with the separator) leaves no room for the reference within max length {maxLength}");
                continue;
            }
            tokens += prompt.Length + response.Length;
            int keep = Math.Min(response.Length, maxLength - prompt.Length);
            int[] ids = [.. prompt, .. response.Take(keep)];
            int[] labels = [.. Enumerable.Repeat(LanguageModelData.IgnoreIndex, prompt.Length), .. response.Take(keep)];
            examples.Add(new Example(ids, LabelIds: labels) { SourceLine = line });
        }
        return new LanguageModelDataset(examples, tokens, bad.Count, bad.Reasons);
    }

    /// <summary>
    /// The file grouped by meaning representation (exact string match, so the MR generated from is the MR trained on), in order of first
    /// appearance, each with its references in file order. Bad rows as <see cref="FromJsonl"/>.
    /// </summary>
    /// <exception cref="DataFormatException">A bad row without <paramref name="skipBadRows"/>.</exception>
    public static E2EReferences Groups(string path, bool skipBadRows = false)
    {
        var bad = new BadRows(path, skipBadRows);
        var order = new List<string>();
        var byMr = new Dictionary<string, (List<string> References, int FirstLine)>(StringComparer.Ordinal);
        int rows = 0;
        foreach (var (line, mr, reference) in Rows(path, bad))
        {
            rows++;
            if (!byMr.TryGetValue(mr, out var group))
            {
                group = ([], line);
                byMr[mr] = group;
                order.Add(mr);
            }
            group.References.Add(reference);
        }
        var groups = order.Select(mr => new E2EGroup(mr, byMr[mr].References, byMr[mr].FirstLine)).ToList();
        return new E2EReferences(groups, rows, bad.Count, bad.Reasons);
    }

    /// <summary>Whether a JSONL file looks like E2E data: its first non-blank line is an object with "meaning_representation".</summary>
    public static bool LooksLikeE2E(string path)
    {
        string? first = File.ReadLines(path).FirstOrDefault(l => !string.IsNullOrWhiteSpace(l));
        if (first is null) return false;
        try
        {
            using var doc = JsonDocument.Parse(first);
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty(MeaningRepresentationField, out _);
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>The well-formed rows; every other row goes to <paramref name="bad"/>.</summary>
    static IEnumerable<(int Line, string Mr, string Reference)> Rows(string path, BadRows bad)
    {
        var table = TableFile.Read(path, TableFormat.Jsonl);
        foreach (var record in table.Records)
        {
            if (record.Error is not null) { bad.Report(record.Line, record.Error); continue; }
            var fields = record.Fields!;
            string? mr = fields.GetValueOrDefault(MeaningRepresentationField);
            string? reference = fields.GetValueOrDefault(ReferenceField);
            string? problem = !fields.ContainsKey(MeaningRepresentationField) ? $"missing field '{MeaningRepresentationField}'"
                : string.IsNullOrWhiteSpace(mr) ? $"empty text in '{MeaningRepresentationField}'"
                : !fields.ContainsKey(ReferenceField) ? $"missing field '{ReferenceField}'"
                : string.IsNullOrWhiteSpace(reference) ? $"empty text in '{ReferenceField}'"
                : null;
            if (problem is not null) { bad.Report(record.Line, problem); continue; }
            yield return (record.Line, mr!, reference!);
        }
    }

    static int RequireEos(ITextEncoder encoder) => encoder.EosId
        ?? throw new ArgumentException("E2E data needs a tokenizer with an end-of-sequence token: it separates the meaning representation from the reference and ends the reference");
}
