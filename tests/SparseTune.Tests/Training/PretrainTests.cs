using Xunit;
using System.Text.Json;
using SparseTune.Models;
using SparseTune.Pretraining;
using SparseTune.Tests.Support;
using SparseTune.Tokenization;

namespace SparseTune.Tests.TrainingLoop;

public sealed class PretrainTests : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("pretrain");
    public void Dispose() => Directory.Delete(temp, true);

    [Fact]
    public void Bpe_MergesTheMostFrequentPairsAsComputedByHand()
    {
        // Pieces: "ab" ×1, " ab" ×2, "abc" ×1 → bytes a b | Ġ a b | a b c.
        // Pair counts: (a,b) 4, (Ġ,a) 2, (b,c) 1 → merge "a b". Then (Ġ,ab) 2, (ab,c) 1 → merge "Ġ ab".
        // Then only (ab,c) with count 1 is left: a merge would compress nothing more than once, so training stops.
        var bpe = ByteLevelBpeTrainer.Train(["ab ab ab", "abc"], vocabSize: 300);
        Assert.Equal([("a", "b"), ("Ġ", "ab")], bpe.Merges);
        Assert.Equal(259, bpe.Vocab.Count);
        Assert.Equal(256, bpe.Vocab["ab"]);
        Assert.Equal(257, bpe.Vocab["Ġab"]);
        Assert.Equal(258, bpe.Vocab[ByteLevelBpe.EndOfText]);
        // GPT-2's byte alphabet order: "!" first, space (Ġ) at 220, newline (Ċ) at 198.
        Assert.Equal(0, bpe.Vocab["!"]);
        Assert.Equal(220, bpe.Vocab["Ġ"]);
        Assert.Equal(198, bpe.Vocab["Ċ"]);
    }

    [Fact]
    public void Bpe_StopsAtTheRequestedVocabSizeAndLoadsAsAGpt2Tokenizer()
    {
        string[] corpus = ["The cat sat on the mat.", "The dog sat on the log!", "Cats and dogs — café, naïve, 12345."];
        var bpe = ByteLevelBpeTrainer.Train(corpus.SelectMany(t => Enumerable.Repeat(t, 5)), vocabSize: 270);
        Assert.Equal(270, bpe.Vocab.Count);
        Assert.True(bpe.Merges.Count >= 270 - 257);
        Assert.Equal(bpe.Merges, ByteLevelBpeTrainer.Train(corpus.SelectMany(t => Enumerable.Repeat(t, 5)), vocabSize: 270).Merges);

        bpe.Save(temp);
        var tokenizer = TextTokenizer.FromFolder(temp);
        Assert.Equal(TextTokenizer.BpeKind, tokenizer.Kind);
        Assert.Equal(269, tokenizer.EosId);
        foreach (string text in corpus.Append("unseen wörds ✓ and\nnew lines"))
        {
            var ids = tokenizer.Encode(text, addSpecialTokens: false);
            Assert.Equal(text, tokenizer.Decode(ids));
        }
        // Merged tokens are used: "Ġsat" is frequent enough to be one token only if the merges apply in rank order.
        var sat = tokenizer.Encode(" sat", addSpecialTokens: false);
        Assert.True(sat.Count < 4, $"' sat' took {sat.Count} tokens");
    }

    [Theory]
    [InlineData(PretrainArchitecture.Bert)]
    [InlineData(PretrainArchitecture.Gpt2)]
    public void Pretrain_LowersTheLossAndWritesALoadableHuggingFaceFolder(PretrainArchitecture architecture)
    {
        string corpus = Path.Combine(temp, "corpus.txt");
        var random = new Random(3);
        string[] words = ["the", "cat", "dog", "sat", "on", "a", "mat", "log", "and", "ran", "home", "fast"];
        File.WriteAllText(corpus, string.Join("\n\n", Enumerable.Range(0, 300).Select(_ =>
            string.Join(' ', Enumerable.Range(0, 6 + random.Next(6)).Select(i => i % 3 == 0 ? "the" : words[random.Next(words.Length)])) + ".")));
        string output = Path.Combine(temp, "model");
        var result = PretrainJob.Run(new PretrainOptions
        {
            CorpusFiles = [corpus],
            OutputDirectory = output,
            Architecture = architecture,
            VocabSize = 300,
            HiddenSize = 32,
            Layers = 1,
            Heads = 2,
            IntermediateSize = 64,
            MaxLength = 32,
            MaxSteps = 40,
            BatchSize = 16,
            LearningRate = 3e-3,
            HeldOutFraction = 0.1,
        });
        Assert.Equal(40, result.Steps);
        Assert.True(result.TrainLossLast < result.TrainLossFirst * 0.8, $"loss {result.TrainLossFirst} → {result.TrainLossLast}");

        using var model = PretrainedModel.Load(output);
        Assert.Equal(architecture == PretrainArchitecture.Gpt2 ? "gpt2" : "bert", model.Config.ModelType);
        Assert.Equal(architecture == PretrainArchitecture.Gpt2 ? ModelHead.CausalLM : ModelHead.MaskedLM, model.Head);
        var tokenizer = TextTokenizer.FromFolder(output);
        Assert.Equal(model.Config.VocabSize, tokenizer.VocabSize);
        using var record = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "PRETRAINING.json")));
        Assert.Equal(40, record.RootElement.GetProperty("steps").GetInt32());
        Assert.False(Directory.Exists(Path.Combine(output, ".pretrain-run")));
    }
}
