using SparseTune.Models;
using TorchSharp.Modules;

namespace SparseTune.Tuners.Full;

/// <summary>Full fine-tuning has no options of its own.</summary>
public sealed record FullOptions : IMethodOptions
{
    public IReadOnlyList<string> Problems() => [];
}

/// <summary>Full fine-tuning, the baseline every method is compared with: every parameter trains.</summary>
public sealed class FullMethod : MethodDescriptor<FullOptions>
{
    public override string Name => "full";
    public override string Summary => "full fine-tuning: every parameter trains (the baseline)";
    public override double DefaultLearningRate => 5e-5;
    public override double DemoLearningRate => 1e-3;

    protected override Tuner Create(FullOptions options) => new FullFineTuner();
}

/// <summary>Every parameter trains; the run saves the whole model.</summary>
public sealed class FullFineTuner : Tuner
{
    TransformerModel? model;
    public override string Name => "full";
    public override object Options => new FullOptions();
    public override bool ModifiesBaseWeights => true;

    public override void Attach(TransformerModel model)
    {
        this.model = model;
        foreach (var p in model.parameters()) p.requires_grad = true;
    }

    public override IEnumerable<(string Name, Parameter Parameter)> TrainableParameters() =>
        model?.named_parameters().Select(t => (t.name, t.parameter)) ?? throw new InvalidOperationException("Attach first");
}
