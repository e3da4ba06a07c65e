using System.Text.Json;
using System.Text.Json.Serialization;
using SparseTune.Data;
using SparseTune.IO;

namespace SparseTune.Generation;

/// <summary>
/// How a model fine-tuned on instructions expects its prompts: <c>finetune --data alpaca</c> writes it as
/// <see cref="FileName"/> beside what it ships (the run folder, model/, adapter/), and <c>generate</c> wraps each
/// prompt in it, so that a user types the instruction and the model sees what it was trained on.
/// </summary>
public sealed record PromptTemplate
{
    public const string FileName = "prompt_template.json";

    /// <summary>The template's name ("alpaca").</summary>
    [JsonPropertyName("name")] public required string Name { get; init; }

    /// <summary>The prompt with "{instruction}" and "{input}" placeholders, for requests with an input.</summary>
    [JsonPropertyName("prompt_with_input")] public required string WithInput { get; init; }

    /// <summary>The prompt with an "{instruction}" placeholder, for requests without input.</summary>
    [JsonPropertyName("prompt_without_input")] public required string WithoutInput { get; init; }

    /// <summary>Stanford Alpaca's prompts, which <c>--data alpaca</c> trains with.</summary>
    public static PromptTemplate Alpaca { get; } = new()
    {
        Name = "alpaca",
        WithInput = LanguageModelData.PromptWithInput,
        WithoutInput = LanguageModelData.PromptWithoutInput,
    };

    /// <summary>The prompt for an instruction (and an optional input), as training formatted it.</summary>
    public string Apply(string instruction, string? input = null) => string.IsNullOrEmpty(input)
        ? LanguageModelData.Fill(WithoutInput, instruction, "")
        : LanguageModelData.Fill(WithInput, instruction, input);

    public void Save(string directory) =>
        AtomicFile.WriteAllText(Path.Combine(directory, FileName), JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true }));

    /// <summary>
    /// The template stored in the first of <paramref name="places"/> (folders, or files whose folder is searched)
    /// that holds one, also looking one folder up (a run folder above model/ or adapter/); null when none does.
    /// </summary>
    public static PromptTemplate? Find(params string?[] places)
    {
        foreach (string? place in places)
        {
            if (string.IsNullOrEmpty(place)) continue;
            string? folder = Directory.Exists(place) ? place : Path.GetDirectoryName(Path.GetFullPath(place));
            foreach (string? candidate in new[] { folder, folder is null ? null : Path.GetDirectoryName(Path.GetFullPath(folder)) })
            {
                if (candidate is null) continue;
                string file = Path.Combine(candidate, FileName);
                if (!File.Exists(file)) continue;
                try
                {
                    return JsonSerializer.Deserialize<PromptTemplate>(File.ReadAllText(file))
                        ?? throw new InvalidDataException($"{file}: empty");
                }
                catch (JsonException e)
                {
                    throw new InvalidDataException($"{file}: not a prompt template ({e.Message})", e);
                }
            }
        }
        return null;
    }
}
