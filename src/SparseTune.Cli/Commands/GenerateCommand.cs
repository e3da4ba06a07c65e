using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using SparseTune.Generation;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Nn;
using SparseTune.Tuners;

namespace SparseTune.Cli.Commands;

/// <summary>Everything `sparsetune generate` needs, validated together before any work starts.</summary>
public sealed record GenerateOptions
{
    public required string ModelDirectory { get; init; }
    public string? AdapterPath { get; init; }
    public IReadOnlyList<string> Prompts { get; init; } = [];
    public string? PromptsFile { get; init; }
    public GenerationOptions Generation { get; init; } = new();
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Apply the prompt template stored beside the model (instruction-tuned runs); false: prompts as typed.</summary>
    public bool UseTemplate { get; init; } = true;
    /// <summary>Prompts decoded together (greedy and sampling).</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>JSONL of prompt, completion and counts; null: stdout only.</summary>
    public string? OutputFile { get; init; }
    /// <summary>cpu, cuda or auto.</summary>
    public string Device { get; init; } = "cpu";
    public Precision Precision { get; init; }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>(Generation.Problems());
        if (PretrainedModel.FolderProblem(ModelDirectory) is { } modelProblem) problems.Add(modelProblem);
        if (MethodArtifacts.PathProblem(AdapterPath) is { } adapterProblem) problems.Add(adapterProblem);
        if (PromptsFile is not null && !File.Exists(PromptsFile)) problems.Add($"--prompts: file not found: {PromptsFile}");
        if (Prompts.Count == 0 && PromptsFile is null) problems.Add("give --prompt TEXT (repeatable) or --prompts FILE");
        if (BatchSize < 1) problems.Add("--batch-size must be at least 1");
        return problems;
    }

    /// <summary>
    /// --prompt values, then the prompts file's: one prompt a line (blank lines skipped), or for .jsonl one object a
    /// line with "prompt" (or "instruction", as Alpaca data).
    /// </summary>
    public IReadOnlyList<string> AllPrompts()
    {
        var all = new List<string>(Prompts);
        if (PromptsFile is null) return all;
        bool jsonl = PromptsFile.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase);
        int lineNumber = 0, found = 0;
        foreach (string line in File.ReadLines(PromptsFile))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            if (!jsonl) { all.Add(line); found++; continue; }
            try
            {
                using var doc = JsonDocument.Parse(line);
                JsonElement? field = doc.RootElement.ValueKind != JsonValueKind.Object ? null
                    : doc.RootElement.TryGetProperty("prompt", out var p) ? p
                    : doc.RootElement.TryGetProperty("instruction", out var i) ? i : null;
                if (field is not { ValueKind: JsonValueKind.String } text || string.IsNullOrWhiteSpace(text.GetString()))
                    throw new InvalidDataException($"{PromptsFile}:{lineNumber}: needs a non-empty \"prompt\" (or \"instruction\") string");
                all.Add(text.GetString()!);
                found++;
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"{PromptsFile}:{lineNumber}: not JSON ({e.Message})");
            }
        }
        if (found == 0) throw new InvalidDataException($"{PromptsFile}: no prompts (the file is empty or blank)");
        return all;
    }
}

/// <summary>
/// sparsetune generate: completes prompts with a causal LM (plus any method's artifact): greedy search, sampling or
/// beam search, with a key/value cache. Completions go to stdout (streamed as they are generated when prompts run one
/// at a time); everything else to stderr.
/// </summary>
public static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Hugging Face causal-LM folder (config.json, *.safetensors, tokenizer files), e.g. a run's model/.", Required = true };
        var adapter = new Option<string?>("--adapter", "--delta") { Description = "Any method's artifact to apply to --model first (merged in memory): a LoRA adapter folder, a sparse delta, or a run folder." };
        var prompt = new Option<string[]>("--prompt") { Description = "A prompt (repeatable).", AllowMultipleArgumentsPerToken = false };
        var prompts = new Option<string?>("--prompts") { Description = "A file of prompts: one a line, or JSONL with \"prompt\" (or \"instruction\")." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate per prompt.", DefaultValueFactory = _ => 64 };
        var sample = new Option<bool>("--sample") { Description = "Sample instead of greedy search (implied by --temperature, --top-k, --top-p)." };
        var temperature = new Option<double?>("--temperature") { Description = "Sampling temperature (default 1); 0 means greedy." };
        var topK = new Option<int?>("--top-k") { Description = "Sample among the k most probable tokens (0: all)." };
        var topP = new Option<double?>("--top-p") { Description = "Nucleus sampling: the most probable tokens whose probabilities reach p (1: all)." };
        var repetition = new Option<double>("--repetition-penalty") { Description = "Penalise tokens already in the text (1: off; 1.1–1.3 is typical).", DefaultValueFactory = _ => 1.0 };
        var noRepeat = new Option<int>("--no-repeat-ngram") { Description = "Forbid repeating any n-gram of this size (0: off).", DefaultValueFactory = _ => 0 };
        var beams = new Option<int>("--beams") { Description = "Beam search with this many beams (1: greedy or sampling).", DefaultValueFactory = _ => 1 };
        var lengthPenalty = new Option<double>("--length-penalty") { Description = "Beam score = log p / length^α.", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<int?>("--seed") { Description = "Seed for sampling, so a run can be repeated." };
        var stop = new Option<string[]>("--stop") { Description = "Stop when the completion contains this text (repeatable); the text is cut before it." };
        var noCache = new Option<bool>("--no-cache") { Description = "Recompute the whole prefix at every step instead of keeping a key/value cache (same output, slower)." };
        var noTemplate = new Option<bool>("--no-template") { Description = "Do not wrap prompts in the template stored beside an instruction-tuned model." };
        var batchSize = new Option<int>("--batch-size") { Description = "Prompts decoded together.", DefaultValueFactory = _ => 8 };
        var device = CliSupport.DeviceOption();
        var precision = CliSupport.PrecisionOption();
        var output = new Option<string?>("--output") { Description = "Also write prompt, completion and counts as JSONL to this file." };
        var command = new Command("generate", "Complete prompts with a causal language model (GPT-2, LLaMA, Qwen2, Mistral).")
        {
            model, adapter, prompt, prompts, maxNew, sample, temperature, topK, topP, repetition, noRepeat, beams, lengthPenalty,
            seed, stop, noCache, noTemplate, batchSize, output, device, precision,
        };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            double? t = parse.GetValue(temperature);
            bool doSample = (parse.GetValue(sample) || t is not null || parse.GetValue(topK) is not null || parse.GetValue(topP) is not null) && t is not 0;
            var options = new GenerateOptions
            {
                ModelDirectory = parse.GetValue(model)!,
                AdapterPath = parse.GetValue(adapter),
                Prompts = parse.GetValue(prompt) ?? [],
                PromptsFile = parse.GetValue(prompts),
                Generation = new GenerationOptions
                {
                    MaxNewTokens = parse.GetValue(maxNew),
                    NumBeams = parse.GetValue(beams),
                    LengthPenalty = parse.GetValue(lengthPenalty),
                    NoRepeatNgramSize = parse.GetValue(noRepeat),
                    DoSample = doSample,
                    Temperature = t is null or 0 ? 1.0 : t.Value,
                    TopK = parse.GetValue(topK) ?? 0,
                    TopP = parse.GetValue(topP) ?? 1.0,
                    RepetitionPenalty = parse.GetValue(repetition),
                    Seed = parse.GetValue(seed),
                    UseCache = !parse.GetValue(noCache),
                },
                StopStrings = parse.GetValue(stop) ?? [],
                UseTemplate = !parse.GetValue(noTemplate),
                BatchSize = parse.GetValue(batchSize),
                OutputFile = parse.GetValue(output),
                Device = parse.GetValue(device)!,
                Precision = CliSupport.ParsePrecision(parse.GetValue(precision)),
            };
            Run(options, Console.Out, Console.Error.WriteLine);
            return 0;
        }));
        return command;
    }

    /// <summary>Validates, loads, generates; completions to <paramref name="stdout"/>, the rest to <paramref name="log"/>.</summary>
    public static IReadOnlyList<GeneratedText> Run(GenerateOptions options, TextWriter stdout, Action<string>? log = null)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));
        var prompts = options.AllPrompts();

        using var generator = TextGenerator.Load(options.ModelDirectory, options.AdapterPath, log, ComputeDevice.Resolve(options.Device, log));
        generator.Model.Precision = options.Precision;
        if (!options.UseTemplate) generator.Template = null;
        else if (generator.Template is { } template) log?.Invoke($"prompts are wrapped in the {template.Name} template stored with the model (--no-template: as typed)");
        foreach (string p in prompts)
        {
            int length = generator.EncodePrompt(p).Length;
            if (length >= generator.Model.Config.MaxPositions)
                throw new UsageException($"a prompt is {length} tokens, which leaves no room within the model's {generator.Model.Config.MaxPositions} positions: \"{Shorten(p)}\"");
        }

        var all = new List<GeneratedText>();
        var clock = Stopwatch.StartNew();
        // One prompt at a time streams its tokens; a batch prints each completion when the batch ends.
        int batch = options.Generation.NumBeams > 1 ? 1 : options.BatchSize;
        for (int start = 0; start < prompts.Count; start += batch)
        {
            var chunk = prompts.Skip(start).Take(batch).ToList();
            bool stream = chunk.Count == 1;
            var results = generator.Generate(chunk, options.Generation, options.StopStrings,
                stream ? (_, text) => { stdout.Write(text); stdout.Flush(); } : null);
            foreach (var result in results)
            {
                if (!stream) stdout.Write(result.Text);
                stdout.WriteLine();
                if (prompts.Count > 1) stdout.WriteLine();
            }
            all.AddRange(results);
        }
        double seconds = clock.Elapsed.TotalSeconds;
        int tokens = all.Sum(r => r.NewTokens);
        log?.Invoke($"generated {tokens} tokens for {all.Count} prompt{(all.Count == 1 ? "" : "s")} in {seconds:0.0} s ({tokens / Math.Max(seconds, 1e-9):0.0} tokens/s, {(options.Generation.UseCache ? "key/value cache" : "no cache")})");
        if (options.OutputFile is not null)
        {
            AtomicFile.WriteAllText(options.OutputFile, string.Concat(all.Select(r => JsonSerializer.Serialize(new
            {
                prompt = r.Prompt, completion = r.Text, prompt_tokens = r.PromptTokens, new_tokens = r.NewTokens,
                finish_reason = r.Finish.ToString().ToLowerInvariant(),
            }) + "\n")));
            log?.Invoke($"wrote {options.OutputFile}");
        }
        return all;
    }

    static string Shorten(string text) => text.Length <= 40 ? text : text[..37] + "...";
}
