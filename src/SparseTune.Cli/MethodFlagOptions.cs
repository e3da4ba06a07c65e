using System.CommandLine;
using SparseTune.Tuners;

namespace SparseTune.Cli;

/// <summary>
/// The command-line options of every registered method's <see cref="MethodFlag"/>s: one option per distinct flag
/// name (methods may share one, e.g. --target-modules, each with its own default), bound onto the chosen
/// method's options record. A flag given for a method that does not have it is an error, not silently ignored.
/// </summary>
public sealed class MethodFlagOptions
{
    readonly List<(Option Option, IReadOnlyList<(MethodDescriptor Method, MethodFlag Flag)> Owners)> options = [];

    MethodFlagOptions() { }

    public static MethodFlagOptions Create()
    {
        var result = new MethodFlagOptions();
        var byName = MethodRegistry.All
            .SelectMany(m => m.Flags.Select(f => (Method: m, Flag: f)))
            .GroupBy(x => x.Flag.Name, StringComparer.Ordinal);
        foreach (var group in byName)
        {
            var owners = group.ToList();
            string help = string.Join(" ", owners.Select(o => $"{o.Flag.Help} (default {o.Flag.DefaultText(o.Method.DefaultOptions)})"));
            if (owners.Count > 1) help = $"[{string.Join(", ", owners.Select(o => o.Method.Name))}] {help}";
            Option option = owners.All(o => o.Flag.IsSwitch)
                ? new Option<bool>(group.Key) { Description = help }
                : new Option<string?>(group.Key) { Description = help };
            result.options.Add((option, owners));
        }
        return result;
    }

    public void AddTo(Command command)
    {
        foreach (var (option, _) in options) command.Options.Add(option);
    }

    /// <summary>The chosen method's options: its defaults with every flag the user gave applied. Errors name every misplaced or malformed flag.</summary>
    public IMethodOptions Bind(ParseResult parse, MethodDescriptor method)
    {
        IMethodOptions bound = method.DefaultOptions;
        var problems = new List<string>();
        foreach (var (option, owners) in options)
        {
            if (parse.GetResult(option) is not { Implicit: false } given) continue;
            var flag = owners.FirstOrDefault(o => o.Method.Name == method.Name).Flag;
            if (flag is null)
            {
                problems.Add($"{option.Name} is an option of {string.Join(", ", owners.Select(o => o.Method.Name))}, not of --method {method.Name}");
                continue;
            }
            string text = option is Option<bool> switchOption ? (parse.GetValue(switchOption) ? "true" : "false") : parse.GetValue((Option<string?>)option) ?? "";
            try { bound = flag.Apply(bound, text); }
            catch (FormatException e) { problems.Add(e.Message); }
        }
        if (problems.Count > 0) throw new UsageException(string.Join("; ", problems));
        return bound;
    }
}
