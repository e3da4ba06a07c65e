using SparseTune.Training;
using static TorchSharp.torch;

namespace SparseTune.Data;

/// <summary>
/// One padded batch; owns its tensors. InputIds, AttentionMask (1 real / 0 padding) and TokenTypeIds are (B, T)
/// int64 — (B, C, T) for multiple choice; Labels are (B) int64 class ids or correct choices, (B) float32 regression
/// targets, (B, T) int64 LM labels with -100 at padding and ignored positions, or (B, 2) answer start/end positions.
/// </summary>
public sealed class Batch : IDisposable
{
    internal Batch(int[] indices, Tensor inputIds, Tensor attentionMask, Tensor? tokenTypeIds, Tensor labels)
    {
        Indices = indices;
        InputIds = inputIds;
        AttentionMask = attentionMask;
        TokenTypeIds = tokenTypeIds;
        Labels = labels;
    }

    /// <summary>Example indices of the rows, in order.</summary>
    public int[] Indices { get; }
    public Tensor InputIds { get; }
    public Tensor AttentionMask { get; }
    public Tensor? TokenTypeIds { get; }
    public Tensor Labels { get; }
    public int Size => Indices.Length;
    /// <summary>Padded length T.</summary>
    public long Length => InputIds.shape[^1];
    /// <summary>Real (non-padding) tokens.</summary>
    public long TokenCount => AttentionMask.sum().item<long>();

    bool released;

    /// <summary>Hands the tensors to a <see cref="TrainingBatch"/>; this batch then no longer disposes them.</summary>
    public TrainingBatch ToTrainingBatch()
    {
        ObjectDisposedException.ThrowIf(released, this);
        released = true;
        return new TrainingBatch(InputIds, AttentionMask, TokenTypeIds, Labels);
    }

    public void Dispose()
    {
        if (released) return;
        released = true;
        InputIds.Dispose();
        AttentionMask.Dispose();
        TokenTypeIds?.Dispose();
        Labels.Dispose();
    }
}

/// <summary>Options of a <see cref="Batcher"/>.</summary>
public sealed record BatcherOptions
{
    public int BatchSize { get; init; } = 16;

    /// <summary>Shuffle each epoch with <c>new System.Random(Seed + epoch)</c>; off: file order.</summary>
    public bool Shuffle { get; init; } = true;

    public int Seed { get; init; }

    /// <summary>Sort the (shuffled) examples by length within chunks of 50 batches, cut the chunks into batches, then
    /// shuffle the batches: batches of similar lengths, less padding.</summary>
    public bool GroupByLength { get; init; }

    /// <summary>Drop the one incomplete batch of an epoch.</summary>
    public bool DropLast { get; init; }
}

/// <summary>
/// Batches of <see cref="Example"/>s with dynamic padding: each batch is right-padded with the pad id to its
/// longest example. The order of epoch e is a pure function of (Seed, e), so <see cref="EpochBatches"/> lets the
/// trainer find the batch of any step (to resume) without building tensors, and <see cref="Build"/> makes the one
/// it needs.
/// </summary>
public sealed class Batcher : IBatchSource
{
    /// <summary>Examples a length-grouping chunk holds, in batches.</summary>
    public const int GroupChunkBatches = 50;

    readonly IReadOnlyList<Example> examples;
    readonly TaskKind task;
    readonly int padId;

    /// <param name="task">Decides the labels: Classification and MultipleChoice → (B) int64 from <see cref="Example.Label"/>;
    /// Regression → (B) float32; CausalLM and MaskedLM → (B, T) int64 from <see cref="Example.LabelIds"/> (the input ids
    /// when null); QuestionAnswering → (B, 2) int64 from <see cref="Example.AnswerSpan"/>.</param>
    public Batcher(IReadOnlyList<Example> examples, TaskKind task, int padId, BatcherOptions? options = null)
    {
        Options = options ?? new BatcherOptions();
        if (Options.BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(options), "BatchSize must be at least 1");
        foreach (var example in examples.SelectMany(e => e.Choices is { Count: > 0 } choices ? choices : [e]))
        {
            if (example.InputIds.Length == 0) throw new ArgumentException("an example has no input ids", nameof(examples));
            if (example.TokenTypeIds is { } types && types.Length != example.InputIds.Length)
                throw new ArgumentException("an example's token-type ids and input ids differ in length", nameof(examples));
            if (example.LabelIds is { } labels && labels.Length != example.InputIds.Length)
                throw new ArgumentException("an example's label ids and input ids differ in length", nameof(examples));
        }
        this.examples = examples;
        this.task = task;
        this.padId = padId;
    }

    public Batcher(ClassificationDataset data, int padId, BatcherOptions? options = null) : this(data.Examples, data.Task, padId, options) { }

    public Batcher(LanguageModelDataset data, int padId, BatcherOptions? options = null) : this(data.Examples, TaskKind.CausalLM, padId, options) { }

    public BatcherOptions Options { get; }
    public IReadOnlyList<Example> Examples => examples;
    public int Count => examples.Count;

    public int BatchesPerEpoch => Options.DropLast ? Count / Options.BatchSize : (Count + Options.BatchSize - 1) / Options.BatchSize;

    /// <summary>The example indices of each batch of an epoch, in order; a pure function of (Seed, epoch).</summary>
    public IReadOnlyList<int[]> EpochBatches(int epoch)
    {
        int size = Options.BatchSize;
        int[] order = Enumerable.Range(0, Count).ToArray();
        Random? random = Options.Shuffle ? new Random(unchecked(Options.Seed + epoch)) : null;
        random?.Shuffle(order);
        List<int[]> batches;
        if (Options.GroupByLength)
        {
            batches = [];
            foreach (int[] chunk in order.Chunk(GroupChunkBatches * size))
            {
                // Stable sort: equal lengths keep their shuffled order.
                var sorted = chunk.OrderByDescending(i => examples[i].Length).ToArray();
                batches.AddRange(sorted.Chunk(size));
            }
            if (Options.DropLast) batches.RemoveAll(b => b.Length < size);
            if (random is not null)
            {
                var shuffled = batches.ToArray();
                random.Shuffle(shuffled);
                batches = [.. shuffled];
            }
        }
        else
        {
            batches = [.. order.Chunk(size)];
            if (Options.DropLast && batches.Count > 0 && batches[^1].Length < size) batches.RemoveAt(batches.Count - 1);
        }
        return batches;
    }

    /// <summary>The batches of an epoch as tensors, built one at a time; dispose each.</summary>
    public IEnumerable<Batch> Batches(int epoch)
    {
        foreach (int[] indices in EpochBatches(epoch)) yield return Build(indices);
    }

    /// <summary>
    /// The padded tensors of the examples at <paramref name="indices"/>, in that order. Multiple-choice examples give
    /// (B, C, T) ids, mask and token types — every choice padded to the batch's longest — with (B) labels.
    /// </summary>
    public Batch Build(int[] indices)
    {
        if (indices.Length == 0) throw new ArgumentException("a batch needs at least one example", nameof(indices));
        if (task == TaskKind.MultipleChoice) return BuildChoices(indices);
        var sequences = indices.Select(i => examples[i]).ToList();
        var (ids, mask, types, tokenLabels) = Pad(sequences, task is TaskKind.CausalLM or TaskKind.MaskedLM);
        long[] shape = [indices.Length, ids.Length / indices.Length];
        Tensor labels = task switch
        {
            TaskKind.Regression => tensor(indices.Select(i => examples[i].Label).ToArray()),
            TaskKind.Classification => tensor(indices.Select(i => (long)examples[i].Label).ToArray()),
            TaskKind.QuestionAnswering => tensor(indices.SelectMany(i => new long[] { examples[i].AnswerSpan.Start, examples[i].AnswerSpan.End }).ToArray(), [indices.Length, 2]),
            _ => tensor(tokenLabels!, shape),
        };
        return new Batch((int[])indices.Clone(), tensor(ids, shape), tensor(mask, shape), types is null ? null : tensor(types, shape), labels);
    }

    Batch BuildChoices(int[] indices)
    {
        int choices = examples[indices[0]].Choices?.Count ?? 0;
        foreach (int i in indices)
            if ((examples[i].Choices?.Count ?? 0) != choices)
                throw new ArgumentException($"a multiple-choice batch needs the same number of choices in every example ({examples[i].Choices?.Count ?? 0} vs {choices})", nameof(indices));
        if (choices == 0) throw new ArgumentException("a multiple-choice example has no choices", nameof(indices));
        var sequences = indices.SelectMany(i => examples[i].Choices!).ToList();
        var (ids, mask, types, _) = Pad(sequences, tokenLabels: false);
        long[] shape = [indices.Length, choices, ids.Length / sequences.Count];
        Tensor labels = tensor(indices.Select(i => (long)examples[i].Label).ToArray());
        return new Batch((int[])indices.Clone(), tensor(ids, shape), tensor(mask, shape), types is null ? null : tensor(types, shape), labels);
    }

    /// <summary>Sequences right-padded to the longest, row after row: ids, mask, token types (null when none has them), LM labels.</summary>
    (long[] Ids, long[] Mask, long[]? Types, long[]? TokenLabels) Pad(IReadOnlyList<Example> sequences, bool tokenLabels)
    {
        int rows = sequences.Count;
        int length = sequences.Max(e => e.InputIds.Length);
        bool hasTypes = sequences.Any(e => e.TokenTypeIds is not null);
        var ids = new long[rows * length];
        var mask = new long[rows * length];
        var types = hasTypes ? new long[rows * length] : null;
        var labels = tokenLabels ? new long[rows * length] : null;
        Array.Fill(ids, padId);
        if (labels is not null) Array.Fill(labels, Losses.IgnoreIndex);
        for (int r = 0; r < rows; r++)
        {
            var example = sequences[r];
            int offset = r * length;
            for (int t = 0; t < example.InputIds.Length; t++)
            {
                ids[offset + t] = example.InputIds[t];
                mask[offset + t] = 1;
                if (types is not null && example.TokenTypeIds is { } exampleTypes) types[offset + t] = exampleTypes[t];
                if (labels is not null) labels[offset + t] = (example.LabelIds ?? example.InputIds)[t];
            }
        }
        return (ids, mask, types, labels);
    }

    TrainingBatch IBatchSource.Build(int[] indices) => Build(indices).ToTrainingBatch();
}
