using System.Globalization;
using System.Text;

namespace SparseTune.Pretraining;

/// <summary>
/// Builds a BERT-style WordPiece vocab.txt from a corpus: the special tokens, every character seen (word-initial
/// and "##" continuation forms, so any text of those characters tokenizes without [UNK]), then the most frequent
/// whole words. Pre-tokenization matches BERT's BasicTokenizer for uncased text: lowercase, strip accents, split
/// on whitespace and around punctuation.
/// </summary>
public static class WordPieceVocabBuilder
{
    public static readonly IReadOnlyList<string> SpecialTokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

    public static List<string> Build(IEnumerable<string> texts, int vocabSize, int minCharCount = 2)
    {
        var words = new Dictionary<string, int>(StringComparer.Ordinal);
        var chars = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string text in texts)
            foreach (string word in PreTokenize(text))
            {
                words[word] = words.GetValueOrDefault(word) + 1;
                foreach (string c in TextElements(word)) chars[c] = chars.GetValueOrDefault(c) + 1;
            }

        var vocab = new List<string>(SpecialTokens);
        var present = new HashSet<string>(vocab, StringComparer.Ordinal);
        void Add(string token) { if (present.Add(token)) vocab.Add(token); }
        foreach (var c in chars.Where(c => c.Value >= minCharCount).OrderBy(c => c.Key, StringComparer.Ordinal))
        {
            Add(c.Key);
            Add("##" + c.Key);
        }
        foreach (var w in words.OrderByDescending(w => w.Value).ThenBy(w => w.Key, StringComparer.Ordinal))
        {
            if (vocab.Count >= vocabSize) break;
            Add(w.Key);
        }
        return vocab;
    }

    /// <summary>Lowercased, accent-stripped words and single punctuation marks.</summary>
    public static IEnumerable<string> PreTokenize(string text)
    {
        string normalized = StripAccents(text.ToLowerInvariant());
        var current = new StringBuilder();
        foreach (char ch in normalized)
        {
            if (char.IsWhiteSpace(ch) || char.IsControl(ch))
            {
                if (current.Length > 0) { yield return current.ToString(); current.Clear(); }
            }
            else if (IsPunctuation(ch))
            {
                if (current.Length > 0) { yield return current.ToString(); current.Clear(); }
                yield return ch.ToString();
            }
            else current.Append(ch);
        }
        if (current.Length > 0) yield return current.ToString();
    }

    /// <summary>BERT treats all non-alphanumeric ASCII as punctuation, plus Unicode P* categories.</summary>
    static bool IsPunctuation(char ch) =>
        (ch >= 33 && ch <= 47) || (ch >= 58 && ch <= 64) || (ch >= 91 && ch <= 96) || (ch >= 123 && ch <= 126) || char.IsPunctuation(ch);

    static string StripAccents(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (char ch in text.Normalize(NormalizationForm.FormD))
            if (CharUnicodeInfo.GetUnicodeCategory(ch) != UnicodeCategory.NonSpacingMark) sb.Append(ch);
        return sb.ToString();
    }

    static IEnumerable<string> TextElements(string word)
    {
        var e = StringInfo.GetTextElementEnumerator(word);
        while (e.MoveNext()) yield return (string)e.Current;
    }
}
