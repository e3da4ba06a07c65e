using SparseTune.Data;
using SparseTune.Models;
using SparseTune.Tokenization;
using SparseTune.Tuners;
using TorchSharp;

namespace SparseTune.Generation;

/// <summary>Why a completion ended.</summary>
public enum FinishReason
{
    /// <summary>The model produced its end-of-sequence token.</summary>
    Eos,
    /// <summary>The text reached one of the stop strings (cut before it).</summary>
    Stop,
    /// <summary>The new-token limit or the model's position limit.</summary>
    Length,
}

/// <summary>One prompt's completion.</summary>
/// <param name="Prompt">The prompt as given (before any template).</param>
/// <param name="Text">The generated text, without the prompt, cut before a stop string.</param>
/// <param name="PromptTokens">Tokens of the prompt the model saw (template and special tokens included).</param>
/// <param name="NewTokens">Tokens generated (a closing EOS not counted).</param>
public sealed record GeneratedText(string Prompt, string Text, int PromptTokens, int NewTokens, FinishReason Finish);

/// <summary>
/// Text in, text out, for a causal LM: the C# counterpart of <c>sparsetune generate</c> and of Hugging Face's
/// text-generation pipeline. Loads a model folder (plus any method's artifact, merged in memory), its tokenizer and
/// the prompt template a SparseTune instruction-tuning run stored beside it.
/// </summary>
public sealed class TextGenerator : IDisposable
{
    public TransformerModel Model { get; }
    public TextTokenizer Tokenizer { get; }
    readonly TokenizerEncoder encoder;

    /// <summary>The template prompts are wrapped in (<see cref="PromptTemplate"/>); null: prompts go in as typed.</summary>
    public PromptTemplate? Template { get; set; }

    public TextGenerator(TransformerModel model, TextTokenizer tokenizer, PromptTemplate? template = null)
    {
        if (model.Head != ModelHead.CausalLM) throw new ArgumentException($"generation needs a causal-LM model, not {model.Head}", nameof(model));
        Model = model;
        Tokenizer = tokenizer;
        encoder = new TokenizerEncoder(tokenizer);
        Template = template;
    }

    /// <summary>
    /// Loads <paramref name="modelDirectory"/> with its causal-LM head, merges <paramref name="artifact"/> (a LoRA
    /// adapter, a sparse delta, a run folder…) when given, and finds a stored prompt template in either place.
    /// </summary>
    /// <param name="device">Where to run (default: the CPU); see <see cref="Nn.ComputeDevice"/>.</param>
    public static TextGenerator Load(string modelDirectory, string? artifact = null, Action<string>? log = null, torch.Device? device = null)
    {
        var tokenizer = TextTokenizer.FromFolder(modelDirectory);
        TransformerModel model = LoadCausalLM(modelDirectory, artifact, log);
        if (device is not null) model.to(device);
        try
        {
            return new TextGenerator(model, tokenizer, PromptTemplate.Find(artifact, modelDirectory));
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>The model with its causal-LM head, with any method's artifact merged into it.</summary>
    public static TransformerModel LoadCausalLM(string modelDirectory, string? artifact, Action<string>? log)
    {
        if (artifact is null)
        {
            var model = PretrainedModel.Load(modelDirectory, ModelHead.CausalLM, null, out var loadReport);
            if (loadReport.NewlyInitialised.Count > 0)
                log?.Invoke($"warning: the checkpoint has no causal-LM head; newly initialised: {string.Join(", ", loadReport.NewlyInitialised)}");
            return model;
        }
        var tuned = MethodArtifacts.LoadWithArtifact(modelDirectory, artifact, out string found);
        if (tuned.Head != ModelHead.CausalLM)
        {
            tuned.Dispose();
            throw new InvalidDataException($"{found} was trained for {tuned.Head}, not a causal language model");
        }
        log?.Invoke($"merged {found} into {modelDirectory}");
        return tuned;
    }

    /// <summary>The token ids the model sees for a prompt: the template applied, special tokens as in training.</summary>
    public int[] EncodePrompt(string prompt) =>
        Truncation.EncodeWithoutSuffix(encoder, Template is null ? prompt : Template.Apply(prompt));

    /// <summary>
    /// Completes each prompt. Greedy search and sampling run the prompts as one batch (split them to bound memory),
    /// beam search one after the other. The end-of-sequence token is the tokenizer's unless
    /// <see cref="GenerationOptions.EosId"/> names one.
    /// </summary>
    /// <param name="stopStrings">A completion ends when its text contains one of these; the text is cut before it.</param>
    /// <param name="onText">Streaming: (prompt index, newly decoded text) as tokens arrive, never past a stop string.</param>
    public IReadOnlyList<GeneratedText> Generate(IReadOnlyList<string> prompts, GenerationOptions options,
        IReadOnlyList<string>? stopStrings = null, Action<int, string>? onText = null)
    {
        var stops = (stopStrings ?? []).Where(s => s.Length > 0).ToArray();
        var encoded = new List<IReadOnlyList<int>>();
        for (int i = 0; i < prompts.Count; i++)
        {
            if (string.IsNullOrWhiteSpace(prompts[i])) throw new ArgumentException($"prompt {i + 1} is empty");
            encoded.Add(EncodePrompt(prompts[i]));
        }
        options = options with { EosId = options.EosId ?? Tokenizer.EosId ?? Model.Config.EosTokenId };

        var streamed = new int[prompts.Count];                 // characters of each completion already sent to onText
        var stopped = new bool[prompts.Count];
        string Decode(IEnumerable<int> tokens) => Tokenizer.Decode(tokens);

        // Each row's text so far, decoded once per new token for both the stream and the stop strings.
        var decoded = new string[prompts.Count];
        var decodedTokens = new int[prompts.Count];
        string TextSoFar(int row, IReadOnlyList<int> tokens)
        {
            if (decodedTokens[row] != tokens.Count || decoded[row] is null) (decoded[row], decodedTokens[row]) = (Decode(tokens), tokens.Count);
            return decoded[row];
        }

        bool Stop(int row, IReadOnlyList<int> tokens)
        {
            if (stops.Length == 0) return false;
            string text = TextSoFar(row, tokens);
            return stopped[row] = stops.Any(s => text.Contains(s, StringComparison.Ordinal));
        }

        var soFar = prompts.Select(_ => new List<int>()).ToArray();
        void OnToken(int row, int token)
        {
            soFar[row].Add(token);
            string text = TextSoFar(row, soFar[row]);
            int safe = SafeToShow(text, stops);
            if (safe > streamed[row])
            {
                onText!(row, text[streamed[row]..safe]);
                streamed[row] = safe;
            }
        }

        var results = SequenceGenerator.Generate(Model, encoded, options, Stop, onText is null ? null : OnToken);
        var texts = new List<GeneratedText>();
        for (int i = 0; i < results.Count; i++)
        {
            string text = Decode(results[i].Tokens);
            int cut = stops.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(at => at >= 0).DefaultIfEmpty(-1).Min();
            if (cut >= 0) text = text[..cut];
            var finish = cut >= 0 || stopped[i] ? FinishReason.Stop : results[i].EndedWithEos ? FinishReason.Eos : FinishReason.Length;
            if (onText is not null && text.Length > streamed[i]) onText(i, text[streamed[i]..]);
            texts.Add(new GeneratedText(prompts[i], text, encoded[i].Count, results[i].Tokens.Length, finish));
        }
        return texts;
    }

    /// <summary>
    /// How much of a partial completion can be shown for good: up to a stop string it contains, else all but a tail
    /// that could still grow into one, and never an unfinished character (a byte-level token may split a UTF-8
    /// sequence, which decodes as U+FFFD until the rest arrives).
    /// </summary>
    internal static int SafeToShow(string text, IReadOnlyList<string> stops)
    {
        int end = text.Length;
        foreach (string stop in stops)
        {
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0) end = Math.Min(end, at);
            else
                for (int keep = Math.Min(stop.Length - 1, text.Length); keep > 0; keep--)
                    if (text.AsSpan(text.Length - keep).SequenceEqual(stop.AsSpan(0, keep))) { end = Math.Min(end, text.Length - keep); break; }
        }
        while (end > 0 && text[end - 1] == '\uFFFD') end--;
        return end;
    }

    public void Dispose() => Model.Dispose();
}
