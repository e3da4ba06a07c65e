using SparseTune.Models;

namespace SparseTune.Tuners;

/// <summary>A method's options record. It validates itself; only the chosen method's record is validated.</summary>
public interface IMethodOptions
{
    /// <summary>Every problem with these options, as CLI-ready sentences (empty when valid).</summary>
    IReadOnlyList<string> Problems();
}

/// <summary>
/// What every method receives besides its own options: the options that apply to every method, and where the
/// base model came from. Set by <see cref="MethodDescriptor.CreateTuner"/>.
/// </summary>
public sealed record TunerContext
{
    public static readonly TunerContext Default = new();

    /// <summary>
    /// Modules trained in full beside the method's own tensors (PEFT's modules_to_save), matched as PEFT does
    /// (equal, or a suffix after "."). Null: the task head for classification, nothing for a language model.
    /// </summary>
    public IReadOnlyList<string>? TrainedModules { get; init; }

    /// <summary>The base model folder (LoRA records it as base_model_name_or_path).</summary>
    public string? BaseModelPath { get; init; }
}

/// <summary>The size of the model an accuracy comparison runs on, for methods that match their budget to it.</summary>
public sealed record AccuracyBudget(long BlockParameters, int HiddenSize, int Layers);

/// <summary>One configuration of a method in `sparsetune bench accuracy`.</summary>
public sealed record AccuracyArm(string Label, string Method, IMethodOptions Options, double? LearningRate = null);

/// <summary>
/// Everything SparseTune needs to know about one method, declared in the method's own folder: its name, options
/// record (with validation), command-line flags, learning rates, bench arms and artifact reader. The registry
/// (<see cref="MethodRegistry"/>) holds one line per method; nothing outside the method's folder names it.
/// </summary>
public abstract class MethodDescriptor
{
    /// <summary>The --method name.</summary>
    public abstract string Name { get; }

    /// <summary>One line for --help: the method and its paper.</summary>
    public abstract string Summary { get; }

    /// <summary>The options a run gets when no flag is given.</summary>
    public abstract IMethodOptions DefaultOptions { get; }

    /// <summary>The options record's type (a run's options must be of this type).</summary>
    public abstract Type OptionsType { get; }

    /// <summary>--lr when not given, for a real pretrained model.</summary>
    public abstract double DefaultLearningRate { get; }

    /// <summary>--lr on the bundled demo (a tiny model pretrained from scratch, which wants larger steps).</summary>
    public abstract double DemoLearningRate { get; }

    /// <summary>The method's own command-line flags, bound onto its options record.</summary>
    public virtual IReadOnlyList<MethodFlag> Flags => [];

    /// <summary>
    /// Training options the method's original scripts used for this kind of task (weight decay, clipping, Adam ε,
    /// warm-up, label smoothing); the CLI applies each where the user gave no flag. Default: none, SparseTune's common
    /// defaults (transformers' Trainer).
    /// </summary>
    public virtual TrainingDefaults DefaultTraining(TaskFamily task) => TrainingDefaults.None;

    /// <summary>
    /// The options `sparsetune bench` times the method with; default: <see cref="DefaultOptions"/>. A method whose run
    /// has stages (Light-PEFT) sizes them here so that every stage gets timed steps in a short benchmark.
    /// </summary>
    public virtual IMethodOptions BenchOptions => DefaultOptions;

    /// <summary>How the method's output files are recognised and merged into a base model; null: it writes none.</summary>
    public virtual IArtifactReader? ArtifactReader => null;

    /// <summary>The method's arms in `sparsetune bench accuracy`; default: one arm with the default options.</summary>
    public virtual IReadOnlyList<AccuracyArm> AccuracyArms(AccuracyBudget budget) => [new(Name, Name, DefaultOptions)];

    /// <summary>Validates <paramref name="options"/> and builds the method's tuner.</summary>
    public Tuner CreateTuner(IMethodOptions? options = null, TunerContext? context = null)
    {
        options ??= DefaultOptions;
        var problems = Problems(options);
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems), nameof(options));
        Tuner tuner = Create(options);
        tuner.Context = context ?? TunerContext.Default;
        return tuner;
    }

    /// <summary>The options' own problems, prefixed with the method name; a record of the wrong type is one problem.</summary>
    public IReadOnlyList<string> Problems(IMethodOptions options) =>
        OptionsType.IsInstanceOfType(options)
            ? options.Problems().Select(p => $"{Name}: {p}").ToList()
            : [$"--method {Name} takes {OptionsType.Name}, not {options.GetType().Name}"];

    protected abstract Tuner Create(IMethodOptions options);
}

/// <summary>A method descriptor over its options record type; methods derive from this.</summary>
public abstract class MethodDescriptor<TOptions> : MethodDescriptor where TOptions : class, IMethodOptions, new()
{
    public override IMethodOptions DefaultOptions => new TOptions();
    public override Type OptionsType => typeof(TOptions);

    protected sealed override Tuner Create(IMethodOptions options) => Create((TOptions)options);

    protected abstract Tuner Create(TOptions options);

    /// <summary>A flag that reads and writes one property of the options record.</summary>
    protected static MethodFlag Flag<TValue>(string name, string help, Func<TOptions, TValue> get, Func<TOptions, TValue, TOptions> set, string? defaultText = null) =>
        new MethodFlag<TOptions, TValue>(name, help, get, set, defaultText);
}
