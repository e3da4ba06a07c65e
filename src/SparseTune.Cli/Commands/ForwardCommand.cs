using System.CommandLine;
using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Nn;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Cli.Commands;

/// <summary>
/// sparsetune forward: runs a model on input_ids/attention_mask[/token_type_ids] from a safetensors file and
/// writes float32 logits and last_hidden_state. Outside tools use it to check our models against theirs.
/// </summary>
public static class ForwardCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder (config.json + *.safetensors).", Required = true };
        var inputs = new Option<string>("--inputs") { Description = "safetensors file with input_ids (B,T) and optional attention_mask, token_type_ids.", Required = true };
        var output = new Option<string>("--output") { Description = "safetensors file to write logits and last_hidden_state to.", Required = true };
        var device = CliSupport.DeviceOption();
        var precision = CliSupport.PrecisionOption();
        var command = new Command("forward", "Run a model forward on token ids and save logits and hidden states.") { model, inputs, output, device, precision };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            string modelDir = CliSupport.ExistingDirectory(parse.GetValue(model), "--model");
            string inputFile = CliSupport.ExistingFile(parse.GetValue(inputs), "--inputs");
            string outputFile = parse.GetValue(output)!;
            Run(modelDir, inputFile, outputFile, ComputeDevice.Resolve(parse.GetValue(device)!, Console.Error.WriteLine), CliSupport.ParsePrecision(parse.GetValue(precision)));
            Console.WriteLine($"wrote logits and last_hidden_state to {outputFile}");
            return 0;
        }));
        return command;
    }

    public static void Run(string modelDir, string inputFile, string outputFile, Device? device = null, Precision precision = Precision.Fp32)
    {
        using var scope = NewDisposeScope();
        var tensors = SafeTensors.Load(inputFile);
        if (!tensors.TryGetValue("input_ids", out var inputIds))
            throw new InvalidDataException($"{inputFile}: no input_ids tensor (found: {string.Join(", ", tensors.Keys)})");
        if (inputIds.dim() != 2) throw new InvalidDataException($"{inputFile}: input_ids must be (batch, length), got [{string.Join(", ", inputIds.shape)}]");
        // Empty ids would reach libtorch's max() and fail with a C++ stack trace; float ids would be truncated silently.
        if (inputIds.numel() == 0) throw new InvalidDataException($"{inputFile}: input_ids is empty [{string.Join(", ", inputIds.shape)}]");
        Tensor ids = IntegerTensor(inputFile, "input_ids", inputIds);
        Tensor? mask = tensors.TryGetValue("attention_mask", out var m) ? IntegerTensor(inputFile, "attention_mask", m) : null;
        Tensor? types = tensors.TryGetValue("token_type_ids", out var t) ? IntegerTensor(inputFile, "token_type_ids", t) : null;
        foreach (var (name, other) in new[] { ("attention_mask", mask), ("token_type_ids", types) })
            if (other is not null && !other.shape.SequenceEqual(ids.shape))
                throw new InvalidDataException($"{inputFile}: {name} is [{string.Join(", ", other.shape)}] but input_ids is [{string.Join(", ", ids.shape)}]");

        using TransformerModel net = PretrainedModel.Load(modelDir);
        net.eval();
        long vocab = net.Config.VocabSize;
        long maxId = ids.max().item<long>(), minId = ids.min().item<long>();
        if (minId < 0 || maxId >= vocab) throw new InvalidDataException($"{inputFile}: input_ids outside the vocabulary [0, {vocab}): min {minId}, max {maxId}");
        if (types is not null && net.Config is BertConfig bert)
        {
            // Out-of-range type ids would otherwise fail inside libtorch's embedding lookup with a C++ stack trace.
            long maxType = types.max().item<long>(), minType = types.min().item<long>();
            if (minType < 0 || maxType >= bert.TypeVocabSize)
                throw new InvalidDataException($"{inputFile}: token_type_ids outside [0, {bert.TypeVocabSize}) (type_vocab_size): min {minType}, max {maxType}");
        }
        using var _ = no_grad();
        net.Precision = precision;
        if (device is not null)
        {
            net.to(device);
            (ids, mask, types) = (ids.to(device), mask?.to(device), types?.to(device));
        }
        using ModelOutput result = net.Forward(ids, mask, types);
        List<KeyValuePair<string, Tensor>> outputs =
        [
            new("logits", result.Logits.to_type(ScalarType.Float32)),
            new("last_hidden_state", result.LastHiddenState.to_type(ScalarType.Float32)),
        ];
        FiniteChecks.EnsureWritable(outputFile, outputs);
        SafeTensors.Save(outputFile, outputs);
    }

    /// <summary>An id or mask tensor as int64; float tensors are refused rather than truncated (a bool mask is fine).</summary>
    static Tensor IntegerTensor(string inputFile, string name, Tensor tensor)
    {
        if (tensor.is_floating_point() || tensor.is_complex())
            throw new InvalidDataException($"{inputFile}: {name} must hold integers, got {tensor.dtype}");
        return tensor.to_type(ScalarType.Int64);
    }
}
