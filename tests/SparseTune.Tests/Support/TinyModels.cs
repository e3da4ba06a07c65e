using System.Globalization;
using Xunit;

namespace SparseTune.Tests.Support;

/// <summary>Tiny model folders and data that command-level tests share.</summary>
public static class TinyModels
{
    public static string CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        return to;
    }

    /// <summary>
    /// The bert-tiny fixture plus a WordPiece vocab.txt of exactly its 223 ids (bert-tiny ships no tokenizer):
    /// special tokens, letters, ##letters, digits, punctuation and short words, padded with two-letter pieces.
    /// </summary>
    public static string BertWithVocab(string dir)
    {
        if (Directory.Exists(dir)) return dir;
        CopyFolder(Fixtures.Model("bert-tiny"), dir);
        var tokens = new List<string> { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
        tokens.AddRange(Enumerable.Range('a', 26).Select(c => ((char)c).ToString()));
        tokens.AddRange(Enumerable.Range('a', 26).Select(c => "##" + (char)c));
        tokens.AddRange(Enumerable.Range(0, 10).Select(d => d.ToString(CultureInfo.InvariantCulture)));
        tokens.AddRange([".", ",", "!", "?", "'", "-", ":", ";", "(", ")"]);
        tokens.AddRange(["the", "is", "was", "good", "bad", "fine", "movie", "film", "great", "awful", "okay", "day", "cat",
                         "dog", "sun", "rain", "very", "not", "so", "it", "and", "love", "hate", "plot", "cast", "ok", "meh"]);
        for (char x = 'a'; tokens.Count < 223; x++)
            for (char y = 'a'; y <= 'z' && tokens.Count < 223; y++)
                if (!tokens.Contains($"{x}{y}")) tokens.Add($"{x}{y}");
        Assert.Equal(223, tokens.Distinct().Count());
        File.WriteAllLines(Path.Combine(dir, "vocab.txt"), tokens);
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{ "do_lower_case": true, "tokenizer_class": "BertTokenizer" }""");
        return dir;
    }

    public static readonly string[] GoodRows =
    [
        """{"text": "a good movie", "label": "a"}""",
        """{"text": "the plot was bad", "label": "b"}""",
        """{"text": "it is okay", "label": "c"}""",
        """{"text": "great cast and great film", "label": "a"}""",
        """{"text": "awful day, so bad", "label": "b"}""",
        """{"text": "meh, fine", "label": "c"}""",
        """{"text": "love the sun", "label": "a"}""",
        """{"text": "hate the rain", "label": "b"}""",
        """{"text": "ok dog", "label": "c"}""",
        """{"text": "very good cat!", "label": "a"}""",
        """{"text": "not good at all", "label": "b"}""",
        """{"text": "so so", "label": "c"}""",
    ];
}
