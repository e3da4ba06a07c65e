using SparseTune.Models;
using SparseTune.Nn;
using static TorchSharp.torch;

namespace SparseTune.Generation;

/// <summary>How <see cref="SequenceGenerator"/> decodes; the names follow Hugging Face's <c>GenerationConfig</c>.</summary>
public sealed record GenerationOptions
{
    /// <summary>Tokens to generate at most (EOS included); also bounded by the model's position limit.</summary>
    public int MaxNewTokens { get; init; } = 64;

    /// <summary>1: greedy search; more: beam search with this many beams.</summary>
    public int NumBeams { get; init; } = 1;

    /// <summary>
    /// Hugging Face's <c>length_penalty</c> α: a finished beam scores sum(log p) / length^α, length counting the
    /// generated tokens and the EOS. Log-probabilities are negative, so α &gt; 0 favours longer outputs, α &lt; 0
    /// shorter ones, 0 ranks by total log-probability.
    /// </summary>
    public double LengthPenalty { get; init; } = 1.0;

    /// <summary>Hugging Face's <c>no_repeat_ngram_size</c>: no n-gram of this size occurs twice in prompt + output; 0 turns it off.</summary>
    public int NoRepeatNgramSize { get; init; }

    /// <summary>Generation stops after this token (which is not part of the returned tokens); null: only the length limits stop it.</summary>
    public int? EosId { get; init; }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (MaxNewTokens < 1) problems.Add("max new tokens must be at least 1");
        if (NumBeams < 1) problems.Add("the number of beams must be at least 1");
        if (NoRepeatNgramSize < 0) problems.Add("the no-repeat n-gram size must be 0 (off) or more");
        if (double.IsNaN(LengthPenalty) || double.IsInfinity(LengthPenalty)) problems.Add("the length penalty must be a finite number");
        if (EosId is < 0) problems.Add("the EOS id must not be negative");
        return problems;
    }
}

/// <summary>One decoded continuation of a prompt.</summary>
/// <param name="Tokens">The generated ids, without the prompt and without the closing EOS.</param>
/// <param name="LogProb">Sum of the natural-log probabilities of the generated tokens, the EOS included when there is one.</param>
/// <param name="Score">LogProb / length^α (length: generated tokens plus EOS), what beam search ranks by.</param>
/// <param name="EndedWithEos">Whether generation stopped at EOS rather than at a length limit.</param>
public sealed record GeneratedSequence(int[] Tokens, double LogProb, double Score, bool EndedWithEos);

/// <summary>
/// Greedy and beam-search decoding for a causal-LM <see cref="TransformerModel"/>, following Hugging Face's
/// <c>generate</c> (greedy search; <c>BeamSearchScorer</c> with <c>early_stopping=False</c>).
/// <para>
/// The models keep no key/value cache, so every step runs the whole sequence (prompt + tokens so far) through the
/// model again: O(T²) forwards per output instead of O(T). That is fine for the tiny and small models this project
/// fine-tunes on CPU; a cache would be the first thing to add for long outputs. Each step runs in its own dispose
/// scope and copies what it needs (an argmax, the top candidates) to managed arrays, so no tensor outlives it.
/// </para>
/// <para>
/// Prompts are decoded one at a time: each sequence then has no padding, and all beams of one prompt have the same
/// length, so they run as one (beams, T) batch without an attention mask and the results cannot depend on which
/// other prompts share a batch or on left- versus right-padding.
/// </para>
/// </summary>
public static class SequenceGenerator
{
    /// <summary>Greedy search when <see cref="GenerationOptions.NumBeams"/> is 1, else beam search.</summary>
    public static GeneratedSequence Generate(TransformerModel model, IReadOnlyList<int> prompt, GenerationOptions options) =>
        options.NumBeams == 1 ? Greedy(model, prompt, options) : BeamSearch(model, prompt, options);

    /// <summary>Several prompts, decoded one after the other (see the class remarks on padding).</summary>
    public static IReadOnlyList<GeneratedSequence> Generate(TransformerModel model, IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options) =>
        prompts.Select(p => Generate(model, p, options)).ToList();

    /// <summary>
    /// Greedy search: at each step the most probable next token (after the no-repeat n-gram ban), until EOS or a
    /// length limit. The model is put in eval mode (no dropout) for the call and restored afterwards.
    /// </summary>
    public static GeneratedSequence Greedy(TransformerModel model, IReadOnlyList<int> prompt, GenerationOptions options)
    {
        int steps = Validate(model, prompt, options);
        return InEvalMode(model, () =>
        {
            var sequence = new List<int>(prompt);
            double logProb = 0;
            for (int step = 0; step < steps; step++)
            {
                NativeCallGuard.SafePoint();
                using var scope = NewDisposeScope();
                Tensor logProbs = NextTokenLogProbs(model, [.. sequence.Select(t => (long)t)], 1, sequence.Count); // (1, V)
                BanRepeatedNgrams(logProbs, [sequence], options.NoRepeatNgramSize);
                int next = (int)logProbs[0].argmax().item<long>();
                logProb += logProbs[0, next].item<double>();
                if (next == options.EosId)
                    return Finished(sequence.Skip(prompt.Count), logProb, step + 1, true, options.LengthPenalty);
                sequence.Add(next);
            }
            return Finished(sequence.Skip(prompt.Count), logProb, steps, false, options.LengthPenalty);
        });
    }

    /// <summary>
    /// Beam search as Hugging Face's <c>BeamSearchScorer</c>: each step extends every live beam, keeps the
    /// 2·beams best candidates by total log-probability, files an EOS candidate ranked among the first beams as a
    /// finished hypothesis (scored sum / length^α) and keeps the best non-EOS candidates as the next beams. It stops
    /// when beams-many hypotheses are finished and the best live beam, scored at its current length, cannot beat the
    /// worst of them (<c>early_stopping=False</c>), or at the length limit, where the live beams count as finished.
    /// Returns the best-scoring hypothesis.
    /// </summary>
    public static GeneratedSequence BeamSearch(TransformerModel model, IReadOnlyList<int> prompt, GenerationOptions options)
    {
        int steps = Validate(model, prompt, options);
        int k = options.NumBeams;
        double alpha = options.LengthPenalty;
        return InEvalMode(model, () =>
        {
            var beams = new List<(int[] Tokens, double Sum)> { ([], 0) };
            var finished = new List<GeneratedSequence>();
            void AddFinished(GeneratedSequence hypothesis)
            {
                if (finished.Count >= k && hypothesis.Score <= finished.Min(h => h.Score)) return;
                finished.Add(hypothesis);
                if (finished.Count > k) finished.Remove(finished.MinBy(h => h.Score)!);
            }

            bool done = false;
            for (int step = 0; step < steps && !done; step++)
            {
                NativeCallGuard.SafePoint();
                using var scope = NewDisposeScope();
                int rows = beams.Count, length = prompt.Count + step;
                long[] flat = [.. beams.SelectMany(b => prompt.Concat(b.Tokens)).Select(t => (long)t)];
                Tensor logProbs = NextTokenLogProbs(model, flat, rows, length); // (beams, V)
                BanRepeatedNgrams(logProbs, [.. beams.Select(b => prompt.Concat(b.Tokens).ToList())], options.NoRepeatNgramSize);
                long vocab = logProbs.shape[1];
                Tensor totals = logProbs + tensor(beams.Select(b => b.Sum).ToArray()).unsqueeze(1); // (beams, V)
                int candidates = (int)Math.Min(2L * k, totals.numel());
                var (values, indices) = totals.view(-1).topk(candidates);
                double[] scores = values.data<double>().ToArray();
                long[] flatIndices = indices.data<long>().ToArray();

                var next = new List<(int[] Tokens, double Sum)>(k);
                for (int rank = 0; rank < candidates && next.Count < k; rank++)
                {
                    if (double.IsNegativeInfinity(scores[rank])) break; // only banned tokens are left
                    var (beam, token) = ((int)(flatIndices[rank] / vocab), (int)(flatIndices[rank] % vocab));
                    int[] tokens = beams[beam].Tokens;
                    if (token == options.EosId)
                    {
                        // Hugging Face files EOS only from the first `beams` ranks: below them, `beams` better
                        // continuations already exist.
                        if (rank < k) AddFinished(Finished(tokens, scores[rank], step + 1, true, alpha));
                    }
                    else next.Add(([.. tokens, token], scores[rank]));
                }
                beams = next;
                if (beams.Count == 0) done = true;
                else if (finished.Count >= k)
                {
                    // early_stopping=False: done when the best live beam, scored at its current length, cannot beat the worst finished one.
                    double bestLive = beams.Max(b => b.Sum) / Math.Pow(step + 1, alpha);
                    done = finished.Min(h => h.Score) >= bestLive;
                }
            }
            if (!done)
                foreach (var (tokens, sum) in beams) AddFinished(Finished(tokens, sum, tokens.Length, false, alpha));
            // Nothing finished only when every candidate was banned at the first step.
            return finished.MaxBy(h => h.Score) ?? new GeneratedSequence([], double.NegativeInfinity, double.NegativeInfinity, false);
        });
    }

    /// <summary>Sum of log p(continuation | prompt) under the model, from one forward pass (eval mode).</summary>
    public static double ContinuationLogProb(TransformerModel model, IReadOnlyList<int> prompt, IReadOnlyList<int> continuation)
    {
        if (prompt.Count == 0) throw new ArgumentException("the prompt must hold at least one token", nameof(prompt));
        if (continuation.Count == 0) return 0;
        return InEvalMode(model, () =>
        {
            using var scope = NewDisposeScope();
            long[] ids = [.. prompt.Concat(continuation).Select(t => (long)t)];
            using var output = model.Forward(tensor(ids, [1, ids.Length]));
            // Position t predicts token t + 1: the continuation is predicted from positions P-1 … P+C-2.
            Tensor logProbs = output.Logits[0].narrow(0, prompt.Count - 1, continuation.Count).to_type(ScalarType.Float64).log_softmax(-1); // (C, V)
            Tensor targets = tensor(continuation.Select(t => (long)t).ToArray()).unsqueeze(1); // (C, 1)
            return logProbs.gather(1, targets).sum().item<double>();
        });
    }

    /// <summary>Log-softmax of the last position's logits, float64: (rows, V). <paramref name="flat"/> is (rows, length) row-major.</summary>
    static Tensor NextTokenLogProbs(TransformerModel model, long[] flat, int rows, int length)
    {
        using var output = model.Forward(tensor(flat, [rows, length]));
        return output.Logits.select(1, length - 1).to_type(ScalarType.Float64).log_softmax(-1);
    }

    /// <summary>
    /// Hugging Face's NoRepeatNGramLogitsProcessor: a token is banned (log-prob -∞) when it would complete an n-gram
    /// that already occurs in the row's sequence (prompt included).
    /// </summary>
    static void BanRepeatedNgrams(Tensor logProbs, IReadOnlyList<List<int>> sequences, int n)
    {
        if (n <= 0) return;
        for (int row = 0; row < sequences.Count; row++)
        {
            long[] banned = [.. BannedTokens(sequences[row], n).Distinct().Select(t => (long)t)];
            if (banned.Length > 0) logProbs[row].index_fill_(0, tensor(banned), double.NegativeInfinity);
        }
    }

    /// <summary>Tokens that follow, somewhere earlier in the sequence, the same n-1 tokens the sequence now ends with.</summary>
    internal static IEnumerable<int> BannedTokens(IReadOnlyList<int> sequence, int n)
    {
        int start = sequence.Count - (n - 1); // where the current (n-1)-token prefix begins
        if (n <= 0 || start < 0) yield break;
        for (int i = 0; i + n <= sequence.Count; i++)
        {
            int k = 0;
            while (k < n - 1 && sequence[i + k] == sequence[start + k]) k++;
            if (k == n - 1) yield return sequence[i + n - 1];
        }
    }

    static GeneratedSequence Finished(IEnumerable<int> tokens, double logProb, int length, bool eos, double alpha) =>
        new([.. tokens], logProb, logProb / Math.Pow(Math.Max(1, length), alpha), eos);

    /// <summary>Checks everything up front; returns how many tokens may be generated.</summary>
    static int Validate(TransformerModel model, IReadOnlyList<int> prompt, GenerationOptions options)
    {
        var problems = new List<string>(options.Problems());
        if (model.Head != ModelHead.CausalLM) problems.Add($"generation needs a causal-LM model, not {model.Head}");
        int vocab = model.Config.VocabSize, maxPositions = model.Config.MaxPositions;
        if (prompt.Count == 0) problems.Add("the prompt must hold at least one token");
        else if (prompt.Count >= maxPositions) problems.Add($"the prompt ({prompt.Count} tokens) leaves no room within the model's {maxPositions} positions");
        if (prompt.Any(t => t < 0 || t >= vocab)) problems.Add($"prompt ids outside the vocabulary [0, {vocab})");
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));
        return Math.Min(options.MaxNewTokens, maxPositions - prompt.Count);
    }

    static T InEvalMode<T>(TransformerModel model, Func<T> body)
    {
        bool wasTraining = model.training;
        model.eval();
        try
        {
            using var _ = no_grad();
            using var guard = NativeCallGuard.Enter();
            return body();
        }
        finally
        {
            if (wasTraining) model.train();
        }
    }
}
