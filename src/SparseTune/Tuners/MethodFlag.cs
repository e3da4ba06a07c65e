using System.Globalization;

namespace SparseTune.Tuners;

/// <summary>
/// One command-line flag of a method (e.g. --lora-rank), bound onto a property of its options record. The CLI
/// builds its options from these, so a method's flags live in the method's folder. Values arrive as text and
/// are parsed here: integers, numbers, true/false, enum names, and comma-separated lists of names.
/// </summary>
public abstract class MethodFlag(string name, string help)
{
    /// <summary>The flag as typed, with the leading dashes (e.g. "--lora-rank").</summary>
    public string Name { get; } = name.StartsWith("--", StringComparison.Ordinal) ? name : throw new ArgumentException($"flag names start with '--': {name}", nameof(name));

    public string Help { get; } = help;

    /// <summary>True for an on/off switch that takes no value.</summary>
    public abstract bool IsSwitch { get; }

    /// <summary>What the help shows as the default, read from the default options.</summary>
    public abstract string DefaultText(IMethodOptions defaults);

    /// <summary>Returns <paramref name="options"/> with this flag's property set from <paramref name="text"/>.</summary>
    /// <exception cref="FormatException">The text is not a value of the flag's type; the message names the flag.</exception>
    public abstract IMethodOptions Apply(IMethodOptions options, string text);
}

/// <summary>A flag over a <typeparamref name="TValue"/> property of <typeparamref name="TOptions"/>.</summary>
public sealed class MethodFlag<TOptions, TValue>(string name, string help, Func<TOptions, TValue> get, Func<TOptions, TValue, TOptions> set, string? defaultText)
    : MethodFlag(name, help) where TOptions : IMethodOptions
{
    public override bool IsSwitch => typeof(TValue) == typeof(bool);

    public override string DefaultText(IMethodOptions defaults) => defaultText ?? Format(get((TOptions)defaults));

    public override IMethodOptions Apply(IMethodOptions options, string text) => set((TOptions)options, Parse(text));

    TValue Parse(string text)
    {
        Type type = Nullable.GetUnderlyingType(typeof(TValue)) ?? typeof(TValue);
        string trimmed = text.Trim();
        object? value;
        if (type == typeof(int))
            value = int.TryParse(trimmed, NumberStyles.Integer, CultureInfo.InvariantCulture, out int i) ? i : throw Bad("an integer");
        else if (type == typeof(double))
            value = double.TryParse(trimmed, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : throw Bad("a number");
        else if (type == typeof(bool))
            value = bool.TryParse(trimmed, out bool b) ? b : throw Bad("true or false");
        else if (type.IsEnum)
            value = Enum.GetNames(type).FirstOrDefault(n => string.Equals(n, trimmed, StringComparison.OrdinalIgnoreCase)) is { } match
                ? Enum.Parse(type, match)
                : throw Bad("one of " + string.Join(", ", Enum.GetNames(type).Select(n => n.ToLowerInvariant())));
        else if (type == typeof(string))
            value = trimmed;
        else if (type.IsAssignableFrom(typeof(List<string>)))
            value = trimmed.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        else
            throw new NotSupportedException($"{Name}: flags of type {type.Name} are not supported");
        return (TValue)value!;

        FormatException Bad(string expected) => new($"{Name}: '{text}' is not {expected}");
    }

    static string Format(TValue value) => value switch
    {
        null => "none",
        double d => d.ToString("G", CultureInfo.InvariantCulture),
        Enum e => e.ToString().ToLowerInvariant(),
        IEnumerable<string> list => string.Join(",", list),
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "",
    };
}
