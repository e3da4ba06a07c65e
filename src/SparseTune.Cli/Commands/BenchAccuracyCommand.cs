using System.CommandLine;

namespace SparseTune.Cli.Commands;

/// <summary>sparsetune bench accuracy: every method on the bundled demo at matched budgets, several seeds.</summary>
public static class BenchAccuracyCommand
{
    public static Command Create()
    {
        var command = new Command("accuracy", "Fine-tune the bundled model with every method at matched budgets over several seeds.");
        command.SetAction(parse => CliSupport.Run(parse, () => throw new NotSupportedException("bench accuracy is not implemented yet")));
        return command;
    }
}
