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

    /// <summary>
    /// Sample the next token instead of taking the most probable one (Hugging Face's <c>do_sample</c>); greedy
    /// search only (beam search is deterministic).
    /// </summary>
    public bool DoSample { get; init; }

    /// <summary>Sampling: logits are divided by this before softmax; below 1 sharpens, above 1 flattens.</summary>
    public double Temperature { get; init; } = 1.0;

    /// <summary>Sampling: keep only the this-many most probable tokens; 0 keeps all.</summary>
    public int TopK { get; init; }

    /// <summary>Sampling (nucleus): keep the most probable tokens whose probabilities first reach this sum; 1 keeps all.</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>
    /// Hugging Face's <c>repetition_penalty</c> (CTRL, Keskar et al. 2019): the logit of every token already in the
    /// sequence (prompt included) is divided by this when positive and multiplied when negative; 1 turns it off.
    /// </summary>
    public double RepetitionPenalty { get; init; } = 1.0;

    /// <summary>Sampling: seed of the random draws, so that a run can be repeated; null draws a fresh seed.</summary>
    public int? Seed { get; init; }

    /// <summary>
    /// Keep the keys and values of the tokens already processed (<see cref="KeyValueCache"/>), so each step runs only
    /// the new token; false recomputes the whole prefix at every step (same tokens, O(T²) work, for comparison).
    /// </summary>
    public bool UseCache { get; init; } = true;

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (MaxNewTokens < 1) problems.Add("max new tokens must be at least 1");
        if (NumBeams < 1) problems.Add("the number of beams must be at least 1");
        if (NoRepeatNgramSize < 0) problems.Add("the no-repeat n-gram size must be 0 (off) or more");
        if (double.IsNaN(LengthPenalty) || double.IsInfinity(LengthPenalty)) problems.Add("the length penalty must be a finite number");
        if (EosId is < 0) problems.Add("the EOS id must not be negative");
        if (!(Temperature > 0) || double.IsInfinity(Temperature)) problems.Add("the temperature must be a positive number (use greedy search for 0)");
        if (TopK < 0) problems.Add("top-k must be 0 (off) or more");
        if (!(TopP > 0 && TopP <= 1)) problems.Add("top-p must be in (0, 1]");
        if (!(RepetitionPenalty > 0) || double.IsInfinity(RepetitionPenalty)) problems.Add("the repetition penalty must be a positive number (1 is off)");
        if (DoSample && NumBeams > 1) problems.Add("sampling works with one beam only");
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
/// Greedy search, sampling and beam search for a causal-LM <see cref="TransformerModel"/>, following Hugging Face's
/// <c>generate</c> (its logits processors: repetition penalty, no-repeat n-grams, temperature, top-k, top-p; and
/// <c>BeamSearchScorer</c> with <c>early_stopping=False</c>).
/// <para>
/// Decoding keeps a <see cref="KeyValueCache"/>: the prompt runs through the model once, then each step runs one
/// token per row (<see cref="GenerationOptions.UseCache"/> off recomputes the prefix instead). Greedy search and
/// sampling decode several prompts as one left-padded batch; each row's positions start at its first real token,
/// so a prompt gets the same tokens whatever batch it is in. Beam search decodes one prompt at a time, its beams as
/// the rows of the cache, reordered as beams are chosen. Each step runs in its own dispose scope and copies what
/// it needs to managed arrays, so no tensor outlives it.
/// </para>
/// </summary>
public static class SequenceGenerator
{
    /// <summary>Greedy search (or sampling) when <see cref="GenerationOptions.NumBeams"/> is 1, else beam search.</summary>
    public static GeneratedSequence Generate(TransformerModel model, IReadOnlyList<int> prompt, GenerationOptions options) =>
        options.NumBeams == 1 ? Greedy(model, prompt, options) : BeamSearch(model, prompt, options);

    /// <summary>
    /// Several prompts: greedy search or sampling as one left-padded batch, beam search one prompt after the other.
    /// </summary>
    /// <param name="stop">Called after each generated token with the row and its tokens so far; true ends that row (stop strings).</param>
    /// <param name="onToken">Called with (row, token) as each token is chosen (streaming); not called for EOS.</param>
    public static IReadOnlyList<GeneratedSequence> Generate(TransformerModel model, IReadOnlyList<IReadOnlyList<int>> prompts,
        GenerationOptions options, Func<int, IReadOnlyList<int>, bool>? stop = null, Action<int, int>? onToken = null)
    {
        if (options.NumBeams == 1) return Search(model, prompts, options, stop, onToken);
        var results = new List<GeneratedSequence>();
        foreach (var prompt in prompts) results.Add(BeamSearch(model, prompt, options));
        return results;
    }

    /// <summary>
    /// Greedy search (the most probable next token after the logits processors) or, with
    /// <see cref="GenerationOptions.DoSample"/>, sampling, until EOS or a length limit. The model is put in eval mode
    /// (no dropout) for the call and restored afterwards.
    /// </summary>
    public static GeneratedSequence Greedy(TransformerModel model, IReadOnlyList<int> prompt, GenerationOptions options) =>
        Search(model, [prompt], options, null, null)[0];

    static IReadOnlyList<GeneratedSequence> Search(TransformerModel model, IReadOnlyList<IReadOnlyList<int>> prompts,
        GenerationOptions options, Func<int, IReadOnlyList<int>, bool>? stop, Action<int, int>? onToken)
    {
        if (prompts.Count == 0) return [];
        int[] limits = [.. prompts.Select(p => Validate(model, p, options))];
        int rows = prompts.Count, steps = limits.Max();
        var random = options.DoSample ? new Random(options.Seed ?? Random.Shared.Next()) : null;
        return InEvalMode(model, () =>
        {
            using var decoder = new Decoder(model, prompts, steps, options.UseCache);
            var generated = prompts.Select(_ => new List<int>()).ToArray();
            var logProbs = new double[rows];
            var ended = new bool[rows];
            var finished = new GeneratedSequence?[rows];
            double[][] next = decoder.Prefill();
            for (int step = 0; step < steps; step++)
            {
                long[] tokens = new long[rows];
                bool[] live = new bool[rows];
                for (int row = 0; row < rows; row++)
                {
                    if (finished[row] is not null) continue;
                    var sequence = prompts[row].Concat(generated[row]).ToList();
                    // As Hugging Face: the processors act on the logits and choose the token; the reported
                    // log-probability is the model's own, before any penalty.
                    double[] scores = Process(next[row], sequence, options);
                    int token = random is null ? ArgMax(scores) : Sample(scores, options, random);
                    logProbs[row] += next[row][token] - LogSumExp(next[row]);
                    if (token == options.EosId) { ended[row] = true; finished[row] = Finished(generated[row], logProbs[row], step + 1, true, options.LengthPenalty); continue; }
                    generated[row].Add(token);
                    onToken?.Invoke(row, token);
                    if (generated[row].Count >= limits[row] || (stop?.Invoke(row, generated[row]) ?? false))
                    {
                        finished[row] = Finished(generated[row], logProbs[row], generated[row].Count, false, options.LengthPenalty);
                        continue;
                    }
                    tokens[row] = token;
                    live[row] = true;
                }
                if (!live.Any(l => l)) break;
                next = decoder.Step(tokens, live);
            }
            return finished.Select((f, row) => f ?? Finished(generated[row], logProbs[row], generated[row].Count, ended[row], options.LengthPenalty)).ToList();
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
            using var decoder = new Decoder(model, [prompt], steps, options.UseCache);
            var beams = new List<(int[] Tokens, double Sum)> { ([], 0) };
            var finished = new List<GeneratedSequence>();
            void AddFinished(GeneratedSequence hypothesis)
            {
                if (finished.Count >= k && hypothesis.Score <= finished.Min(h => h.Score)) return;
                finished.Add(hypothesis);
                if (finished.Count > k) finished.Remove(finished.MinBy(h => h.Score)!);
            }

            bool done = false;
            double[][] next = decoder.Prefill();                               // beams × V, one row per live beam
            for (int step = 0; step < steps && !done; step++)
            {
                int vocab = next[0].Length;
                var candidates = new List<(double Total, int Beam, int Token)>();
                for (int beam = 0; beam < beams.Count; beam++)
                {
                    // As Hugging Face's beam search: the processors act on the log-probabilities (no renormalisation).
                    double[] logProbs = Process(LogSoftmax(next[beam]), [.. prompt, .. beams[beam].Tokens], options);
                    candidates.AddRange(TopIndices(logProbs, 2 * k).Select(t => (beams[beam].Sum + logProbs[t], beam, t)));
                }
                // The 2·beams best over all beams; ties keep the lower flat index, as topk over (beams·V) does.
                var ranked = candidates.OrderByDescending(c => c.Total).ThenBy(c => (long)c.Beam * vocab + c.Token).Take(2 * k).ToList();

                var nextBeams = new List<(int[] Tokens, double Sum)>(k);
                var parents = new List<long>(k);
                for (int rank = 0; rank < ranked.Count && nextBeams.Count < k; rank++)
                {
                    var (total, beam, token) = ranked[rank];
                    if (double.IsNegativeInfinity(total)) break; // only banned tokens are left
                    int[] tokens = beams[beam].Tokens;
                    if (token == options.EosId)
                    {
                        // Hugging Face files EOS only from the first `beams` ranks: below them, `beams` better
                        // continuations already exist.
                        if (rank < k) AddFinished(Finished(tokens, total, step + 1, true, alpha));
                    }
                    else
                    {
                        nextBeams.Add(([.. tokens, token], total));
                        parents.Add(beam);
                    }
                }
                beams = nextBeams;
                if (beams.Count == 0) done = true;
                else if (finished.Count >= k)
                {
                    // early_stopping=False: done when the best live beam, scored at its current length, cannot beat the worst finished one.
                    double bestLive = beams.Max(b => b.Sum) / Math.Pow(step + 1, alpha);
                    done = finished.Min(h => h.Score) >= bestLive;
                }
                if (!done && step + 1 < steps)
                {
                    decoder.Reorder(parents);
                    next = decoder.Step([.. beams.Select(b => (long)b.Tokens[^1])], [.. beams.Select(_ => true)]);
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
            using var output = model.Forward(tensor(ids, [1, ids.Length], device: model.Device));
            // Position t predicts token t + 1: the continuation is predicted from positions P-1 … P+C-2.
            Tensor logProbs = output.Logits[0].narrow(0, prompt.Count - 1, continuation.Count).to_type(ScalarType.Float64).log_softmax(-1); // (C, V)
            Tensor targets = tensor(continuation.Select(t => (long)t).ToArray(), device: model.Device).unsqueeze(1); // (C, 1)
            return logProbs.gather(1, targets).sum().item<double>();
        });
    }

    /// <summary>
    /// The rows being decoded, as token ids with left padding, and the model calls that extend them: with a cache,
    /// the prompt once and then one token per row; without, the whole sequence again at every step.
    /// </summary>
    sealed class Decoder : IDisposable
    {
        readonly TransformerModel model;
        readonly bool useCache;
        readonly long capacity;
        List<List<long>> ids;          // rows × slots
        List<List<bool>> real;         // rows × slots: false for left padding and for rows that stopped
        KeyValueCache? cache;

        public Decoder(TransformerModel model, IReadOnlyList<IReadOnlyList<int>> prompts, int steps, bool useCache)
        {
            this.model = model;
            this.useCache = useCache;
            int longest = prompts.Max(p => p.Count);
            capacity = longest + steps;
            ids = [.. prompts.Select(p => Enumerable.Repeat(0L, longest - p.Count).Concat(p.Select(t => (long)t)).ToList())];
            real = [.. prompts.Select(p => Enumerable.Repeat(false, longest - p.Count).Concat(Enumerable.Repeat(true, p.Count)).ToList())];
        }

        /// <summary>Runs the prompts; next-token logits (rows × V) of each row's last token.</summary>
        public double[][] Prefill()
        {
            if (useCache) cache = model.NewCache(ids.Count, capacity);
            return Run(ids.Count == 0 ? 0 : ids[0].Count);
        }

        /// <summary>Appends one token per row (<paramref name="realToken"/> false: a stopped row's filler) and runs it.</summary>
        public double[][] Step(long[] tokens, bool[] realToken)
        {
            for (int row = 0; row < ids.Count; row++)
            {
                ids[row].Add(tokens[row]);
                real[row].Add(realToken[row]);
            }
            return Run(1);
        }

        /// <summary>Keeps rows <paramref name="rows"/>, in this order (beam search).</summary>
        public void Reorder(IReadOnlyList<long> rows)
        {
            ids = [.. rows.Select(r => ids[(int)r].ToList())];
            real = [.. rows.Select(r => real[(int)r].ToList())];
            cache?.Reorder(rows);
        }

        /// <summary>Runs the last <paramref name="newSlots"/> slots (with a cache) or every slot (without).</summary>
        double[][] Run(int newSlots)
        {
            NativeCallGuard.SafePoint();
            using var scope = NewDisposeScope();
            int B = ids.Count, length = ids[0].Count;
            int from = useCache ? length - newSlots : 0, T = length - from;
            Device device = model.Device;
            Tensor input = tensor(ids.SelectMany(r => r.Skip(from)).ToArray(), [B, T], device: device);
            Tensor mask = tensor(real.SelectMany(r => r.Skip(from)).ToArray(), [B, T], device: device);
            if (!useCache)
            {
                cache?.Dispose();
                cache = model.NewCache(B, length);
            }
            using var output = model.Forward(input, mask, cache!);
            Tensor logits = output.Logits.select(1, 0).to(CPU).to_type(ScalarType.Float64);   // (B, V)
            int V = (int)logits.shape[1];
            double[] flat = logits.data<double>().ToArray();
            return [.. Enumerable.Range(0, B).Select(r => flat.AsSpan(r * V, V).ToArray())];
        }

        public void Dispose() => cache?.Dispose();
    }

    /// <summary>
    /// Hugging Face's logits processors in its order, on one row's logits (greedy, sampling) or log-probabilities
    /// (beam search): repetition penalty, then the no-repeat n-gram ban (−∞). Returns a new array; temperature, top-k and top-p apply only when sampling (<see cref="Sample"/>).
    /// </summary>
    static double[] Process(double[] logits, IReadOnlyList<int> sequence, GenerationOptions options)
    {
        double[] scores = (double[])logits.Clone();
        if (options.RepetitionPenalty != 1.0)
            foreach (int token in sequence.Distinct())
                scores[token] = scores[token] < 0 ? scores[token] * options.RepetitionPenalty : scores[token] / options.RepetitionPenalty;
        if (options.NoRepeatNgramSize > 0)
            foreach (int token in BannedTokens(sequence, options.NoRepeatNgramSize)) scores[token] = double.NegativeInfinity;
        return scores;
    }

    /// <summary>
    /// Draws a token from softmax(scores / temperature) restricted to the top-k tokens and then to the smallest set
    /// whose probability reaches top-p (at least one token is always kept), as Hugging Face's warpers.
    /// </summary>
    internal static int Sample(double[] scores, GenerationOptions options, Random random)
    {
        int[] order = [.. TopIndices(scores, options.TopK > 0 ? Math.Min(options.TopK, scores.Length) : scores.Length)];
        int keep = order.Length;
        double max = scores[order[0]];
        double[] weights = [.. order.Take(keep).Select(i => Math.Exp((scores[i] - max) / options.Temperature))];
        double total = weights.Sum();
        if (options.TopP < 1.0)
        {
            // Keep tokens while the probability of those before them is below top-p: the first always stays.
            double cumulative = 0;
            int nucleus = 0;
            while (nucleus < weights.Length && cumulative < options.TopP) cumulative += weights[nucleus++] / total;
            keep = nucleus;
            total = weights.Take(keep).Sum();
        }
        double u = random.NextDouble() * total;
        for (int i = 0; i < keep; i++)
        {
            u -= weights[i];
            if (u < 0) return order[i];
        }
        return order[keep - 1];
    }

    static double[] LogSoftmax(double[] scores)
    {
        double logSum = LogSumExp(scores);
        return double.IsNegativeInfinity(logSum) ? [.. scores] : [.. scores.Select(s => s - logSum)];
    }

    /// <summary>log Σ exp(s), stable; −∞ when every score is.</summary>
    static double LogSumExp(double[] scores)
    {
        double max = scores.Max();
        return double.IsNegativeInfinity(max) ? max : max + Math.Log(scores.Sum(s => Math.Exp(s - max)));
    }

    static int ArgMax(double[] values)
    {
        int best = 0;
        for (int i = 1; i < values.Length; i++) if (values[i] > values[best]) best = i;
        return best;
    }

    /// <summary>The indices of the <paramref name="count"/> largest values, largest first, ties by lower index.</summary>
    static IEnumerable<int> TopIndices(double[] values, int count)
    {
        // A min-heap of the best so far: O(V log count) instead of sorting the vocabulary at every step.
        var heap = new PriorityQueue<int, (double Value, int NegIndex)>();
        for (int i = 0; i < values.Length; i++)
        {
            var priority = (values[i], -i);
            if (heap.Count < count) heap.Enqueue(i, priority);
            else if (heap.TryPeek(out _, out var worst) && priority.CompareTo(worst) > 0) heap.EnqueueDequeue(i, priority);
        }
        var top = new int[heap.Count];
        for (int j = top.Length - 1; j >= 0; j--) top[j] = heap.Dequeue();
        return top;
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
