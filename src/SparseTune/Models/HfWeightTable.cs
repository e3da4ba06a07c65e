namespace SparseTune.Models;

/// <summary>
/// One row of the explicit Hugging Face ↔ SparseTune name table. <paramref name="Transposed"/> is set for
/// GPT-2's Conv1D weights, which Hugging Face stores (in, out) while <see cref="Nn.TunableLinear"/> holds (out, in).
/// </summary>
public sealed record WeightMapping(string CheckpointName, string ParameterName, bool Transposed = false);

/// <summary>
/// The full name table of one model instance: every parameter/persistent buffer of the model appears once;
/// checkpoint keys matching <see cref="IgnoredKeyPatterns"/> are known and skipped (e.g. GPT-2's causal-mask
/// buffers <c>h.N.attn.bias</c>); <see cref="AlternativePrefixes"/> lets a checkpoint omit or add a prefix
/// (GPT-2 files come with and without <c>transformer.</c>).
/// </summary>
public sealed class HfWeightTable
{
    public required IReadOnlyList<WeightMapping> Entries { get; init; }

    /// <summary>Regular expressions over checkpoint keys that are recognised and not loaded.</summary>
    public IReadOnlyList<string> IgnoredKeyPatterns { get; init; } = [];

    /// <summary>Pairs (prefix in our names, prefix in the file): a key "bare" in the file gets ours added.</summary>
    public IReadOnlyList<(string Ours, string InFile)> AlternativePrefixes { get; init; } = [];

    /// <summary>
    /// Parameters that may be missing from the file, with the parameter they are filled from
    /// (e.g. an untied-by-file lm_head). Used for heads that a new task initialises.
    /// </summary>
    public IReadOnlySet<string> OptionalParameters { get; init; } = new HashSet<string>();
}
