using System.CommandLine;
using SparseTune.Models;
using SparseTune.Tuners;
using SparseTune.Tuners.Lora;

namespace SparseTune.Cli.Commands;

/// <summary>
/// sparsetune merge: a plain Hugging Face checkpoint from a base model plus what a method produced — a PEFT LoRA
/// adapter folder (adapter_config.json) or a sparse delta file (sparse_delta.safetensors).
/// </summary>
public static class MergeCommand
{
    public static Command Create()
    {
        var baseModel = new Option<string>("--model") { Description = "Base Hugging Face model folder.", Required = true };
        var adapter = new Option<string?>("--adapter") { Description = "A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)." };
        var delta = new Option<string?>("--delta") { Description = "A sparse delta file (sparse_delta.safetensors) from SIFT." };
        var output = new Option<string>("--output") { Description = "Folder to write the merged checkpoint to.", Required = true };
        var command = new Command("merge", "Merge a LoRA adapter or a sparse delta into a base model and save a plain checkpoint.") { baseModel, adapter, delta, output };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            string modelDir = CliSupport.ExistingDirectory(parse.GetValue(baseModel), "--model");
            string outputDir = parse.GetValue(output)!;
            string? adapterDir = parse.GetValue(adapter), deltaFile = parse.GetValue(delta);
            if (adapterDir is null == deltaFile is null) throw new UsageException("give exactly one of --adapter or --delta");
            if (adapterDir is not null)
            {
                LoraMerge.MergeToCheckpoint(modelDir, CliSupport.ExistingDirectory(adapterDir, "--adapter"), outputDir);
            }
            else
            {
                SparseDelta.MergeToCheckpoint(modelDir, CliSupport.ExistingFile(deltaFile, "--delta"), outputDir);
            }
            Console.WriteLine($"wrote merged model to {outputDir}");
            return 0;
        }));
        return command;
    }
}
