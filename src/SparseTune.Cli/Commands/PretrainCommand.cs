using System.CommandLine;
using Spectre.Console;
using SparseTune.Pretraining;

namespace SparseTune.Cli.Commands;

/// <summary>sparsetune pretrain: trains a small BERT (masked LM) or GPT-2 (causal LM) from scratch on plain text; how the demo models were made.</summary>
public static class PretrainCommand
{
    public static Command Create()
    {
        var corpus = new Option<string[]>("--corpus") { Description = "Plain-text files; paragraphs separated by blank lines.", Required = true, AllowMultipleArgumentsPerToken = true };
        var output = new Option<string>("--output") { Description = "Folder for the model (config.json, model.safetensors, tokenizer files).", Required = true };
        var arch = new Option<string>("--arch") { Description = "bert (masked LM, WordPiece) or gpt2 (causal LM, byte-level BPE).", DefaultValueFactory = _ => "bert" };
        arch.AcceptOnlyFromAmong("bert", "gpt2");
        var vocab = new Option<int>("--vocab-size") { DefaultValueFactory = _ => 6000 };
        var hidden = new Option<int>("--hidden-size") { DefaultValueFactory = _ => 128 };
        var layers = new Option<int>("--layers") { DefaultValueFactory = _ => 4 };
        var heads = new Option<int>("--heads") { DefaultValueFactory = _ => 4 };
        var intermediate = new Option<int>("--intermediate-size") { DefaultValueFactory = _ => 512 };
        var maxLength = new Option<int>("--max-length") { DefaultValueFactory = _ => 128 };
        var epochs = new Option<int>("--epochs") { DefaultValueFactory = _ => 3 };
        var maxSteps = new Option<int?>("--max-steps");
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 32 };
        var lr = new Option<double>("--lr") { DefaultValueFactory = _ => 1e-3 };
        var seed = new Option<int>("--seed") { DefaultValueFactory = _ => 1234 };
        var device = CliSupport.DeviceOption();
        var precision = CliSupport.PrecisionOption();
        var command = new Command("pretrain", "Pretrain a small BERT (masked LM) or GPT-2 (causal LM) from scratch on plain text; builds its vocabulary too.")
        { corpus, output, arch, vocab, hidden, layers, heads, intermediate, maxLength, epochs, maxSteps, batch, lr, seed, device, precision };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            var files = parse.GetValue(corpus)!;
            foreach (var f in files) CliSupport.ExistingFile(f, "--corpus");
            var options = new PretrainOptions
            {
                CorpusFiles = files,
                OutputDirectory = parse.GetValue(output)!,
                Architecture = parse.GetValue(arch) == "gpt2" ? PretrainArchitecture.Gpt2 : PretrainArchitecture.Bert,
                VocabSize = parse.GetValue(vocab),
                HiddenSize = parse.GetValue(hidden),
                Layers = parse.GetValue(layers),
                Heads = parse.GetValue(heads),
                IntermediateSize = parse.GetValue(intermediate),
                MaxLength = parse.GetValue(maxLength),
                Epochs = parse.GetValue(epochs),
                MaxSteps = parse.GetValue(maxSteps),
                BatchSize = parse.GetValue(batch),
                LearningRate = parse.GetValue(lr),
                Seed = parse.GetValue(seed),
                Device = parse.GetValue(device)!,
                Precision = CliSupport.ParsePrecision(parse.GetValue(precision)),
            };
            var view = new TrainingProgressView();
            string commandLine = "sparsetune " + string.Join(' ', Environment.GetCommandLineArgs().Skip(1));
            var result = view.Run("pretrain", () => PretrainJob.Run(options, view, commandLine));
            AnsiConsole.MarkupLine($"pretrained {result.Steps} steps in {result.WallSeconds:0} s; {(options.Architecture == PretrainArchitecture.Gpt2 ? "LM" : "masked-LM")} loss {result.TrainLossFirst:0.00} → {result.TrainLossLast:0.00}; held-out: {Markup.Escape(string.Join(", ", result.Eval.Select(kv => $"{kv.Key} {kv.Value:0.000}")))}");
            AnsiConsole.MarkupLine($"model written to {Markup.Escape(options.OutputDirectory)}");
            return 0;
        }));
        return command;
    }
}
