using System.CommandLine;
using System.CommandLine.Invocation;
using Spectre.Console;
using SparseTune.Cli.Commands;

namespace SparseTune.Cli;

/// <summary>
/// The sparsetune command line: Program.cs calls <see cref="Run"/>; tests call it in-process with writers that
/// capture what the command prints.
/// </summary>
public static class SparseTuneCli
{
    /// <summary>The root command with every subcommand.</summary>
    public static RootCommand CreateRootCommand()
    {
        // sparsetune: every failure is a non-zero exit and one line on stderr; --verbose adds the stack trace.
        var root = new RootCommand("SparseTune: sparsity-aware, parameter-efficient fine-tuning of Hugging Face transformers.");
        root.Options.Add(CliSupport.Verbose);
        root.Subcommands.Add(FinetuneCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(ForwardCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(MergeCommand.Create());
        root.Subcommands.Add(PretrainCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(PredictCommand.Create());
        root.Subcommands.Add(MpiCheckCommand.Create());
        return root;
    }

    static string CommandPath(System.CommandLine.Parsing.CommandResult result)
    {
        var names = new List<string>();
        for (var r = result; r is not null && r.Parent is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
            names.Insert(0, r.Command.Name);
        return string.Join(' ', ["sparsetune", .. names]);
    }

    /// <summary>
    /// Parses and runs <paramref name="args"/>; returns the exit code. With <paramref name="stdout"/> or
    /// <paramref name="stderr"/> given, Console.Out / Console.Error (and the Spectre console) write there for the
    /// duration of the call and are restored afterwards. Not thread-safe: the console is process-wide.
    /// </summary>
    public static int Run(string[] args, TextWriter? stdout = null, TextWriter? stderr = null)
    {
        TextWriter previousOut = Console.Out, previousError = Console.Error;
        IAnsiConsole previousAnsi = CliSupport.Out;
        try
        {
            if (stdout is not null)
            {
                Console.SetOut(stdout);
                CliSupport.Out = AnsiConsole.Create(new AnsiConsoleSettings
                {
                    Ansi = AnsiSupport.No,
                    ColorSystem = ColorSystemSupport.NoColors,
                    Interactive = InteractionSupport.No,
                    Out = new AnsiConsoleOutput(stdout),
                });
            }
            if (stderr is not null) Console.SetError(stderr);
            ParseResult parse = CreateRootCommand().Parse(args);
            if (parse.Errors.Count > 0 && parse.Action is ParseErrorAction)
            {
                // Invalid command lines follow the same contract as every other failure: exit 2 (usage) and one
                // line on stderr, not System.CommandLine's default of exit 1 with the full help text.
                string problems = string.Join("; ", parse.Errors.Select(e => PlainTypeNames(e.Message.ReplaceLineEndings(" ").Trim().TrimEnd('.'))));
                Console.Error.WriteLine($"error: {problems} (see '{CommandPath(parse.CommandResult)} --help')");
                return 2;
            }
            var configuration = new InvocationConfiguration { Output = Console.Out, Error = Console.Error };
            return parse.Invoke(configuration);
        }
        finally
        {
            Console.Out.Flush();
            Console.Error.Flush();
            Console.SetOut(previousOut);
            Console.SetError(previousError);
            CliSupport.Out = previousAnsi;
        }
    }

    /// <summary>"as expected type 'System.Nullable`1[System.Double]'" → "as a number": parse errors speak of values, not .NET types.</summary>
    static string PlainTypeNames(string message) =>
        System.Text.RegularExpressions.Regex.Replace(message, @"as expected type '([^']+)'", m =>
        {
            string type = m.Groups[1].Value;
            string plain = type.Contains("Double") || type.Contains("Single") ? "a number"
                : type.Contains("Int") ? "an integer"
                : type.Contains("Boolean") ? "true or false"
                : "a value of the right kind";
            return "as " + plain;
        });
}
