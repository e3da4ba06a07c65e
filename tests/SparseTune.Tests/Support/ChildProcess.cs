using System.Diagnostics;
using System.Text;

namespace SparseTune.Tests.Support;

/// <summary>What a child process printed (stdout and stderr interleaved), how it exited and how long it ran.</summary>
public sealed record ChildProcessResult(int ExitCode, string Text, TimeSpan Elapsed);

/// <summary>Runs a prepared child process to its end, collecting everything it prints; one that runs past its time limit is killed.</summary>
public static class ChildProcess
{
    /// <exception cref="TimeoutException">The process ran past <paramref name="within"/> (it and its children are killed; the message holds its output).</exception>
    public static ChildProcessResult Run(ProcessStartInfo start, TimeSpan within)
    {
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        start.UseShellExecute = false;
        var text = new StringBuilder();
        using var process = new Process { StartInfo = start };
        DataReceivedEventHandler append = (_, e) => { if (e.Data is not null) lock (text) text.AppendLine(e.Data); };
        process.OutputDataReceived += append;
        process.ErrorDataReceived += append;
        var clock = Stopwatch.StartNew();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(within))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            lock (text) throw new TimeoutException($"{start.FileName} {string.Join(' ', start.ArgumentList)} ran past {within.TotalSeconds:0} s:\n{text}");
        }
        process.WaitForExit();   // the rest of the output
        lock (text) return new ChildProcessResult(process.ExitCode, text.ToString(), clock.Elapsed);
    }
}
