using SparseTune.Tuners.Dsee;
using SparseTune.Tuners.Full;
using SparseTune.Tuners.LightPeft;
using SparseTune.Tuners.Lora;
using SparseTune.Tuners.Pst;
using SparseTune.Tuners.Sift;

namespace SparseTune.Tuners;

/// <summary>
/// The --method names: one line per method below. Everything else about a method (options, flags, learning
/// rates, bench arms, artifacts) is declared by its <see cref="MethodDescriptor"/> in its own folder.
/// A program that adds a method of its own calls <see cref="Register"/>.
/// </summary>
public static class MethodRegistry
{
    static readonly List<MethodDescriptor> methods =
    [
        new FullMethod(),
        new LoraMethod(),
        new SiftMethod(),
        new PstMethod(),
        new DseeMethod(),
        new LightPeftMethod(),
    ];

    static readonly Lock gate = new();

    /// <summary>Every registered method, in registration order.</summary>
    public static IReadOnlyList<MethodDescriptor> All
    {
        get { lock (gate) return methods.ToList(); }
    }

    public static IReadOnlyList<string> Names => All.Select(m => m.Name).ToList();

    /// <summary>The method named <paramref name="name"/>; an unknown name is an error listing the available ones.</summary>
    public static MethodDescriptor Get(string name) =>
        Find(name) ?? throw new ArgumentException($"unknown --method '{name}' (available: {string.Join(", ", Names)})");

    public static MethodDescriptor? Find(string name) => All.FirstOrDefault(m => m.Name == name);

    /// <summary>Adds a method; registering the same descriptor type again is a no-op, another method under a taken name an error.</summary>
    public static void Register(MethodDescriptor method)
    {
        lock (gate)
        {
            if (methods.FirstOrDefault(m => m.Name == method.Name) is { } existing)
            {
                if (existing.GetType() == method.GetType()) return;
                throw new ArgumentException($"a method named '{method.Name}' is already registered ({existing.GetType().Name})");
            }
            methods.Add(method);
        }
    }

    /// <summary>Builds the tuner of <paramref name="name"/> (default options when <paramref name="options"/> is null).</summary>
    public static Tuner CreateTuner(string name, IMethodOptions? options = null, TunerContext? context = null) =>
        Get(name).CreateTuner(options, context);

    /// <summary>The distinct artifact readers of every method (methods may share one file format).</summary>
    public static IReadOnlyList<IArtifactReader> ArtifactReaders =>
        All.Select(m => m.ArtifactReader).OfType<IArtifactReader>().Distinct().ToList();
}
