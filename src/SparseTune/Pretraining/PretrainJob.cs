using System.Text.Json;
using SparseTune.Models;
using SparseTune.Tokenization;
using SparseTune.Training;
using SparseTune.Tuners;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Pretraining;

/// <summary>Options of `sparsetune pretrain`: a small BERT trained from scratch with masked-language modelling.</summary>
public sealed record PretrainOptions
{
    public required IReadOnlyList<string> CorpusFiles { get; init; }
    public required string OutputDirectory { get; init; }
    public int VocabSize { get; init; } = 6000;
    public int HiddenSize { get; init; } = 128;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 4;
    public int IntermediateSize { get; init; } = 512;
    public int MaxLength { get; init; } = 128;
    public int Epochs { get; init; } = 3;
    public int? MaxSteps { get; init; }
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 1e-3;
    public int Seed { get; init; } = 1234;
    /// <summary>Share of paragraphs held out to measure masked-token loss and accuracy.</summary>
    public double HeldOutFraction { get; init; } = 0.02;
}

/// <summary>
/// Builds the bundled demo model: WordPiece vocab from the corpus, a BERT masked-LM trained from scratch with
/// the same Trainer every fine-tuning method uses, saved as a Hugging Face folder (config.json,
/// model.safetensors, vocab.txt, tokenizer_config.json) plus PRETRAINING.json recording how it was made.
/// </summary>
public static class PretrainJob
{
    public static TrainingResult Run(PretrainOptions options, IProgress<TrainingProgress>? progress = null, string? commandLine = null)
    {
        var paragraphs = new List<string>();
        foreach (string file in options.CorpusFiles)
        {
            if (!File.Exists(file)) throw new FileNotFoundException($"corpus file not found: {file}", file);
            paragraphs.AddRange(SplitParagraphs(File.ReadAllText(file)));
        }
        if (paragraphs.Count < 10) throw new InvalidDataException($"the corpus has only {paragraphs.Count} paragraphs; pretraining needs more text");

        Directory.CreateDirectory(options.OutputDirectory);
        var vocab = WordPieceVocabBuilder.Build(paragraphs, options.VocabSize);
        IO.AtomicFile.WriteAllText(Path.Combine(options.OutputDirectory, "vocab.txt"), string.Join("\n", vocab) + "\n");
        IO.AtomicFile.WriteAllText(Path.Combine(options.OutputDirectory, "tokenizer_config.json"),
            JsonSerializer.Serialize(new { do_lower_case = true, model_max_length = options.MaxLength, tokenizer_class = "BertTokenizer" }));
        var tokenizer = TextTokenizer.FromFolder(options.OutputDirectory);

        var sequences = paragraphs.Select(p => Truncate(tokenizer.Encode(p), options.MaxLength)).Where(s => s.Length > 2).ToList();
        new Random(options.Seed).Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(sequences));
        int heldOut = Math.Max(1, (int)(sequences.Count * options.HeldOutFraction));
        var evalSequences = sequences.Take(heldOut).ToList();
        var trainSequences = sequences.Skip(heldOut).ToList();

        var config = new BertConfig
        {
            ModelType = "bert",
            Architectures = ["BertForMaskedLM"],
            VocabSize = vocab.Count,
            Hidden = options.HiddenSize,
            Layers = options.Layers,
            Heads = options.Heads,
            Intermediate = options.IntermediateSize,
            MaxPositionEmbeddings = options.MaxLength,
            TypeVocabSize = 2,
            PadTokenId = tokenizer.PadId ?? 0,
        };
        config.Validate();
        torch.random.manual_seed(options.Seed);
        using var model = new BertTransformer(config, ModelHead.MaskedLM);
        int pad = tokenizer.PadId ?? 0, mask = tokenizer.MaskId ?? throw new InvalidDataException("vocab has no [MASK]");
        var specials = new HashSet<int>(new[] { tokenizer.PadId, tokenizer.ClsId, tokenizer.SepId, tokenizer.UnkId }.Where(i => i.HasValue).Select(i => i!.Value));
        var train = new MaskedLanguageModelBatches(trainSequences, options.BatchSize, pad, mask, specials, vocab.Count, options.Seed);
        var eval = new MaskedLanguageModelBatches(evalSequences, options.BatchSize, pad, mask, specials, vocab.Count, options.Seed + 1);

        var trainingOptions = new TrainingOptions
        {
            Epochs = options.Epochs,
            MaxSteps = options.MaxSteps,
            BatchSize = options.BatchSize,
            LearningRate = options.LearningRate,
            WarmupRatio = 0.06,
            WeightDecay = 0.01,
            Seed = options.Seed,
            EvaluateBaseline = false,
            LogEvery = 20,
            OutputDirectory = Path.Combine(options.OutputDirectory, ".pretrain-run"),
        };
        using var tuner = new FullFineTuner();
        var trainer = new Trainer(model, tuner, TaskKind.MaskedLM, trainingOptions)
        {
            Progress = progress,
            Evaluate = m => MaskedLmMetrics(m, eval),
        };
        TrainingResult result = trainer.Run(train);
        PretrainedModel.Save(model, options.OutputDirectory);
        IO.AtomicFile.WriteAllText(Path.Combine(options.OutputDirectory, "PRETRAINING.json"), JsonSerializer.Serialize(new
        {
            command = commandLine,
            corpus = options.CorpusFiles.Select(Path.GetFileName),
            paragraphs = paragraphs.Count,
            train_sequences = trainSequences.Count,
            held_out_sequences = evalSequences.Count,
            steps = result.Steps,
            tokens = result.Tokens,
            wall_seconds = result.WallSeconds,
            train_loss_first = result.TrainLossFirst,
            train_loss_last = result.TrainLossLast,
            held_out = result.Eval,
            options,
        }, new JsonSerializerOptions { WriteIndented = true }));
        Directory.Delete(trainingOptions.OutputDirectory, true);
        return result;
    }

    /// <summary>Masked-token loss and accuracy over held-out batches.</summary>
    static IReadOnlyDictionary<string, double> MaskedLmMetrics(TransformerModel model, IBatchSource batches)
    {
        double lossSum = 0; long correct = 0, count = 0;
        foreach (int[] indices in batches.EpochBatches(0))
        {
            using var scope = NewDisposeScope();
            using var batch = batches.Build(indices);
            using var output = model.Forward(batch.InputIds, batch.AttentionMask, batch.TokenTypeIds);
            Tensor labels = batch.Labels.reshape(-1);
            Tensor logits = output.Logits.reshape(-1, output.Logits.shape[^1]);
            Tensor chosen = labels.ne(Losses.IgnoreIndex);
            long n = chosen.sum().item<long>();
            if (n == 0) continue;
            lossSum += nn.functional.cross_entropy(logits, labels, ignore_index: Losses.IgnoreIndex, reduction: nn.Reduction.Sum).item<float>();
            correct += logits.argmax(-1).eq(labels).logical_and(chosen).sum().item<long>();
            count += n;
        }
        return new Dictionary<string, double>
        {
            ["masked_lm_loss"] = count > 0 ? lossSum / count : double.NaN,
            ["masked_lm_accuracy"] = count > 0 ? (double)correct / count : double.NaN,
        };
    }

    /// <summary>Paragraphs separated by blank lines, inner whitespace collapsed.</summary>
    public static IEnumerable<string> SplitParagraphs(string text) =>
        text.ReplaceLineEndings("\n").Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(p => string.Join(' ', p.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)))
            .Where(p => p.Length > 0);

    /// <summary>Keeps the first maxLength ids, with the final [SEP] kept at the end.</summary>
    static int[] Truncate(IReadOnlyList<int> ids, int maxLength)
    {
        if (ids.Count <= maxLength) return ids.ToArray();
        var kept = ids.Take(maxLength).ToArray();
        kept[^1] = ids[^1];
        return kept;
    }
}
