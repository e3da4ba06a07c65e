using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Tuners.Sift;

/// <summary>
/// SIFT (Song et al., ICML 2024): train only k = min(⌊x·numel(W)⌋ + 1, numel(W)) components of each targeted matrix
/// (and of its bias), chosen by the gradient of the first training batch(es). Gradients and AdamW state exist only for
/// the k values (and the densely trained exception modules), so their memory scales with x.
/// </summary>
public sealed class SiftTuner(SiftOptions options) : Tuner
{
    readonly List<(string Name, TunableLinear Layer, SiftAdapter Adapter)> targets = [];
    List<(string Name, Parameter Parameter)> dense = [];
    TransformerModel? model;

    public override string Name => "sift";
    public override object Options => options;
    public override bool ModifiesBaseWeights => true;

    /// <summary>Once gradient selection has chosen the indices (random and magnitude choose before the first step).</summary>
    public override bool HasFinalStructure => targets.All(t => !t.Adapter.Selecting);
    public SiftOptions SiftOptions => options;

    /// <summary>The original's GLUE scripts train the classifier ("exception") and leave BERT's pooler frozen; a fresh pooler trains.</summary>
    protected override bool FreezesPretrainedHeadParts => true;

    public IReadOnlyList<(string Name, TunableLinear Layer, SiftAdapter Adapter)> Targets => targets;

    public override void Attach(TransformerModel model)
    {
        var problems = options.Problems();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));
        this.model = model;
        FreezeAll(model);
        foreach (var (name, layer) in ModuleSelection.Select(model, options.TargetModules))
        {
            long biasK = options.FreezeBiases || layer.bias is null ? 0 : options.ComponentsFor(layer.bias.numel());
            var adapter = new SiftAdapter(layer, options.ComponentsFor(layer.weight.numel()), biasK, Group);
            layer.Adapter = adapter;
            targets.Add((name, layer, adapter));
        }
        // The original's "exception" modules, trained densely: the shared modules-trained-in-full option.
        dense = ParametersUnder(model, ResolveTrainedModules(model)).ToList();
        foreach (var (_, p) in dense) p.requires_grad = true;
    }

    /// <summary>
    /// Chooses the indices. Gradient: the first <see cref="SiftOptions.SelectionBatches"/> training micro-batches
    /// choose them (their backward scores instead of training the values), so no batch is used twice; random and
    /// magnitude: now. Needs no batches of its own.
    /// </summary>
    public override void Prepare(TransformerModel model, IEnumerable<Action> backwardOfBatch)
    {
        switch (options.Selection)
        {
            case SiftSelection.Gradient:
                foreach (var t in targets) t.Adapter.BeginSelection(options.SelectionBatches);
                break;
            case SiftSelection.Random:
                foreach (var t in targets)
                {
                    using var scope = NewDisposeScope();
                    t.Adapter.SetIndices(randperm(t.Layer.weight.numel())[..(int)t.Adapter.Components], t.Layer,
                        t.Adapter.BiasComponents > 0 ? randperm(t.Layer.bias!.numel())[..(int)t.Adapter.BiasComponents] : null);
                }
                break;
            case SiftSelection.Magnitude:
                foreach (var t in targets)
                {
                    using var scope = NewDisposeScope();
                    t.Adapter.SetIndices(t.Layer.weight.detach().abs().view(-1).topk((int)t.Adapter.Components).indexes, t.Layer,
                        t.Adapter.BiasComponents > 0 ? t.Layer.bias!.detach().abs().topk((int)t.Adapter.BiasComponents).indexes : null);
                }
                break;
        }
    }

    public override IEnumerable<(string Name, Parameter Parameter)> TrainableParameters()
    {
        foreach (var t in targets)
        {
            yield return (t.Name + ".sift_values", t.Adapter.Values);
            if (t.Adapter.BiasValues is { } b) yield return (t.Name + ".bias.sift_values", b);
        }
        foreach (var d in dense) yield return d;
    }

    public override bool AfterOptimizerStep(TrainingStepContext context)
    {
        foreach (var t in targets) t.Adapter.MergeValues(t.Layer);
        return false;
    }

    /// <summary>A run shorter than the selection batches chooses from the batches it saw.</summary>
    public override void Finish(TransformerModel model)
    {
        foreach (var t in targets) t.Adapter.EndSelection(t.Layer);
    }

    /// <summary>Indices and base values, so --resume keeps the same components (mid-selection: what selection has scored).</summary>
    public override IEnumerable<KeyValuePair<string, Tensor>> ExtraState()
    {
        foreach (var t in targets)
        {
            if (t.Adapter.Selecting)
            {
                var (left, score, biasScore) = t.Adapter.SelectionState;
                yield return new(t.Name + ".selection_batches_left", tensor((long)left));
                if (score is not null) yield return new(t.Name + ".selection_score", score);
                if (biasScore is not null) yield return new(t.Name + ".bias.selection_score", biasScore);
                continue;
            }
            yield return new(t.Name + ".indices", t.Adapter.Indices);
            yield return new(t.Name + ".base_values", t.Adapter.BaseValues);
            if (t.Adapter.BiasComponents > 0)
            {
                yield return new(t.Name + ".bias.indices", t.Adapter.BiasIndices);
                yield return new(t.Name + ".bias.base_values", t.Adapter.BiasBaseValues);
            }
        }
    }

    public override void LoadExtraState(IReadOnlyDictionary<string, Tensor> state)
    {
        foreach (var t in targets)
        {
            if (state.TryGetValue(t.Name + ".selection_batches_left", out var left))
            {
                t.Adapter.ResumeSelection((int)left.item<long>(), state.GetValueOrDefault(t.Name + ".selection_score"), state.GetValueOrDefault(t.Name + ".bias.selection_score"));
                continue;
            }
            if (!state.TryGetValue(t.Name + ".indices", out var indices) || !state.TryGetValue(t.Name + ".base_values", out var baseValues))
                throw new InvalidDataException($"SIFT state has no indices for {t.Name}");
            Tensor? biasIndices = null, biasBase = null;
            if (t.Adapter.BiasComponents > 0
                && (!state.TryGetValue(t.Name + ".bias.indices", out biasIndices) || !state.TryGetValue(t.Name + ".bias.base_values", out biasBase)))
                throw new InvalidDataException($"SIFT state has no bias indices for {t.Name} (was it written with --freeze-biases?)");
            t.Adapter.SetIndices(indices, t.Layer, biasIndices);
            using var _ = no_grad();
            t.Adapter.BaseValues.copy_(baseValues);
            if (biasBase is not null) t.Adapter.BiasBaseValues.copy_(biasBase);
        }
    }

    /// <summary>The sparse delta file: W[indices] += values per targeted matrix (and bias), the densely trained modules whole.</summary>
    public const string DeltaFileName = "sparse_delta.safetensors";

    /// <summary>Writes the sparse delta (<see cref="SparseMatrixFile"/>, mode add) next to the merged model.</summary>
    public override IReadOnlyDictionary<string, string> SaveArtifacts(TransformerModel model, string outputDirectory)
    {
        using var scope = NewDisposeScope();
        var entries = new List<SparseMatrixFile.Entry>();
        foreach (var t in targets)
        {
            entries.Add(new(t.Name + ".weight", t.Adapter.Indices, t.Adapter.DeltaValues(t.Layer), t.Layer.weight.shape));
            if (t.Adapter.BiasComponents > 0) entries.Add(new(t.Name + ".bias", t.Adapter.BiasIndices, t.Adapter.BiasDeltaValues(t.Layer), t.Layer.bias!.shape));
        }
        var denseTensors = dense.Select(d => new KeyValuePair<string, Tensor>(d.Name, d.Parameter.detach())).ToList();
        string path = Path.Combine(outputDirectory, DeltaFileName);
        SparseMatrixFile.Save(path, SparseMatrixMode.Add, Name, entries, denseTensors, MethodArtifacts.HeadMetadata(model));
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
