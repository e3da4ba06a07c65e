using System.Text;
using System.Text.RegularExpressions;

namespace SparseTune.Pretraining;

/// <summary>A trained GPT-2 style byte-level BPE: vocab.json entries (token → id) and merges.txt lines, in rank order.</summary>
public sealed record ByteLevelBpe(IReadOnlyDictionary<string, int> Vocab, IReadOnlyList<(string Left, string Right)> Merges)
{
    public const string EndOfText = "<|endoftext|>";

    /// <summary>Writes vocab.json and merges.txt (with the "#version" header GPT-2's file has) into <paramref name="dir"/>.</summary>
    public void Save(string dir)
    {
        var ordered = Vocab.OrderBy(e => e.Value).ToDictionary(e => e.Key, e => e.Value);
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "vocab.json"), System.Text.Json.JsonSerializer.Serialize(ordered,
            new System.Text.Json.JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
        var merges = new StringBuilder("#version: 0.2\n");
        foreach (var (left, right) in Merges) merges.Append(left).Append(' ').Append(right).Append('\n');
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "merges.txt"), merges.ToString());
    }
}

/// <summary>
/// Trains a GPT-2 byte-level BPE tokenizer on a corpus, as Hugging Face's <c>ByteLevelBPETokenizer</c> does:
/// text is split with GPT-2's pre-tokenization pattern, each piece becomes its UTF-8 bytes written in GPT-2's
/// byte-to-character alphabet (space is "Ġ"), and the most frequent adjacent symbol pair is merged repeatedly
/// until the vocabulary holds <c>vocabSize</c> entries: the 256 byte symbols (ids 0–255 in GPT-2's order), one
/// token per new merged string (two merges can spell the same token; it keeps its first id), then <c>&lt;|endoftext|&gt;</c>. Ties go to the pair whose strings sort first (ordinal), so
/// training is deterministic. Pair counts are updated incrementally: a merge touches only the words holding it.
/// </summary>
public static class ByteLevelBpeTrainer
{
    /// <summary>GPT-2's pre-tokenization pattern (contractions, letters, digits, other symbols, whitespace).</summary>
    static readonly Regex PreTokenizer = new(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+", RegexOptions.Compiled);

    /// <summary>GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to code points from 256 up, in byte order.</summary>
    public static IReadOnlyList<string> ByteSymbols { get; } = BuildByteSymbols();

    static string[] BuildByteSymbols()
    {
        var symbols = new string[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = b is >= '!' and <= '~' or >= 0xA1 and <= 0xAC or >= 0xAE and <= 0xFF;
            symbols[b] = ((char)(printable ? b : next++)).ToString();
        }
        return symbols;
    }

    /// <summary>GPT-2's id order of the byte symbols: the printable ones by byte value, then the remapped ones.</summary>
    static IEnumerable<string> ByteSymbolsInGpt2Order() =>
        Enumerable.Range(0, 256).Select(b => ByteSymbols[b]).OrderBy(s => (int)s[0]);

    public static ByteLevelBpe Train(IEnumerable<string> texts, int vocabSize)
    {
        if (vocabSize < 257) throw new ArgumentOutOfRangeException(nameof(vocabSize), $"vocabSize {vocabSize} is below the 257 entries of the byte alphabet plus {ByteLevelBpe.EndOfText}");

        // Unique pre-tokenized words with their counts, as symbol-id sequences.
        var symbolNames = new List<string>(ByteSymbolsInGpt2Order());
        var symbolIds = symbolNames.Select((s, i) => (s, i)).ToDictionary(p => p.s, p => p.i, StringComparer.Ordinal);
        var wordCounts = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (string text in texts)
            foreach (Match piece in PreTokenizer.Matches(text))
                wordCounts[piece.Value] = wordCounts.GetValueOrDefault(piece.Value) + 1;
        var words = new List<List<int>>(wordCounts.Count);
        var counts = new List<long>(wordCounts.Count);
        foreach (var (word, count) in wordCounts.OrderBy(w => w.Key, StringComparer.Ordinal))
        {
            words.Add(Encoding.UTF8.GetBytes(word).Select(b => symbolIds[ByteSymbols[b]]).ToList());
            counts.Add(count);
        }

        // Pair statistics: total count and the words holding each pair.
        var pairCounts = new Dictionary<(int, int), long>();
        var pairWords = new Dictionary<(int, int), HashSet<int>>();
        void CountWord(int w, int sign)
        {
            var symbols = words[w];
            for (int i = 0; i + 1 < symbols.Count; i++)
            {
                var pair = (symbols[i], symbols[i + 1]);
                pairCounts[pair] = pairCounts.GetValueOrDefault(pair) + sign * counts[w];
                if (sign > 0)
                {
                    if (!pairWords.TryGetValue(pair, out var set)) pairWords[pair] = set = [];
                    set.Add(w);
                }
            }
        }
        for (int w = 0; w < words.Count; w++) CountWord(w, +1);

        var merges = new List<(string, string)>();
        while (symbolNames.Count + 1 < vocabSize)
        {
            (int, int) best = default;
            long bestCount = 0;
            foreach (var (pair, count) in pairCounts)
            {
                if (count < bestCount || count <= 0) continue;
                if (count > bestCount || ComparePairs(pair, best, symbolNames) < 0) { best = pair; bestCount = count; }
            }
            if (bestCount < 2) break; // nothing left that a merge would compress
            string name = symbolNames[best.Item1] + symbolNames[best.Item2];
            if (!symbolIds.TryGetValue(name, out int merged))
            {
                symbolIds[name] = merged = symbolNames.Count;
                symbolNames.Add(name);
            }
            merges.Add((symbolNames[best.Item1], symbolNames[best.Item2]));
            foreach (int w in pairWords[best].ToArray())
            {
                CountWord(w, -1);
                words[w] = MergeSymbols(words[w], best, merged);
                CountWord(w, +1);
            }
            pairCounts.Remove(best);
            pairWords.Remove(best);
        }

        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (string symbol in symbolNames) vocab.Add(symbol, vocab.Count);
        vocab[ByteLevelBpe.EndOfText] = vocab.Count;
        return new ByteLevelBpe(vocab, merges);
    }

    static int ComparePairs((int, int) a, (int, int) b, List<string> names)
    {
        int c = string.CompareOrdinal(names[a.Item1], names[b.Item1]);
        return c != 0 ? c : string.CompareOrdinal(names[a.Item2], names[b.Item2]);
    }

    static List<int> MergeSymbols(List<int> symbols, (int Left, int Right) pair, int merged)
    {
        var result = new List<int>(symbols.Count);
        for (int i = 0; i < symbols.Count; i++)
        {
            if (i + 1 < symbols.Count && symbols[i] == pair.Left && symbols[i + 1] == pair.Right) { result.Add(merged); i++; }
            else result.Add(symbols[i]);
        }
        return result;
    }
}
