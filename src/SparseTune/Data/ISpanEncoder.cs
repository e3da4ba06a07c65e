using SparseTune.Tokenization;

namespace SparseTune.Data;

/// <summary>
/// What extractive question answering needs from a tokenizer beyond <see cref="ITextEncoder"/>: a text's tokens with
/// their character spans, and the model's pair template around already-encoded question and context tokens.
/// </summary>
public interface ISpanEncoder
{
    /// <summary>Token ids without special tokens (as <c>Encode(text, false)</c>) and, index for index, each token's
    /// character span [start, end) in <paramref name="text"/>.</summary>
    EncodedText EncodeWithOffsets(string text);

    /// <summary>The pair template around two id lists: [CLS] q [SEP] c [SEP] with token types 0 then 1 (BERT),
    /// &lt;s&gt; q &lt;/s&gt;&lt;/s&gt; c &lt;/s&gt; all type 0 (RoBERTa); <see cref="EncodedPair.SecondStart"/> is where c begins.</summary>
    EncodedPair BuildPair(IReadOnlyList<int> first, IReadOnlyList<int> second);

    /// <summary>Special tokens <see cref="BuildPair"/> adds: 3 for BERT, 4 for RoBERTa.</summary>
    int PairSpecialTokenCount { get; }
}
