using System.CommandLine;
using Spectre.Console;

namespace SparseTune.Cli;

/// <summary>Options and error handling shared by every command.</summary>
public static class CliSupport
{
    public static readonly Option<bool> Verbose = new("--verbose", "-v")
    {
        Description = "Print stack traces on errors.",
        Recursive = true,
    };

    /// <summary>
    /// Runs a command body: any exception becomes "error: message" on one line and exit code 1
    /// (2 for invalid arguments), with the stack trace only under --verbose.
    /// </summary>
    public static int Run(ParseResult parse, Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e)
        {
            bool verbose = parse.GetValue(Verbose);
            Exception shown = e is AggregateException { InnerExceptions.Count: 1 } a ? a.InnerExceptions[0] : e;
            shown = shown is TypeInitializationException { InnerException: { } inner } ? inner : shown;
            string message = shown.Message;
            // libtorch errors append "Exception raised from ... (most recent call first):" and a C++ stack trace;
            // that belongs to --verbose, not to the one-line error.
            int native = message.IndexOf("Exception raised from ", StringComparison.Ordinal);
            if (native > 0) message = message[..native];
            message = message.ReplaceLineEndings(" ").Trim();
            Console.Error.WriteLine($"error: {message}");
            if (verbose) Console.Error.WriteLine(e.ToString());
            int code = shown is ArgumentException or UsageException ? 2 : 1;
            // Under mpirun the other ranks would wait for this one in their next collective: end the whole job.
            Console.Error.Flush();
            SparseTune.Distributed.MpiProcessGroup.AbortAll(code);
            return code;
        }
    }

    /// <summary>--device for a command that runs a model (see <see cref="SparseTune.Nn.ComputeDevice"/>).</summary>
    public static Option<string> DeviceOption() => new("--device")
    {
        Description = "Where the model runs: cpu, cuda (needs a CUDA build, see README) or auto (CUDA when present, else CPU).",
        DefaultValueFactory = _ => "cpu",
    };

    /// <summary>--precision for a command that runs a model (see <see cref="SparseTune.Nn.Precision"/>).</summary>
    public static Option<string> PrecisionOption() => new("--precision")
    {
        Description = "fp32, or bf16 mixed precision (matrix products in bfloat16; weights, norms, loss and optimizer in float32), or auto (bf16 where this CPU's bf16 matrix products are natively faster).",
        DefaultValueFactory = _ => "fp32",
    };

    /// <summary>The precision an option names, "auto" decided by measuring (once per process).</summary>
    public static SparseTune.Nn.Precision ParsePrecision(string? text) =>
        SparseTune.Nn.MixedPrecision.Parse(text ?? "fp32");

    /// <summary>Checks a required folder exists before any work starts.</summary>
    public static string ExistingDirectory(string? path, string option)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new UsageException($"{option} is required");
        if (!Directory.Exists(path)) throw new UsageException($"{option}: folder not found: {path}");
        return path;
    }

    public static string ExistingFile(string? path, string option)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new UsageException($"{option} is required");
        if (!File.Exists(path)) throw new UsageException($"{option}: file not found: {path}");
        return path;
    }

    public static string HumanBytes(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = bytes;
        int u = 0;
        while (v >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return $"{v:0.##} {units[u]}";
    }

    public static string HumanCount(long n) => n switch
    {
        >= 1_000_000_000 => $"{n / 1e9:0.##}B",
        >= 1_000_000 => $"{n / 1e6:0.##}M",
        >= 1_000 => $"{n / 1e3:0.##}K",
        _ => n.ToString(),
    };

    /// <summary>Where commands print tables and progress; <see cref="SparseTuneCli.Run"/> swaps it while capturing output.</summary>
    public static IAnsiConsole Out { get; internal set; } = CreateConsole();

    /// <summary>
    /// The terminal console; when output goes to a file or pipe, a wide fixed width so log lines, tables and
    /// paths are not wrapped at Spectre's default 80 columns.
    /// </summary>
    static IAnsiConsole CreateConsole()
    {
        var console = AnsiConsole.Console;
        if (Console.IsOutputRedirected) console.Profile.Width = 240;
        return console;
    }
}

/// <summary>Invalid command-line input (exit code 2).</summary>
public sealed class UsageException(string message) : Exception(message);
