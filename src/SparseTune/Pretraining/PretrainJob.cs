using System.Text.Json;
using SparseTune.Data;
using SparseTune.Models;
using SparseTune.Tokenization;
using SparseTune.Training;
using SparseTune.Tuners;
using SparseTune.Tuners.Full;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Pretraining;

/// <summary>What `sparsetune pretrain` builds.</summary>
public enum PretrainArchitecture
{
    /// <summary>A BERT masked LM with a WordPiece vocab.txt (uncased).</summary>
    Bert,
    /// <summary>A GPT-2 causal LM with a byte-level BPE (vocab.json + merges.txt).</summary>
    Gpt2,
}

/// <summary>Options of `sparsetune pretrain`: a small BERT (masked LM) or GPT-2 (causal LM) trained from scratch.</summary>
public sealed record PretrainOptions
{
    public required IReadOnlyList<string> CorpusFiles { get; init; }
    public required string OutputDirectory { get; init; }
    public PretrainArchitecture Architecture { get; init; } = PretrainArchitecture.Bert;
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
    /// <summary>cpu, cuda or auto (<see cref="Nn.ComputeDevice"/>).</summary>
    public string Device { get; init; } = "cpu";
    /// <summary>fp32 or bf16 mixed precision.</summary>
    public Nn.Precision Precision { get; init; }
    /// <summary>Share of paragraphs held out to measure masked-token loss and accuracy.</summary>
    public double HeldOutFraction { get; init; } = 0.02;
}

/// <summary>
/// Builds the bundled demo models with the same Trainer every fine-tuning method uses, saved as a Hugging Face
/// folder plus PRETRAINING.json recording how it was made. BERT: WordPiece vocab from the corpus, masked-LM
/// objective on one paragraph a sequence (config.json, model.safetensors, vocab.txt, tokenizer_config.json).
/// GPT-2: byte-level BPE from the corpus, next-token objective on paragraphs joined by &lt;|endoftext|&gt; and
/// packed into blocks of MaxLength (vocab.json and merges.txt instead of vocab.txt).
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
        var random = new Random(options.Seed);
        torch.random.manual_seed(options.Seed);
        var (model, train, evalSource, task, vocabSize, trainCount, evalCount) = options.Architecture == PretrainArchitecture.Gpt2
            ? PrepareGpt2(options, paragraphs, random)
            : PrepareBert(options, paragraphs, random);
        using var disposeModel = model;
        model.to(Nn.ComputeDevice.Resolve(options.Device));
        var trainingOptions = new TrainingOptions
        {
            Precision = options.Precision,
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
        var trainer = new Trainer(model, tuner, task, trainingOptions)
        {
            Progress = progress,
            Evaluate = task == TaskKind.MaskedLM ? m => MaskedLmMetrics(m, evalSource) : m => FineTuneJob.Evaluate(m, (Batcher)evalSource, task),
        };
        TrainingResult result = trainer.Run(train);
        PretrainedModel.Save(model, options.OutputDirectory);
        IO.AtomicFile.WriteAllText(Path.Combine(options.OutputDirectory, "PRETRAINING.json"), JsonSerializer.Serialize(new
        {
            command = commandLine,
            corpus = options.CorpusFiles.Select(Path.GetFileName),
            paragraphs = paragraphs.Count,
            vocab_size = vocabSize,
            train_sequences = trainCount,
            held_out_sequences = evalCount,
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

    /// <summary>A model to pretrain with its data: training and held-out batches, the objective, and counts for PRETRAINING.json.</summary>
    sealed record Prepared(TransformerModel Model, IBatchSource Train, IBatchSource HeldOut, TaskKind Task, int VocabSize, int TrainSequences, int HeldOutSequences);

    /// <summary>Shuffles a copy and holds out a share (at least one item) for evaluation.</summary>
    static (List<T> Train, List<T> HeldOut) SplitHeldOut<T>(IReadOnlyList<T> items, double fraction, Random random)
    {
        var shuffled = items.ToList();
        random.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(shuffled));
        int heldOut = Math.Max(1, (int)(shuffled.Count * fraction));
        return (shuffled.Skip(heldOut).ToList(), shuffled.Take(heldOut).ToList());
    }

    static Prepared PrepareBert(PretrainOptions options, List<string> paragraphs, Random random)
    {
        var vocab = WordPieceVocabBuilder.Build(paragraphs, options.VocabSize);
        IO.AtomicFile.WriteAllText(Path.Combine(options.OutputDirectory, "vocab.txt"), string.Join("\n", vocab) + "\n");
        IO.AtomicFile.WriteAllText(Path.Combine(options.OutputDirectory, "tokenizer_config.json"),
            JsonSerializer.Serialize(new { do_lower_case = true, model_max_length = options.MaxLength, tokenizer_class = "BertTokenizer" }));
        var tokenizer = TextTokenizer.FromFolder(options.OutputDirectory);

        var sequences = paragraphs.Select(p => Truncate(tokenizer.Encode(p), options.MaxLength)).Where(s => s.Length > 2).ToList();
        var (trainSequences, evalSequences) = SplitHeldOut(sequences, options.HeldOutFraction, random);

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
        var model = new BertTransformer(config, ModelHead.MaskedLM);
        int pad = tokenizer.PadId ?? 0, mask = tokenizer.MaskId ?? throw new InvalidDataException("vocab has no [MASK]");
        var specials = new HashSet<int>(new[] { tokenizer.PadId, tokenizer.ClsId, tokenizer.SepId, tokenizer.UnkId }.Where(i => i.HasValue).Select(i => i!.Value));
        var train = new MaskedLanguageModelBatches(trainSequences, options.BatchSize, pad, mask, specials, vocab.Count, options.Seed);
        var heldOutBatches = new MaskedLanguageModelBatches(evalSequences, options.BatchSize, pad, mask, specials, vocab.Count, options.Seed + 1);

        return new Prepared(model, train, heldOutBatches, TaskKind.MaskedLM, vocab.Count, trainSequences.Count, evalSequences.Count);
    }

    static Prepared PrepareGpt2(PretrainOptions options, List<string> paragraphs, Random random)
    {
        var bpe = ByteLevelBpeTrainer.Train(paragraphs, options.VocabSize);
        bpe.Save(options.OutputDirectory);
        IO.AtomicFile.WriteAllText(Path.Combine(options.OutputDirectory, "tokenizer_config.json"), JsonSerializer.Serialize(new
        {
            model_max_length = options.MaxLength,
            tokenizer_class = "GPT2Tokenizer",
            bos_token = ByteLevelBpe.EndOfText,
            eos_token = ByteLevelBpe.EndOfText,
            unk_token = ByteLevelBpe.EndOfText,
        }));
        var tokenizer = TextTokenizer.FromFolder(options.OutputDirectory);
        int eos = tokenizer.EosId ?? throw new InvalidDataException($"the trained vocabulary lacks {ByteLevelBpe.EndOfText}");

        var (trainParagraphs, evalParagraphs) = SplitHeldOut(paragraphs, options.HeldOutFraction, random);
        List<Example> Pack(IEnumerable<string> texts)
        {
            var stream = new List<int>();
            foreach (string text in texts) { stream.AddRange(tokenizer.Encode(text, addSpecialTokens: false)); stream.Add(eos); }
            return Enumerable.Range(0, stream.Count / options.MaxLength)
                .Select(b => stream.GetRange(b * options.MaxLength, options.MaxLength).ToArray())
                .Select(ids => new Example(ids, LabelIds: (int[])ids.Clone())).ToList();
        }
        var evalBlocks = Pack(evalParagraphs);
        var trainBlocks = Pack(trainParagraphs);
        if (evalBlocks.Count == 0 || trainBlocks.Count == 0)
            throw new InvalidDataException($"the corpus is too small for blocks of {options.MaxLength} tokens in both the training and the held-out part");

        var config = new Gpt2Config
        {
            ModelType = "gpt2",
            Architectures = ["GPT2LMHeadModel"],
            VocabSize = bpe.Vocab.Count,
            NEmbd = options.HiddenSize,
            NLayer = options.Layers,
            NHead = options.Heads,
            NInner = options.IntermediateSize,
            NPositions = options.MaxLength,
            BosTokenId = eos,
            EosTokenIdRaw = JsonSerializer.SerializeToElement(eos),
        };
        config.Validate();
        var model = new Gpt2Transformer(config, ModelHead.CausalLM);
        var train = new Batcher(trainBlocks, TaskKind.CausalLM, eos, new BatcherOptions { BatchSize = options.BatchSize, Seed = options.Seed });
        var heldOutBatches = new Batcher(evalBlocks, TaskKind.CausalLM, eos, new BatcherOptions { BatchSize = options.BatchSize, Shuffle = false });
        return new Prepared(model, train, heldOutBatches, TaskKind.CausalLM, bpe.Vocab.Count, trainBlocks.Count, evalBlocks.Count);
    }

    /// <summary>Masked-token loss and accuracy over held-out batches.</summary>
    static IReadOnlyDictionary<string, double> MaskedLmMetrics(TransformerModel model, IBatchSource batches)
    {
        double lossSum = 0; long correct = 0, count = 0;
        foreach (int[] indices in batches.EpochBatches(0))
        {
            using var scope = NewDisposeScope();
            using var batch = batches.Build(indices).To(model.Device);
            using var output = model.Forward(batch.InputIds, batch.AttentionMask, batch.TokenTypeIds);
            Tensor labels = batch.Labels.reshape(-1);
            Tensor logits = output.Logits.reshape(-1, output.Logits.shape[^1]).to_type(ScalarType.Float32);
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
