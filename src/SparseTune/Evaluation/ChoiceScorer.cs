using SparseTune.Models;
using SparseTune.Nn;
using static TorchSharp.torch;

namespace SparseTune.Evaluation;

/// <summary>A prompt and the continuations to score after it, as token ids.</summary>
/// <param name="PromptIds">The context, with the special tokens the model expects (LLaMA's BOS); at least one token,
/// since the first continuation token is predicted from the position before it.</param>
/// <param name="Choices">Each continuation's token ids (at least one each), tokenised as they follow the prompt
/// (GPT-2: with their leading space).</param>
public sealed record ChoiceItem(IReadOnlyList<int> PromptIds, IReadOnlyList<IReadOnlyList<int>> Choices);

/// <summary>How likely the model finds one continuation after its prompt.</summary>
/// <param name="LogLikelihood">Σ log p(token | prompt, the continuation's earlier tokens) over the continuation's tokens (natural log).</param>
/// <param name="TokenCount">Tokens in the continuation.</param>
/// <param name="PromptTokensDropped">Prompt tokens cut from the left so that the row fit the context (0: none).</param>
public sealed record ChoiceScore(double LogLikelihood, int TokenCount, int PromptTokensDropped = 0)
{
    /// <summary>The per-token mean: the length-normalised score that does not favour short continuations.</summary>
    public double MeanLogLikelihood => LogLikelihood / TokenCount;
}

/// <summary>Which score picks the answer among an item's continuations.</summary>
public enum ChoiceRanking
{
    /// <summary>The summed log-likelihood (<see cref="ChoiceScore.LogLikelihood"/>).</summary>
    Sum,
    /// <summary>The per-token mean (<see cref="ChoiceScore.MeanLogLikelihood"/>), "length-normalised".</summary>
    Mean,
}

/// <summary>How <see cref="ChoiceScorer"/> batches and fits rows.</summary>
public sealed record ChoiceScorerOptions
{
    /// <summary>Rows (one prompt plus one continuation, or one prompt) per forward pass.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>
    /// Longest row in tokens; null: the model's position limit (<see cref="ModelConfig.MaxPositions"/>). A longer
    /// row of <see cref="ChoiceScorer.Score"/> loses prompt tokens from the left, as lm-evaluation-harness truncates.
    /// </summary>
    public int? MaxLength { get; init; }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (BatchSize < 1) problems.Add("the batch size must be at least 1");
        if (MaxLength is < 2) problems.Add("the maximum length must be at least 2 (one prompt and one continuation token)");
        return problems;
    }
}

/// <summary>
/// Likelihood scoring for causal LMs (GPT-2, the LLaMA family): how probable each candidate continuation is after a
/// prompt, the scoring behind multiple-choice evaluation (MMLU, HellaSwag, ARC in lm-evaluation-harness).
/// Each prompt + continuation row runs through the model once, right-padded into batches (rows sorted by length so
/// little is padding), in eval mode without gradients, on the model's device; logits are cast to float32 before the
/// log-softmax, so bf16 models score in float32.
/// </summary>
public static class ChoiceScorer
{
    /// <summary>
    /// Each continuation's summed log-likelihood and token count, item by item, choice by choice. A row longer than
    /// <see cref="ChoiceScorerOptions.MaxLength"/> keeps its last tokens: the prompt is cut from the left (recorded in
    /// <see cref="ChoiceScore.PromptTokensDropped"/>); a continuation that cannot fit after at least one prompt token is refused.
    /// </summary>
    /// <param name="progress">Reports how many rows (prompt + one continuation) are scored.</param>
    /// <exception cref="ArgumentException">Not a causal LM, bad options, an empty prompt or continuation, an id outside
    /// the vocabulary, or a continuation too long for the context.</exception>
    public static IReadOnlyList<IReadOnlyList<ChoiceScore>> Score(TransformerModel model, IReadOnlyList<ChoiceItem> items,
        ChoiceScorerOptions? options = null, IProgress<int>? progress = null)
    {
        options ??= new ChoiceScorerOptions();
        int maxLength = Math.Min(options.MaxLength ?? int.MaxValue, model.Config.MaxPositions);
        var problems = Check(model, options);
        var rows = new List<(int Item, int Choice, int[] Ids, int PromptLength, int Dropped)>();
        for (int i = 0; i < items.Count && problems.Count < 5; i++)
        {
            var (prompt, choices) = (items[i].PromptIds, items[i].Choices);
            if (prompt.Count == 0) problems.Add($"item {i}: the prompt is empty (give it at least one token, e.g. BOS or EOS)");
            if (choices.Count == 0) problems.Add($"item {i}: no choices");
            for (int c = 0; c < choices.Count; c++)
            {
                var choice = choices[c];
                if (choice.Count == 0) { problems.Add($"item {i} choice {c}: no tokens"); continue; }
                if (choice.Count > maxLength - 1)
                {
                    problems.Add($"item {i} choice {c}: {choice.Count} tokens leave no room for a prompt token within {maxLength} positions");
                    continue;
                }
                int dropped = Math.Max(0, prompt.Count + choice.Count - maxLength);
                int[] ids = [.. prompt.Skip(dropped), .. choice];
                rows.Add((i, c, ids, prompt.Count - dropped, dropped));
            }
            if (prompt.Concat(choices.SelectMany(x => x)).Any(t => t < 0 || t >= model.Config.VocabSize))
                problems.Add($"item {i}: token ids outside the vocabulary [0, {model.Config.VocabSize})");
        }
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));

        var sums = new double[rows.Count];
        InEvalMode(model, () =>
        {
            int done = 0;
            foreach (int[] batch in LongestFirst(rows.Select(r => r.Ids.Length).ToList(), options.BatchSize))
            {
                NativeCallGuard.SafePoint();
                double[] batchSums = ContinuationLogLikelihoods(model, batch.Select(r => (rows[r].Ids, rows[r].PromptLength)).ToList());
                for (int b = 0; b < batch.Length; b++) sums[batch[b]] = batchSums[b];
                done += batch.Length;
                progress?.Report(done);
            }
        });

        var scores = items.Select(item => new ChoiceScore[item.Choices.Count]).ToArray();
        for (int r = 0; r < rows.Count; r++)
        {
            var row = rows[r];
            scores[row.Item][row.Choice] = new ChoiceScore(sums[r], row.Ids.Length - row.PromptLength, row.Dropped);
        }
        return scores;
    }

    /// <summary>
    /// The log-probability (log-softmax over the whole vocabulary, float32) of each candidate token as the next token
    /// after each prompt: one forward per prompt, whatever the number of candidates. Single-token answers (MMLU's
    /// " A" … " D") need nothing more. Prompts must fit <see cref="ChoiceScorerOptions.MaxLength"/>; none is cut.
    /// </summary>
    /// <returns>[prompt][candidate], candidates in the order given.</returns>
    /// <exception cref="ArgumentException">Not a causal LM, bad options, an empty or too long prompt, or an id outside the vocabulary.</exception>
    public static double[][] NextTokenLogProbabilities(TransformerModel model, IReadOnlyList<IReadOnlyList<int>> prompts,
        IReadOnlyList<int> candidateIds, ChoiceScorerOptions? options = null, IProgress<int>? progress = null)
    {
        options ??= new ChoiceScorerOptions();
        int maxLength = Math.Min(options.MaxLength ?? int.MaxValue, model.Config.MaxPositions);
        int vocab = model.Config.VocabSize;
        var problems = Check(model, options);
        if (candidateIds.Count == 0) problems.Add("no candidate tokens");
        if (candidateIds.Any(t => t < 0 || t >= vocab)) problems.Add($"candidate ids outside the vocabulary [0, {vocab})");
        for (int i = 0; i < prompts.Count && problems.Count < 5; i++)
        {
            if (prompts[i].Count == 0) problems.Add($"prompt {i} is empty");
            else if (prompts[i].Count > maxLength) problems.Add($"prompt {i} has {prompts[i].Count} tokens, more than the {maxLength} positions");
            if (prompts[i].Any(t => t < 0 || t >= vocab)) problems.Add($"prompt {i}: token ids outside the vocabulary [0, {vocab})");
        }
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));

        var result = new double[prompts.Count][];
        InEvalMode(model, () =>
        {
            int done = 0;
            foreach (int[] batch in LongestFirst(prompts.Select(p => p.Count).ToList(), options.BatchSize))
            {
                NativeCallGuard.SafePoint();
                using var scope = NewDisposeScope();
                var (input, mask) = RightPadded(batch.Select(i => prompts[i]).ToList(), model.Device);   // (B, T) each
                using var output = model.Forward(input, mask);
                long V = output.Logits.shape[2];
                var last = tensor(batch.Select(i => (long)prompts[i].Count - 1).ToArray(), device: model.Device);   // (B)
                Tensor next = output.Logits.gather(1, last.view(-1, 1, 1).expand(-1, 1, V)).squeeze(1)         // (B, V)
                    .to_type(ScalarType.Float32).log_softmax(-1);
                Tensor picked = next.index_select(1, tensor(candidateIds.Select(t => (long)t).ToArray(), device: model.Device));   // (B, K)
                double[] values = picked.to_type(ScalarType.Float64).cpu().data<double>().ToArray();
                int K = candidateIds.Count;
                for (int b = 0; b < batch.Length; b++) result[batch[b]] = values[(b * K)..((b + 1) * K)];
                done += batch.Length;
                progress?.Report(done);
            }
        });
        return result;
    }

    /// <summary>The index of the best-scoring continuation (the first on ties, as numpy's argmax).</summary>
    public static int Predict(IReadOnlyList<ChoiceScore> scores, ChoiceRanking ranking)
    {
        if (scores.Count == 0) throw new ArgumentException("no scores to choose from", nameof(scores));
        int best = 0;
        for (int c = 1; c < scores.Count; c++)
            if (Value(scores[c], ranking) > Value(scores[best], ranking)) best = c;
        return best;
    }

    /// <summary>The best-scoring continuation of each item.</summary>
    public static int[] Predict(IReadOnlyList<IReadOnlyList<ChoiceScore>> scores, ChoiceRanking ranking) =>
        [.. scores.Select(s => Predict(s, ranking))];

    static double Value(ChoiceScore score, ChoiceRanking ranking) =>
        ranking == ChoiceRanking.Mean ? score.MeanLogLikelihood : score.LogLikelihood;

    static List<string> Check(TransformerModel model, ChoiceScorerOptions options)
    {
        var problems = new List<string>(options.Problems());
        if (model.Head != ModelHead.CausalLM) problems.Insert(0, $"likelihood scoring needs a causal-LM model, not {model.Head}");
        return problems;
    }

    /// <summary>
    /// Σ log p of each row's tokens after its prompt. A row is (ids, prompt length); position t's logits predict
    /// token t + 1, so the continuation tokens p … n-1 are scored by positions p-1 … n-2. Only the window of positions
    /// some row scores is cast to float32, and the log-probability is the target's logit minus one log-sum-exp, not a
    /// full log-softmax copy.
    /// </summary>
    static double[] ContinuationLogLikelihoods(TransformerModel model, IReadOnlyList<(int[] Ids, int PromptLength)> rows)
    {
        using var scope = NewDisposeScope();
        var (input, mask) = RightPadded(rows.Select(r => (IReadOnlyList<int>)r.Ids).ToList(), model.Device);   // (B, T) each
        int from = rows.Min(r => r.PromptLength - 1);
        int to = rows.Max(r => r.Ids.Length - 1);                              // exclusive: the last token predicts nothing
        int width = to - from, B = rows.Count;
        var scored = new float[B * width];                                     // 1 where position from + w predicts a continuation token
        for (int b = 0; b < B; b++)
            for (int t = rows[b].PromptLength - 1; t < rows[b].Ids.Length - 1; t++) scored[b * width + t - from] = 1;

        using var output = model.Forward(input, mask);
        Tensor logits = output.Logits.narrow(1, from, width).to_type(ScalarType.Float32);                 // (B, W, V)
        Tensor targets = input.narrow(1, from + 1, width);                                                 // (B, W)
        Tensor tokenLogProbs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1);   // (B, W)
        Tensor weights = tensor(scored, [B, width], device: model.Device);
        Tensor sums = (tokenLogProbs * weights).to_type(ScalarType.Float64).sum(-1);                       // (B)
        return sums.cpu().data<double>().ToArray();
    }

    /// <summary>Ids (B, T) int64, right-padded with 0 (any id: the mask hides it), and the attention mask (B, T).</summary>
    static (Tensor Ids, Tensor Mask) RightPadded(IReadOnlyList<IReadOnlyList<int>> rows, Device device)
    {
        int B = rows.Count, T = rows.Max(r => r.Count);
        var ids = new long[B * T];
        var mask = new long[B * T];
        for (int b = 0; b < B; b++)
            for (int t = 0; t < rows[b].Count; t++)
            {
                ids[b * T + t] = rows[b][t];
                mask[b * T + t] = 1;
            }
        return (tensor(ids, [B, T], device: device), tensor(mask, [B, T], device: device));
    }

    /// <summary>Row indices longest first, in batches: rows of similar length share a batch, so little is padding.</summary>
    static IEnumerable<int[]> LongestFirst(IReadOnlyList<int> lengths, int batchSize) =>
        Enumerable.Range(0, lengths.Count).OrderByDescending(i => lengths[i]).ThenBy(i => i).Chunk(batchSize);

    /// <summary>Runs <paramref name="body"/> in eval mode (no dropout) without gradients, restoring training mode after.</summary>
    internal static void InEvalMode(TransformerModel model, Action body)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var noGrad = no_grad();
            using var guard = NativeCallGuard.Enter();
            body();
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }
}
