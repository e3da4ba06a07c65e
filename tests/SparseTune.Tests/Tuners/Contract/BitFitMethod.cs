using System.Runtime.CompilerServices;
using SparseTune.Models;
using SparseTune.Tuners;
using TorchSharp.Modules;

namespace SparseTune.Tests.Tuners.Contract;

/// <summary>
/// BitFit (Ben Zaken, Ravfogel and Goldberg, ACL 2022): only the bias terms of the blocks (and the task head) train.
/// Defined and registered here, in the test project, to prove that a method is one folder plus one registry line:
/// it passes the contract test and gets its CLI flag without any change to src/.
/// </summary>
public sealed record BitFitOptions : IMethodOptions
{
    /// <summary>Also train the LayerNorm biases (the paper trains every bias term).</summary>
    public bool NormBiases { get; init; } = true;

    public IReadOnlyList<string> Problems() => [];
}

public sealed class BitFitMethod : MethodDescriptor<BitFitOptions>
{
    public override string Name => "bitfit";
    public override string Summary => "BitFit (Ben Zaken et al. 2022): only bias terms train (test-only method)";
    public override double DefaultLearningRate => 1e-3;
    public override double DemoLearningRate => 1e-2;

    public override IReadOnlyList<MethodFlag> Flags =>
    [
        Flag("--bitfit-norm-biases", "BitFit: also train LayerNorm biases.", o => o.NormBiases, (o, v) => o with { NormBiases = v }),
    ];

    protected override Tuner Create(BitFitOptions options) => new BitFitTuner(options);
}

public sealed class BitFitTuner(BitFitOptions options) : Tuner
{
    List<(string Name, Parameter Parameter)> trainable = [];

    public override string Name => "bitfit";
    public override object Options => options;
    public override bool ModifiesBaseWeights => true;

    /// <summary>What changes are the biases and the head, the trainable tensors themselves: --keep-best copies only those.</summary>
    public override bool StepsChangeBaseWeights => false;

    public override void Attach(TransformerModel model)
    {
        FreezeAll(model);
        var head = ResolveTrainedModules(model);
        trainable = model.named_parameters()
            .Where(p => ModuleSelection.IsUnder(p.name, head) || IsBias(p.name))
            .Select(p => (p.name, p.parameter)).ToList();
        foreach (var (_, p) in trainable) p.requires_grad = true;
    }

    bool IsBias(string name) =>
        name.EndsWith(".bias", StringComparison.Ordinal) && (options.NormBiases || !name.Contains("norm", StringComparison.OrdinalIgnoreCase) && !name.Contains("ln_", StringComparison.Ordinal));

    public override IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() => trainable;
}

static class TestMethodRegistration
{
    /// <summary>The test project's one registry line, run when the test assembly loads (before test discovery).</summary>
    [ModuleInitializer]
    internal static void Register() => MethodRegistry.Register(new BitFitMethod());
}
