using SparseTune.Data;
using SparseTune.Tokenization;

namespace SparseTune.Tests.Data;

/// <summary>
/// A test double for <see cref="ISpanEncoder"/>: every character is one token (id = its UTF-16 code) spanning
/// [i, i + 1); pairs get BERT's template [CLS] a [SEP] b [SEP] with <see cref="CharEncoder"/>'s Cls 3 and Sep 4.
/// </summary>
public sealed class CharSpanEncoder : ISpanEncoder
{
    public EncodedText EncodeWithOffsets(string text) =>
        new(CharEncoder.Chars(text), [.. Enumerable.Range(0, text.Length).Select(i => new CharSpan(i, i + 1))]);

    public EncodedPair BuildPair(IReadOnlyList<int> first, IReadOnlyList<int> second) =>
        new([CharEncoder.Cls, .. first, CharEncoder.Sep, .. second, CharEncoder.Sep],
            [.. Enumerable.Repeat(0, first.Count + 2), .. Enumerable.Repeat(1, second.Count + 1)]) { SecondStart = first.Count + 2 };

    public int PairSpecialTokenCount => 3;
}
