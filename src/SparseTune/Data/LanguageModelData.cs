using System.Text;

namespace SparseTune.Data;

/// <summary>Causal language-modelling data: packed plain text, or Alpaca-style instruction records.</summary>
public static class LanguageModelData
{
    /// <summary>Label of tokens the loss skips (as Hugging Face's -100).</summary>
    public const int IgnoreIndex = -100;

    /// <summary>Stanford Alpaca's prompt for a record with a non-empty input.</summary>
    public const string PromptWithInput =
        "Below is an instruction that describes a task, paired with an input that provides further context. " +
        "Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:";

    /// <summary>Stanford Alpaca's prompt for a record without input.</summary>
    public const string PromptWithoutInput =
        "Below is an instruction that describes a task. " +
        "Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\n{instruction}\n\n### Response:";

    /// <summary>
    /// Packs a plain-text file into blocks of <paramref name="blockSize"/> tokens. Documents are separated by blank
    /// (or whitespace-only) lines; a document's lines are joined with "\n" and encoded with the encoder's special
    /// tokens (a BOS prefix for Llama), and EOS goes between consecutive documents when the encoder has one (unless
    /// the document already ends with it). The token stream is cut into blocks and the incomplete last block is
    /// dropped. Labels are the input ids themselves: the model shifts them. A line with undecodable UTF-8 is a bad row.
    /// </summary>
    /// <exception cref="DataFormatException">A bad line without <paramref name="skipBadRows"/>.</exception>
    /// <exception cref="InvalidDataException">The file holds fewer tokens than one block.</exception>
    public static LanguageModelDataset FromText(string path, ITextEncoder encoder, int blockSize, bool skipBadRows = false)
    {
        if (blockSize < 1) throw new ArgumentOutOfRangeException(nameof(blockSize), "blockSize must be at least 1");
        var bad = new BadRows(path, skipBadRows);
        var stream = new List<int>();
        var document = new StringBuilder();
        bool inDocument = false;
        void EndDocument()
        {
            if (!inDocument) return;
            if (stream.Count > 0 && encoder.EosId is int eos && stream[^1] != eos) stream.Add(eos);
            stream.AddRange(encoder.Encode(document.ToString(), addSpecialTokens: true));
            document.Clear();
            inDocument = false;
        }
        foreach (var line in TextLines.Read(path))
        {
            if (line.Text is null) { bad.Report(line.Number, "invalid UTF-8 bytes"); continue; }
            if (string.IsNullOrWhiteSpace(line.Text)) { EndDocument(); continue; }
            if (inDocument) document.Append('\n');
            document.Append(line.Text);
            inDocument = true;
        }
        EndDocument();

        int blocks = stream.Count / blockSize;
        if (blocks == 0) throw new InvalidDataException($"{path}: {stream.Count} tokens are fewer than one block of {blockSize}");
        var examples = new List<Example>(blocks);
        for (int b = 0; b < blocks; b++)
        {
            int[] ids = stream.GetRange(b * blockSize, blockSize).ToArray();
            examples.Add(new Example(ids, LabelIds: (int[])ids.Clone()));
        }
        return new LanguageModelDataset(examples, stream.Count, bad.Count, bad.Reasons);
    }

    /// <summary>
    /// Instruction data as Stanford Alpaca: one JSON object a line with "instruction", optional "input" and "output".
    /// The example is the prompt (<see cref="PromptWithInput"/> or <see cref="PromptWithoutInput"/>, encoded with
    /// the encoder's special-token prefix but no suffix) followed by the output (encoded on its own, without special
    /// tokens) and EOS when the encoder has one; both are encoded separately so the boundary is exact. Labels are
    /// -100 on every prompt token and the ids on the response and EOS. Longer examples lose tokens from the end,
    /// down to <paramref name="maxLength"/>; one whose prompt leaves no response token is a bad row.
    /// </summary>
    /// <exception cref="DataFormatException">A bad row without <paramref name="skipBadRows"/>.</exception>
    public static LanguageModelDataset FromAlpacaJsonl(string path, ITextEncoder encoder, int maxLength, bool skipBadRows = false)
    {
        if (maxLength < 1) throw new ArgumentOutOfRangeException(nameof(maxLength), "maxLength must be at least 1");
        var table = TableFile.Read(path, TableFormat.Jsonl);
        var bad = new BadRows(path, skipBadRows);
        var examples = new List<Example>();
        long tokens = 0;
        foreach (var record in table.Records)
        {
            if (record.Error is not null) { bad.Report(record.Line, record.Error); continue; }
            var fields = record.Fields!;
            string? instruction = fields.GetValueOrDefault("instruction");
            string? input = fields.GetValueOrDefault("input");
            string? output = fields.GetValueOrDefault("output");
            string? problem = instruction is null ? "missing field 'instruction'"
                : string.IsNullOrWhiteSpace(instruction) ? "empty text in 'instruction'"
                : output is null ? "missing field 'output'"
                : string.IsNullOrWhiteSpace(output) ? "empty text in 'output'"
                : null;
            if (problem is not null) { bad.Report(record.Line, problem); continue; }

            int[] prompt = Truncation.EncodeWithoutSuffix(encoder, Prompt(instruction!, input));
            var response = new List<int>(encoder.Encode(output!, addSpecialTokens: false));
            if (encoder.EosId is int eos) response.Add(eos);
            if (prompt.Length >= maxLength)
            {
                bad.Report(record.Line, $"the prompt ({prompt.Length} tokens) leaves no room for the response within max length {maxLength}");
                continue;
            }
            tokens += prompt.Length + response.Count;
            int keep = Math.Min(response.Count, maxLength - prompt.Length);
            int[] ids = [.. prompt, .. response.Take(keep)];
            int[] labels = [.. Enumerable.Repeat(IgnoreIndex, prompt.Length), .. response.Take(keep)];
            examples.Add(new Example(ids, LabelIds: labels) { SourceLine = record.Line });
        }
        return new LanguageModelDataset(examples, tokens, bad.Count, bad.Reasons);
    }

    /// <summary>The Alpaca prompt of a record: the with-input template when the input is non-empty.</summary>
    public static string Prompt(string instruction, string? input) => string.IsNullOrEmpty(input)
        ? Fill(PromptWithoutInput, instruction, "")
        : Fill(PromptWithInput, instruction, input);

    /// <summary>Replaces the placeholders in one pass, so braces inside the texts stay as they are.</summary>
    internal static string Fill(string template, string instruction, string input)
    {
        var text = new StringBuilder(template.Length + instruction.Length + input.Length);
        for (int i = 0; i < template.Length;)
        {
            if (template.AsSpan(i).StartsWith("{instruction}")) { text.Append(instruction); i += "{instruction}".Length; }
            else if (template.AsSpan(i).StartsWith("{input}")) { text.Append(input); i += "{input}".Length; }
            else text.Append(template[i++]);
        }
        return text.ToString();
    }
}
