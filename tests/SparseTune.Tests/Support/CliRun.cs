using SparseTune.Cli;
using Xunit;
using Xunit.Abstractions;

namespace SparseTune.Tests.Support;

/// <summary>What an in-process run of the sparsetune command printed.</summary>
public sealed record CliResult(int ExitCode, string Out, string Err)
{
    public string[] ErrLines => Err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToArray();
}

/// <summary>Runs the sparsetune command in-process with stdout and stderr captured (<see cref="SparseTuneCli.Run"/>).</summary>
public static class CliRun
{
    public static CliResult Invoke(ITestOutputHelper? log, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = SparseTuneCli.Run(args, stdout, stderr);
        var result = new CliResult(code, stdout.ToString(), stderr.ToString());
        log?.WriteLine($"$ sparsetune {string.Join(' ', args)}  → exit {code}");
        if (result.Out.Length > 0) log?.WriteLine("stdout: " + result.Out.TrimEnd());
        if (result.Err.Length > 0) log?.WriteLine("stderr: " + result.Err.TrimEnd());
        return result;
    }

    /// <summary>Exactly one stderr line, starting "error:", with no stack trace; returns it.</summary>
    public static string AssertOneLineError(CliResult result)
    {
        Assert.NotEqual(0, result.ExitCode);
        string[] lines = result.ErrLines;
        Assert.True(lines.Length == 1, $"expected one stderr line, got {lines.Length}:\n{result.Err}");
        Assert.StartsWith("error:", lines[0]);
        Assert.DoesNotContain("   at ", result.Err);
        return lines[0];
    }
}
