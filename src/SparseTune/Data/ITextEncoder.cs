namespace SparseTune.Data;

/// <summary>
/// What the data loaders need from a tokenizer. <see cref="Encode"/> with <c>addSpecialTokens</c> adds the
/// model's template ([CLS] … [SEP], a BOS prefix, nothing for GPT-2); without it returns the text's own tokens,
/// which the loaders use to find (and keep) the special tokens when they truncate.
/// </summary>
public interface ITextEncoder
{
    IReadOnlyList<int> Encode(string text, bool addSpecialTokens);

    /// <summary>A sequence pair with the model's pair template, and token-type ids index for index.</summary>
    (IReadOnlyList<int> Ids, IReadOnlyList<int> TokenTypeIds) EncodePair(string a, string b);

    /// <summary>Id the batcher pads with.</summary>
    int PadId { get; }

    /// <summary>End-of-sequence id, appended between text documents and after Alpaca responses; null when the vocabulary has none.</summary>
    int? EosId { get; }
}
