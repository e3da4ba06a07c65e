using System.CommandLine;
using SparseTune.Cli;
using SparseTune.Cli.Commands;

// sparsetune: every failure is a non-zero exit and one line on stderr; --verbose adds the stack trace.
var root = new RootCommand("SparseTune: sparsity-aware, parameter-efficient fine-tuning of Hugging Face transformers.");
root.Options.Add(CliSupport.Verbose);
root.Subcommands.Add(FinetuneCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
root.Subcommands.Add(ForwardCommand.Create());
root.Subcommands.Add(InspectCommand.Create());
root.Subcommands.Add(MergeCommand.Create());
root.Subcommands.Add(PretrainCommand.Create());
return root.Parse(args).Invoke();
