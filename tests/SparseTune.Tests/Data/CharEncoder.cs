using SparseTune.Data;

namespace SparseTune.Tests.Data;

/// <summary>Special-token layouts of <see cref="CharEncoder"/>: BERT ([CLS] a [SEP] b [SEP]), GPT-2 (none), Llama (BOS prefix).</summary>
public enum CharTemplate { Bert, Gpt, Llama }

/// <summary>
/// A test double tokenizer: every character is one token whose id is its UTF-16 code (so "ab" → [97, 98]);
/// specials are Pad 0, Bos 1, Eos 2, Cls 3, Sep 4.
/// </summary>
public sealed class CharEncoder(CharTemplate template = CharTemplate.Bert, bool hasEos = true) : ITextEncoder
{
    public const int Pad = 0, Bos = 1, Eos = 2, Cls = 3, Sep = 4;

    public int PadId => Pad;
    public int? EosId => hasEos ? Eos : null;

    public static int[] Chars(string text) => text.Select(c => (int)c).ToArray();

    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens)
    {
        int[] chars = Chars(text);
        if (!addSpecialTokens) return chars;
        return template switch
        {
            CharTemplate.Bert => [Cls, .. chars, Sep],
            CharTemplate.Llama => [Bos, .. chars],
            _ => chars,
        };
    }

    public (IReadOnlyList<int> Ids, IReadOnlyList<int> TokenTypeIds) EncodePair(string a, string b)
    {
        int[] first = Chars(a), second = Chars(b);
        return template switch
        {
            CharTemplate.Bert => ([Cls, .. first, Sep, .. second, Sep],
                [.. Enumerable.Repeat(0, first.Length + 2), .. Enumerable.Repeat(1, second.Length + 1)]),
            CharTemplate.Llama => ([Bos, .. first, .. second], [.. Enumerable.Repeat(0, first.Length + second.Length + 1)]),
            _ => ([.. first, .. second], [.. Enumerable.Repeat(0, first.Length + second.Length)]),
        };
    }
}
