using System.Diagnostics;
using System.Globalization;
using System.Text;
using SparseTune.Build;
using SparseTune.IO;
using SparseTune.Tests.Support;
using Xunit;
using Xunit.Abstractions;

namespace SparseTune.Tests.Packaging;

/// <summary>
/// The SparseTune package as a user gets it: packed from a copy of src/SparseTune, referenced by a fresh console project
/// that does nothing else, restored, built and run. The run must load libtorch, which on Debian 12 works only because the
/// package's buildTransitive/SparseTune.targets patched the build output's libLibTorchSharp.so (README, "TorchSharp on
/// Debian 12"). Offline: the project restores SparseTune from a local feed and every dependency from this machine's
/// global packages folder (a fallback folder of the test's own packages folder, so nothing is added to the shared one).
/// </summary>
public sealed class PackageTests(ITestOutputHelper output) : IDisposable
{
    const string WeakVersion = "GLIBCXX_3.4.32";
    static readonly TimeSpan StepTimeout = TimeSpan.FromMinutes(5);
    readonly string temp = Fixtures.TempDirectory("package");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    [Fact]
    public void LibraryPackage_InAFreshConsoleProject_RestoresBuildsAndRunsAModel()
    {
        string repository = RepositoryRoot();
        string globalPackages = GlobalPackagesFolder(repository);
        // A version no cache can already hold, so the feed's package is the one used.
        string version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        var clock = Stopwatch.StartNew();

        // 1. Pack a copy of the library's sources, so the test never writes into the checkout's bin/ or obj/.
        string sources = Path.Combine(temp, "repo");
        CopySources(repository, sources);
        string feed = Path.Combine(temp, "feed");
        Dotnet(sources, "pack", "src/SparseTune/SparseTune.csproj", "-c", "Release", "-o", feed, $"-p:Version={version}");
        Assert.True(File.Exists(Path.Combine(feed, $"SparseTune.{version}.nupkg")), $"no package in {feed}: {string.Join(", ", Directory.GetFiles(feed))}");
        output.WriteLine($"packed in {clock.Elapsed.TotalSeconds:0.0} s");

        // 2. A console project that only references the package.
        string app = Path.Combine(temp, "app");
        WriteConsoleProject(app, feed, globalPackages, version);
        var environment = new Dictionary<string, string?> { ["NUGET_PACKAGES"] = null };   // would override nuget.config's folder
        string build = Dotnet(app, environment, "build", "-c", "Release");
        output.WriteLine($"built in {clock.Elapsed.TotalSeconds:0.0} s");

        string bin = Path.Combine(app, "bin", "Release", "net10.0");
        if (OperatingSystem.IsLinux())
        {
            // The package's targets patched the output folder's copy and left the shared cache's copy as it was.
            Assert.Contains($"SparseTune: marked {WeakVersion} weak", build);
            var patched = WeakFlag(Path.Combine(bin, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"));
            Assert.Equal([WeakVersion], patched.Found);
            Assert.Empty(patched.NewlyMarked);
            string cached = Path.Combine(globalPackages, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
            if (File.Exists(cached)) Assert.Equal([WeakVersion], WeakFlag(cached).NewlyMarked);
        }

        // 3. Run it on the Hugging Face BERT fixture; its logits must be Hugging Face's.
        string fixture = Fixtures.Model("bert-tiny");
        string run = Dotnet(app, "exec", Path.Combine(bin, "App.dll"), fixture);
        output.WriteLine($"ran in {clock.Elapsed.TotalSeconds:0.0} s:\n{run}");
        string[] lines = run.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Contains("shape 2x3", lines);
        string logitsLine = Assert.Single(lines, l => l.StartsWith("logits ", StringComparison.Ordinal));
        float[] logits = logitsLine["logits ".Length..].Split(' ').Select(v => float.Parse(v, CultureInfo.InvariantCulture)).ToArray();
        float[] expected = SafeTensors.Load(Path.Combine(fixture, "reference.safetensors"))["logits"].data<float>().ToArray();
        Assert.Equal(expected.Length, logits.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(logits[i] - expected[i]) <= 1e-4, $"logit {i}: {logits[i]} from the package, {expected[i]} from Hugging Face");
    }

    static ElfWeakVersionPatcher.PatchResult WeakFlag(string library) =>
        ElfWeakVersionPatcher.MarkWeak(File.ReadAllBytes(library), new HashSet<string> { WeakVersion }, library);

    /// <summary>src/SparseTune without bin/ and obj/, and the repository's Directory.Build files that its build imports.</summary>
    static void CopySources(string repository, string destination)
    {
        string library = Path.Combine(repository, "src", "SparseTune");
        foreach (string file in Directory.EnumerateFiles(library, "*", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(library, file);
            string top = relative.Split(Path.DirectorySeparatorChar)[0];
            if (top is "bin" or "obj") continue;
            string target = Path.Combine(destination, "src", "SparseTune", relative);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        foreach (string name in new[] { "Directory.Build.props", "Directory.Build.targets" })
            File.Copy(Path.Combine(repository, name), Path.Combine(destination, name));
    }

    /// <summary>
    /// The project a user would write. Package sources: the local feed plus those this machine already has (no clear);
    /// packages folder: the test's own, falling back to the machine's global folder where TorchSharp and the other
    /// dependencies already are (the test project's own restore put them there).
    /// </summary>
    static void WriteConsoleProject(string app, string feed, string globalPackages, string version)
    {
        Directory.CreateDirectory(app);
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <config>
                <add key="globalPackagesFolder" value="{Path.Combine(Path.GetDirectoryName(app)!, "packages")}" />
              </config>
              <fallbackPackageFolders>
                <add key="machine-packages" value="{globalPackages}" />
              </fallbackPackageFolders>
              <packageSources>
                <add key="sparsetune-test-feed" value="{feed}" />
              </packageSources>
            </configuration>
            """);
        File.WriteAllText(Path.Combine(app, "App.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="SparseTune" Version="[{version}]" />
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            using System.Globalization;
            using SparseTune.IO;
            using SparseTune.Models;
            using static TorchSharp.torch;

            // args[0]: a checkpoint folder whose reference.safetensors holds input_ids and attention_mask.
            var inputs = SafeTensors.Load(Path.Combine(args[0], "reference.safetensors"));
            using TransformerModel model = PretrainedModel.Load(args[0]);
            model.eval();
            using var noGrad = no_grad();
            using ModelOutput output = model.Forward(inputs["input_ids"], inputs["attention_mask"]);
            Console.WriteLine("shape " + string.Join("x", output.Logits.shape));
            Console.WriteLine("logits " + string.Join(" ", output.Logits.data<float>().ToArray().Select(v => v.ToString("R", CultureInfo.InvariantCulture))));
            """);
    }

    /// <summary>The checkout: the folder above the test's output that holds SparseTune.slnx.</summary>
    static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "SparseTune.slnx"))) return dir.FullName;
        throw new DirectoryNotFoundException($"no SparseTune.slnx above {AppContext.BaseDirectory}");
    }

    /// <summary>Where restores on this machine keep packages (NUGET_PACKAGES, NuGet.Config or ~/.nuget/packages).</summary>
    string GlobalPackagesFolder(string repository)
    {
        string listed = Dotnet(repository, "nuget", "locals", "global-packages", "--list");
        const string prefix = "global-packages:";
        string line = listed.Split('\n').Select(l => l.Trim()).Single(l => l.StartsWith(prefix, StringComparison.Ordinal));
        string folder = line[prefix.Length..].Trim();
        Assert.True(Directory.Exists(folder), $"global packages folder {folder} not found");
        return folder;
    }

    string Dotnet(string workingDirectory, params string[] arguments) => Dotnet(workingDirectory, new Dictionary<string, string?>(), arguments);

    /// <summary>
    /// Runs the dotnet CLI and returns stdout and stderr; fails the test on a non-zero exit or after
    /// <see cref="StepTimeout"/>. Builds run without build servers (no MSBuild node or compiler server outlives the
    /// step, so none holds the output pipes or the machine's cores afterwards) and without the MSBuild variables that
    /// `dotnet test` leaves in the test host's environment.
    /// </summary>
    string Dotnet(string workingDirectory, IReadOnlyDictionary<string, string?> environment, params string[] arguments)
    {
        string dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { } host && File.Exists(host) ? host : "dotnet";
        var start = new ProcessStartInfo(dotnet) { WorkingDirectory = workingDirectory };
        foreach (string argument in arguments) start.ArgumentList.Add(argument);
        if (arguments[0] is "pack" or "build")
            foreach (string argument in new[] { "--disable-build-servers", "-nologo" }) start.ArgumentList.Add(argument);
        foreach (string key in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(key);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        foreach (var (key, value) in environment)
            if (value is null) start.Environment.Remove(key);
            else start.Environment[key] = value;

        ChildProcessResult run;
        try { run = ChildProcess.Run(start, StepTimeout); }
        catch (TimeoutException timedOut) { Assert.Fail($"dotnet {string.Join(' ', arguments)} did not finish in {StepTimeout.TotalSeconds} s:\n{timedOut.Message}"); throw; }
        output.WriteLine($"dotnet {string.Join(' ', arguments.Take(2))}: exit {run.ExitCode} after {run.Elapsed.TotalSeconds:0.0} s");
        Assert.True(run.ExitCode == 0, $"dotnet {string.Join(' ', arguments)} in {workingDirectory} exited {run.ExitCode}:\n{run.Text}");
        return run.Text;
    }
}
