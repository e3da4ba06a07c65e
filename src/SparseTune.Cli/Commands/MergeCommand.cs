using System.CommandLine;
using SparseTune.Tuners;

namespace SparseTune.Cli.Commands;

/// <summary>
/// sparsetune merge: a plain Hugging Face checkpoint from a base model plus what any method produced — a PEFT LoRA
/// adapter folder, a sparse delta (SIFT), sparse weights (PST) — recognised by its metadata, not its file name.
/// </summary>
public static class MergeCommand
{
    public static Command Create()
    {
        var baseModel = new Option<string>("--model") { Description = "Base Hugging Face model folder.", Required = true };
        var adapter = new Option<string?>("--adapter", "--delta")
        {
            Description = "What a method wrote, or a run folder holding it: " + string.Join("; or ", MethodRegistry.ArtifactReaders.Select(r => r.Description)) + ".",
        };
        var output = new Option<string>("--output") { Description = "Folder to write the merged checkpoint to.", Required = true };
        var command = new Command("merge", "Merge any method's artifact into a base model and save a plain checkpoint.") { baseModel, adapter, output };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            string modelDir = CliSupport.ExistingDirectory(parse.GetValue(baseModel), "--model");
            string outputDir = parse.GetValue(output)!;
            string artifact = parse.GetValue(adapter) ?? throw new UsageException("--adapter is required (a LoRA adapter folder, a sparse-matrix file, or a run folder holding one)");
            if (MethodArtifacts.PathProblem(artifact) is { } adapterProblem) throw new UsageException(adapterProblem);
            MethodArtifacts.MergeToCheckpoint(modelDir, artifact, outputDir);
            Console.WriteLine($"wrote merged model to {outputDir}");
            return 0;
        }));
        return command;
    }
}
