using System.CommandLine;
using SparseTune.Data;
using SparseTune.Generation;
using SparseTune.Models;
using SparseTune.Nn;
using TorchSharp;
using SparseTune.Tokenization;
using SparseTune.Tuners;

namespace SparseTune.Cli.Commands;

/// <summary>Everything `sparsetune eval` needs, validated together before any work starts.</summary>
public sealed record EvalOptions
{
    public required string ModelDirectory { get; init; }
    public required string DataFile { get; init; }
    /// <summary>Any method's artifact (a LoRA adapter folder, a sparse delta, …) to merge into the model; null: the model as it is.</summary>
    public string? AdapterDirectory { get; init; }
    public GenerationOptions Generation { get; init; } = new();
    /// <summary>Evaluate only the first this-many meaning representations; 0: all.</summary>
    public int Limit { get; init; }
    public bool Lowercase { get; init; }
    public BleuTokenizer Tokenizer { get; init; } = BleuTokenizer.ThirteenA;
    public bool SkipBadRows { get; init; }
    /// <summary>JSONL file for the predictions; null: none written.</summary>
    public string? OutputFile { get; init; }
    /// <summary>cpu, cuda or auto.</summary>
    public string Device { get; init; } = "cpu";
    public Precision Precision { get; init; }

    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>(Generation.Problems().Select(p => "generation: " + p));
        if (!Directory.Exists(ModelDirectory)) problems.Add($"--model: folder not found: {ModelDirectory}");
        else if (!File.Exists(Path.Combine(ModelDirectory, "config.json"))) problems.Add($"--model: {ModelDirectory} has no config.json");
        if (!File.Exists(DataFile)) problems.Add($"--data: file not found: {DataFile}");
        else if (!E2EData.LooksLikeE2E(DataFile))
            problems.Add($"--data: {DataFile} is not E2E JSONL (its first line needs \"{E2EData.MeaningRepresentationField}\" and \"{E2EData.ReferenceField}\"); eval supports E2E data only");
        if (AdapterDirectory is not null && !Directory.Exists(AdapterDirectory) && !File.Exists(AdapterDirectory)) problems.Add($"--adapter: not found: {AdapterDirectory}");
        if (Limit < 0) problems.Add("--limit must be 0 (all) or more");
        return problems;
    }
}

/// <summary>
/// sparsetune eval: the NLG evaluation of the PST paper's GPT-2 experiments. Generates one output per distinct
/// meaning representation of an E2E JSONL file and scores the outputs with corpus BLEU against every reference
/// of their MR. Decoding defaults are LoRA's for GPT-2 on E2E (beam 10, length penalty 0.8, no repeated 4-grams).
/// Classification and language-modelling files are not evaluated here: `finetune --eval` reports their metrics.
/// </summary>
public static class EvalCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Hugging Face causal-LM folder (config.json, *.safetensors, tokenizer files).", Required = true };
        var data = new Option<string>("--data") { Description = "E2E JSONL: one {\"meaning_representation\", \"reference\"} object a line, several lines per MR. Only E2E data is supported.", Required = true };
        var adapter = new Option<string?>("--adapter", "--delta") { Description = "Any method's artifact to merge into --model first: a LoRA adapter folder, a sparse delta or sparse-weights file, or a run folder holding one." };
        var beams = new Option<int>("--beams") { Description = "Beam size; 1 decodes greedily.", DefaultValueFactory = _ => 10 };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate per MR (EOS included).", DefaultValueFactory = _ => 64 };
        var lengthPenalty = new Option<double>("--length-penalty") { Description = "Beam score = log p / length^α (Hugging Face's length_penalty).", DefaultValueFactory = _ => 0.8 };
        var noRepeat = new Option<int>("--no-repeat-ngram") { Description = "Forbid repeating any n-gram of this size; 0 turns it off.", DefaultValueFactory = _ => 4 };
        var limit = new Option<int>("--limit") { Description = "Evaluate only the first N meaning representations (0: all).", DefaultValueFactory = _ => 0 };
        var lowercase = new Option<bool>("--lowercase") { Description = "Lowercase predictions and references before BLEU (sacrebleu -lc)." };
        var tokenize = new Option<BleuTokenizer>("--bleu-tokenize") { Description = "BLEU tokenisation: ThirteenA (sacrebleu's default 13a) or Whitespace.", DefaultValueFactory = _ => BleuTokenizer.ThirteenA };
        var skipBad = new Option<bool>("--skip-bad-rows") { Description = "Skip and count malformed rows instead of stopping at the first." };
        var device = CliSupport.DeviceOption();
        var precision = CliSupport.PrecisionOption();
        var noCache = new Option<bool>("--no-cache") { Description = "Recompute the whole prefix at every decoding step instead of keeping a key/value cache (same output, slower)." };
        var output = new Option<string?>("--output") { Description = "Predictions JSONL to write (meaning_representation, prediction, references, …).", DefaultValueFactory = _ => "predictions.jsonl" };
        var command = new Command("eval", "Generate from E2E meaning representations and report corpus BLEU (E2E NLG data only).")
        {
            model, data, adapter, beams, maxNew, lengthPenalty, noRepeat, limit, lowercase, tokenize, skipBad, noCache, output, device, precision,
        };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            var options = new EvalOptions
            {
                ModelDirectory = parse.GetValue(model)!,
                DataFile = parse.GetValue(data)!,
                AdapterDirectory = parse.GetValue(adapter),
                Generation = new GenerationOptions
                {
                    NumBeams = parse.GetValue(beams),
                    MaxNewTokens = parse.GetValue(maxNew),
                    LengthPenalty = parse.GetValue(lengthPenalty),
                    NoRepeatNgramSize = parse.GetValue(noRepeat),
                    UseCache = !parse.GetValue(noCache),
                },
                Limit = parse.GetValue(limit),
                Lowercase = parse.GetValue(lowercase),
                Tokenizer = parse.GetValue(tokenize),
                SkipBadRows = parse.GetValue(skipBad),
                OutputFile = string.IsNullOrWhiteSpace(parse.GetValue(output)) ? null : parse.GetValue(output),
                Device = parse.GetValue(device)!,
                Precision = CliSupport.ParsePrecision(parse.GetValue(precision)),
            };
            var result = Run(options, Console.Error.WriteLine);
            var b = result.Bleu;
            Console.WriteLine($"BLEU = {b.Score:0.00} {string.Join('/', b.Precisions.Select(p => p.ToString("0.0")))} (BP = {b.BrevityPenalty:0.000} hyp_len = {b.HypothesisLength} ref_len = {b.ReferenceLength}) over {result.Predictions.Count} meaning representations");
            if (options.OutputFile is not null) Console.WriteLine($"wrote predictions to {options.OutputFile}");
            return 0;
        }));
        return command;
    }

    /// <summary>Validates, loads model (and adapter), tokenizer and data, generates, scores and writes the predictions.</summary>
    /// <param name="log">Progress and warnings (the CLI sends them to stderr).</param>
    public static E2EEvaluation Run(EvalOptions options, Action<string>? log = null)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));

        var tokenizer = TextTokenizer.FromFolder(options.ModelDirectory);
        var encoder = new TokenizerEncoder(tokenizer);
        var references = E2EData.Groups(options.DataFile, options.SkipBadRows);
        if (references.SkippedRows > 0) log?.Invoke($"skipped {references.SkippedRows} bad rows, e.g. {references.SkippedReasons[0]}");
        var groups = options.Limit > 0 ? references.Groups.Take(options.Limit).ToList() : references.Groups;
        if (groups.Count == 0) throw new InvalidDataException($"{options.DataFile}: no meaning representations to evaluate");

        using TransformerModel net = TextGenerator.LoadCausalLM(options.ModelDirectory, options.AdapterDirectory, log);
        net.to(ComputeDevice.Resolve(options.Device, log));
        net.Precision = options.Precision;

        int every = Math.Max(1, groups.Count / 10);
        var progress = new SynchronousProgress(done => { if (done % every == 0 || done == groups.Count) log?.Invoke($"generated {done}/{groups.Count}"); });
        var result = E2EEvaluator.Evaluate(net, groups, encoder, ids => tokenizer.Decode(ids), options.Generation,
            options.Tokenizer, options.Lowercase, progress);
        if (options.OutputFile is not null) E2EEvaluator.WritePredictions(options.OutputFile, result.Predictions);
        return result;
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool and print out of order).</summary>
    sealed class SynchronousProgress(Action<int> report) : IProgress<int>
    {
        public void Report(int value) => report(value);
    }
}
