using SparseTune.Tokenization;

namespace SparseTune.Data;

/// <summary>Lets the data loaders use a model folder's <see cref="TextTokenizer"/>.</summary>
public sealed class TokenizerEncoder(TextTokenizer tokenizer) : ITextEncoder, ISpanEncoder
{
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens) => tokenizer.Encode(text, addSpecialTokens);

    public (IReadOnlyList<int> Ids, IReadOnlyList<int> TokenTypeIds) EncodePair(string a, string b)
    {
        var pair = tokenizer.EncodePairWithTypeIds(a, b);
        return (pair.Ids, pair.TokenTypeIds);
    }

    /// <summary>The pad id, else EOS (GPT-2 has no pad token; padded positions are masked anyway), else 0.</summary>
    public int PadId => tokenizer.PadId ?? tokenizer.EosId ?? 0;

    public int? EosId => tokenizer.EosId;

    public EncodedText EncodeWithOffsets(string text) => tokenizer.EncodeWithOffsets(text);

    public EncodedPair BuildPair(IReadOnlyList<int> first, IReadOnlyList<int> second) => tokenizer.BuildPair(first, second);

    public int PairSpecialTokenCount => tokenizer.PairSpecialTokenCount;
}
