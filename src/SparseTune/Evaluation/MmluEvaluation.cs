using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using SparseTune.Data;
using SparseTune.IO;
using SparseTune.Models;

namespace SparseTune.Evaluation;

/// <summary>How <see cref="MmluEvaluation"/> prompts and batches.</summary>
public sealed record MmluOptions
{
    /// <summary>Dev examples (with answers) before each question; a subject with fewer dev rows uses all it has.</summary>
    public int Shots { get; init; } = 5;

    /// <summary>Longest prompt in tokens, never more than the model's position limit; null: that limit. Shots are dropped from the end until the prompt fits.</summary>
    public int? MaxLength { get; init; }

    /// <summary>Prompts per forward pass.</summary>
    public int BatchSize { get; init; } = 8;

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (Shots < 0) problems.Add("shots must be 0 or more");
        if (MaxLength is < 1) problems.Add("the maximum length must be at least 1");
        if (BatchSize < 1) problems.Add("the batch size must be at least 1");
        return problems;
    }
}

/// <summary>A question's prompt as token ids, and how it was made to fit.</summary>
/// <param name="Shots">Dev examples in the prompt.</param>
/// <param name="DroppedTokens">Tokens cut from the start of a question that did not fit even without shots (0: none).</param>
public sealed record MmluPrompt(int[] Ids, int Shots, int DroppedTokens);

/// <summary>One question's outcome, a line of the predictions JSONL.</summary>
public sealed record MmluPrediction
{
    [JsonPropertyName("subject")] public required string Subject { get; init; }
    /// <summary>The question's index (from 0) among its file's rows.</summary>
    [JsonPropertyName("index")] public required int Index { get; init; }
    [JsonPropertyName("line")] public required int Line { get; init; }
    [JsonPropertyName("prediction")] public required string Prediction { get; init; }
    [JsonPropertyName("answer")] public required string Answer { get; init; }
    [JsonPropertyName("correct")] public bool Correct => Prediction == Answer;
    /// <summary>Softmax over the four answer tokens' logits, A to D (what <c>evaluate.py</c> saves).</summary>
    [JsonPropertyName("probabilities")] public required double[] Probabilities { get; init; }
    [JsonPropertyName("shots")] public required int Shots { get; init; }
    [JsonPropertyName("prompt_tokens")] public required int PromptTokens { get; init; }
}

/// <summary>One subject's accuracy.</summary>
/// <param name="Shots">The fewest shots any of its prompts kept (shots are dropped for long questions).</param>
public sealed record MmluSubjectResult(string Subject, int Questions, int Correct, int Shots)
{
    public double Accuracy => Questions == 0 ? 0 : (double)Correct / Questions;
}

/// <summary>Per-subject and overall accuracy, and every prediction.</summary>
/// <param name="TruncatedQuestions">Questions cut from the start because they did not fit even without shots.</param>
public sealed record MmluResult(IReadOnlyList<MmluSubjectResult> Subjects, IReadOnlyList<MmluPrediction> Predictions, int TruncatedQuestions)
{
    public int Questions => Subjects.Sum(s => s.Questions);
    public int Correct => Subjects.Sum(s => s.Correct);
    /// <summary>Micro average: correct over all questions (<c>evaluate.py</c>'s "Average accuracy").</summary>
    public double Accuracy => Questions == 0 ? 0 : (double)Correct / Questions;
    /// <summary>Macro average: the mean of the subjects' accuracies.</summary>
    public double MacroAccuracy => Subjects.Count == 0 ? 0 : Subjects.Average(s => s.Accuracy);
}

/// <summary>Reported after each subject.</summary>
public sealed record MmluProgress(int SubjectsDone, int SubjectCount, MmluSubjectResult Subject);

/// <summary>
/// MMLU as Hendrycks et al.'s <c>evaluate.py</c> and its LLaMA-era ports run it: a k-shot prompt per question
/// (<see cref="MmluData.Prompt"/>), shots dropped from the end while the prompt is too long, and the answer is the
/// letter whose token (" A" … " D") has the largest next-token logit; the four logits' softmax is saved as the
/// probabilities. A subject without a dev file is evaluated zero-shot, with a warning.
/// </summary>
public static class MmluEvaluation
{
    /// <summary>
    /// The next-token ids of " A", " B", " C", " D": the last id of each encoded without special tokens. Byte-level
    /// BPE (GPT-2) gives one token "ĠA"; SentencePiece (LLaMA) gives "▁A", possibly after a lone "▁" — the last id is
    /// the letter either way, as the LLaMA scripts take <c>tokenizer("A").input_ids[-1]</c>.
    /// </summary>
    /// <exception cref="InvalidDataException">Two letters share a token, or one encodes to nothing.</exception>
    public static int[] AnswerTokenIds(ITextEncoder encoder)
    {
        var ids = new int[MmluData.Letters.Count];
        for (int j = 0; j < ids.Length; j++)
        {
            var encoded = encoder.Encode(" " + MmluData.Letters[j], addSpecialTokens: false);
            if (encoded.Count == 0) throw new InvalidDataException($"the tokenizer encodes \" {MmluData.Letters[j]}\" to no tokens");
            ids[j] = encoded[^1];
        }
        if (ids.Distinct().Count() != ids.Length)
            throw new InvalidDataException($"the tokenizer gives the answer letters the same token ids ({string.Join(", ", ids)})");
        return ids;
    }

    /// <summary>
    /// A question's prompt ids (the model's special-token prefix, e.g. LLaMA's BOS, and no suffix), with as many of
    /// <paramref name="shots"/> dev examples as fit in <paramref name="maxLength"/> tokens: shots are dropped from the
    /// end one at a time, as <c>evaluate.py</c> does. A question too long even without shots keeps its special prefix
    /// and its last tokens, so that "Answer:" stays next to the prediction.
    /// </summary>
    public static MmluPrompt EncodePrompt(ITextEncoder encoder, MmluSubject subject, MmluQuestion question, int shots, int maxLength)
    {
        int k = Math.Min(shots, subject.Dev.Count);
        while (true)
        {
            string text = MmluData.Prompt(subject.Name, subject.Dev, k, question);
            int[] ids = Truncation.EncodeWithoutSuffix(encoder, text);
            if (ids.Length <= maxLength) return new MmluPrompt(ids, k, 0);
            if (k > 0) { k--; continue; }

            var content = encoder.Encode(text, addSpecialTokens: false);
            int prefix = Math.Max(0, Truncation.IndexOf(ids, content, 0));
            if (prefix >= maxLength) throw new InvalidDataException($"the special tokens alone ({prefix}) do not fit in {maxLength} positions");
            int dropped = ids.Length - maxLength;
            return new MmluPrompt([.. ids[..prefix], .. ids[(prefix + dropped)..]], 0, dropped);
        }
    }

    /// <summary>Evaluates every subject; see the class summary for the protocol.</summary>
    /// <param name="encoder">The model's tokenizer (e.g. a <see cref="TokenizerEncoder"/>).</param>
    /// <param name="log">Warnings: a subject without dev examples, questions cut to fit.</param>
    /// <exception cref="ArgumentException">Not a causal-LM model, or bad options.</exception>
    public static MmluResult Evaluate(TransformerModel model, ITextEncoder encoder, IReadOnlyList<MmluSubject> subjects,
        MmluOptions? options = null, IProgress<MmluProgress>? progress = null, Action<string>? log = null)
    {
        options ??= new MmluOptions();
        var problems = new List<string>(options.Problems());
        if (model.Head != ModelHead.CausalLM) problems.Insert(0, $"MMLU evaluation needs a causal-LM model, not {model.Head}");
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));
        int maxLength = Math.Min(options.MaxLength ?? int.MaxValue, model.Config.MaxPositions);
        int[] answerIds = AnswerTokenIds(encoder);
        var scorer = new ChoiceScorerOptions { BatchSize = options.BatchSize, MaxLength = maxLength };

        var results = new List<MmluSubjectResult>(subjects.Count);
        var predictions = new List<MmluPrediction>();
        int truncated = 0;
        foreach (var subject in subjects)
        {
            if (options.Shots > 0 && subject.DevFile is null)
                log?.Invoke($"warning: {subject.Name} has no dev/{subject.Name}_dev.csv; evaluating it zero-shot");
            var prompts = subject.Questions.Select(q => EncodePrompt(encoder, subject, q, options.Shots, maxLength)).ToList();
            int cut = prompts.Count(p => p.DroppedTokens > 0);
            if (cut > 0) log?.Invoke($"warning: {subject.Name}: {cut} questions do not fit in {maxLength} tokens even without shots; their starts were cut");
            truncated += cut;

            double[][] logProbabilities = ChoiceScorer.NextTokenLogProbabilities(model, prompts.Select(p => (IReadOnlyList<int>)p.Ids).ToList(), answerIds, scorer);
            int correct = 0;
            for (int i = 0; i < subject.Questions.Count; i++)
            {
                var question = subject.Questions[i];
                double[] scores = logProbabilities[i];
                int best = 0;                                                  // numpy's argmax: the first on ties
                for (int j = 1; j < scores.Length; j++) if (scores[j] > scores[best]) best = j;
                // Log-softmax over the vocabulary differs from the logits by one constant per prompt, so this is the
                // softmax of the four logits.
                double top = scores.Max();
                double[] exp = [.. scores.Select(s => Math.Exp(s - top))];
                double total = exp.Sum();
                if (best == question.Answer) correct++;
                predictions.Add(new MmluPrediction
                {
                    Subject = subject.Name, Index = i, Line = question.Line,
                    Prediction = MmluData.Letters[best], Answer = question.AnswerLetter,
                    Probabilities = [.. exp.Select(e => e / total)],
                    Shots = prompts[i].Shots, PromptTokens = prompts[i].Ids.Length,
                });
            }
            var result = new MmluSubjectResult(subject.Name, subject.Questions.Count, correct, prompts.Min(p => p.Shots));
            results.Add(result);
            progress?.Report(new MmluProgress(results.Count, subjects.Count, result));
        }
        return new MmluResult(results, predictions, truncated);
    }

    /// <summary>Writes one JSON object a line (subject, index, line, prediction, answer, correct, probabilities, shots, prompt_tokens), atomically.</summary>
    public static void WritePredictions(string path, IEnumerable<MmluPrediction> predictions)
    {
        var text = new StringBuilder();
        foreach (var prediction in predictions) text.Append(JsonSerializer.Serialize(prediction, JsonOptions)).Append('\n');
        AtomicFile.WriteAllText(path, text.ToString());
    }

    static readonly JsonSerializerOptions JsonOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
