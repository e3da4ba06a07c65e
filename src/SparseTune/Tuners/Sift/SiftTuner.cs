using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Tuners.Sift;

/// <summary>
/// SIFT (Song et al., ICML 2024): train only k = ⌈x·numel(W)⌉ components of each targeted matrix, chosen by the
/// gradient of the first batch(es). Gradients and AdamW state exist only for the k values (and the densely
/// trained exception modules), so their memory scales with x.
/// </summary>
public sealed class SiftTuner(SiftOptions options) : Tuner
{
    readonly List<(string Name, TunableLinear Layer, SiftAdapter Adapter)> targets = [];
    List<(string Name, Parameter Parameter)> dense = [];
    TransformerModel? model;

    public override string Name => "sift";
    public override object Options => options;
    public override bool ModifiesBaseWeights => true;
    public SiftOptions SiftOptions => options;

    public IReadOnlyList<(string Name, TunableLinear Layer, SiftAdapter Adapter)> Targets => targets;

    public override void Attach(TransformerModel model)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));
        this.model = model;
        FreezeAll(model);
        foreach (var (name, layer) in ModuleSelection.Select(model, options.TargetModules))
        {
            var adapter = new SiftAdapter(layer, options.ComponentsFor(layer.weight.numel()), options.SelectionBatches > 1);
            layer.Adapter = adapter;
            targets.Add((name, layer, adapter));
        }
        // The original's "exception" modules, trained densely: the shared modules-trained-in-full option.
        dense = ParametersUnder(model, ResolveTrainedModules(model)).ToList();
        foreach (var (_, p) in dense) p.requires_grad = true;
    }

    /// <summary>Chooses the indices: gradient (backward passes over the first batches), random or magnitude.</summary>
    public override void Prepare(TransformerModel model, IEnumerable<Action> backwardOfBatch)
    {
        switch (options.Selection)
        {
            case SiftSelection.Gradient:
                foreach (var t in targets) t.Adapter.BeginSelection();
                bool wasTraining = model.training;
                model.train();
                int used = 0;
                foreach (var backward in backwardOfBatch.Take(options.SelectionBatches))
                {
                    backward();
                    used++;
                }
                if (used == 0) throw new InvalidOperationException("SIFT gradient selection needs at least one training batch");
                foreach (var t in targets) t.Adapter.EndSelection(t.Layer);
                // The selection batch's gradients are for choosing only (as in the original): drop them.
                foreach (var (_, p) in dense) p.grad = null;
                foreach (var t in targets) t.Adapter.Values.grad = null;
                if (!wasTraining) model.eval();
                break;
            case SiftSelection.Random:
                foreach (var t in targets)
                {
                    using var scope = NewDisposeScope();
                    t.Adapter.SetIndices(randperm(t.Layer.weight.numel())[..(int)t.Adapter.Components], t.Layer);
                }
                break;
            case SiftSelection.Magnitude:
                foreach (var t in targets)
                {
                    using var scope = NewDisposeScope();
                    t.Adapter.SetIndices(t.Layer.weight.detach().abs().view(-1).topk((int)t.Adapter.Components).indexes, t.Layer);
                }
                break;
        }
    }

    public override IEnumerable<(string Name, Parameter Parameter)> TrainableParameters()
    {
        foreach (var t in targets) yield return (t.Name + ".sift_values", t.Adapter.Values);
        foreach (var d in dense) yield return d;
    }

    public override bool AfterOptimizerStep(TrainingStepContext context)
    {
        foreach (var t in targets) t.Adapter.MergeValues(t.Layer);
        return false;
    }

    /// <summary>Indices and base values, so --resume keeps the same components.</summary>
    public override IEnumerable<KeyValuePair<string, Tensor>> ExtraState()
    {
        foreach (var t in targets)
        {
            yield return new(t.Name + ".indices", t.Adapter.Indices);
            yield return new(t.Name + ".base_values", t.Adapter.BaseValues);
        }
    }

    public override void LoadExtraState(IReadOnlyDictionary<string, Tensor> state)
    {
        foreach (var t in targets)
        {
            if (!state.TryGetValue(t.Name + ".indices", out var indices) || !state.TryGetValue(t.Name + ".base_values", out var baseValues))
                throw new InvalidDataException($"SIFT state has no indices for {t.Name}");
            t.Adapter.SetIndices(indices, t.Layer);
            using var _ = no_grad();
            t.Adapter.BaseValues.copy_(baseValues);
        }
    }

    /// <summary>The sparse delta file: W[indices] += values per targeted matrix, the densely trained modules whole.</summary>
    public const string DeltaFileName = "sparse_delta.safetensors";

    /// <summary>Writes the sparse delta (<see cref="SparseMatrixFile"/>, mode add) next to the merged model.</summary>
    public override IReadOnlyDictionary<string, string> SaveArtifacts(TransformerModel model, string outputDirectory)
    {
        using var scope = NewDisposeScope();
        var entries = targets.Select(t => new SparseMatrixFile.Entry(t.Name + ".weight", t.Adapter.Indices, t.Adapter.DeltaValues(t.Layer), t.Layer.weight.shape)).ToList();
        var denseTensors = dense.Select(d => new KeyValuePair<string, Tensor>(d.Name, d.Parameter.detach())).ToList();
        string path = Path.Combine(outputDirectory, DeltaFileName);
        SparseMatrixFile.Save(path, SparseMatrixMode.Add, Name, entries, denseTensors, model.Config.Id2Label);
        return new Dictionary<string, string> { ["sparse_delta"] = path };
    }

    /// <summary>The sparse values are merged into W after every step: only the adapters need to go.</summary>
    public override void MergeIntoModel(TransformerModel model) => DetachAdapters();

    public string Summary()
    {
        long trainable = TrainableParameters().Sum(p => p.Parameter.numel());
        long all = model?.ParameterCount() ?? 0;
        return $"trainable params: {trainable:N0} || all params: {all:N0} || trainable%: {100.0 * trainable / Math.Max(1, all):0.0000}";
    }

    void DetachAdapters()
    {
        foreach (var t in targets)
        {
            if (ReferenceEquals(t.Layer.Adapter, t.Adapter)) t.Layer.Adapter = null;
            t.Adapter.Dispose();
        }
        targets.Clear();
    }

    public override void Dispose()
    {
        DetachAdapters();
        base.Dispose();
    }
}
