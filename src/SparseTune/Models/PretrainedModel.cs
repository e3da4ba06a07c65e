using System.Text.RegularExpressions;
using SparseTune.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Models;

/// <summary>A checkpoint whose keys or shapes do not fit the model built from its config.</summary>
public sealed class CheckpointMismatchException(string message) : Exception(message);

/// <summary>What loading did beyond the strict one-to-one table: head parameters newly initialised, file keys dropped.</summary>
public sealed record LoadReport(IReadOnlyList<string> NewlyInitialised, IReadOnlyList<string> DroppedKeys);

/// <summary>Builds models from Hugging Face folders and writes them back under Hugging Face names.</summary>
public static class PretrainedModel
{
    /// <summary>What is wrong with a --model folder before anything is loaded (missing, or without config.json); null: nothing.</summary>
    public static string? FolderProblem(string directory) =>
        !Directory.Exists(directory) ? $"--model: folder not found: {directory}"
        : !File.Exists(Path.Combine(directory, "config.json")) ? $"--model: {directory} has no config.json"
        : null;

    /// <summary>The head a checkpoint was saved with, read from config.architectures.</summary>
    public static ModelHead HeadOf(ModelConfig config)
    {
        string arch = config.Architectures?.FirstOrDefault() ?? "";
        if (arch.EndsWith("ForSequenceClassification", StringComparison.Ordinal)) return ModelHead.SequenceClassification;
        if (arch.EndsWith("ForQuestionAnswering", StringComparison.Ordinal)) return ModelHead.QuestionAnswering;
        if (arch.EndsWith("ForMultipleChoice", StringComparison.Ordinal)) return ModelHead.MultipleChoice;
        if (arch.EndsWith("ForMaskedLM", StringComparison.Ordinal) || arch.EndsWith("ForPreTraining", StringComparison.Ordinal)) return ModelHead.MaskedLM;
        if (arch.Length == 0 && config is BertConfig) return ModelHead.MaskedLM;
        return config is BertConfig && !arch.EndsWith("LMHeadModel", StringComparison.Ordinal) && !arch.EndsWith("ForCausalLM", StringComparison.Ordinal)
            ? ModelHead.MaskedLM
            : ModelHead.CausalLM;
    }

    /// <summary>The architectures entry Hugging Face uses for a family and head.</summary>
    public static string ArchitectureName(ModelConfig config, ModelHead head)
    {
        string family = config.ModelType switch
        {
            "gpt2" => "GPT2",
            "bert" => "Bert",
            "roberta" => "Roberta",
            "llama" => "Llama",
            "mistral" => "Mistral",
            "qwen2" => "Qwen2",
            _ => throw new ModelConfigException($"unsupported model_type '{config.ModelType}'"),
        };
        return head switch
        {
            ModelHead.CausalLM => config is Gpt2Config ? "GPT2LMHeadModel" : family + "ForCausalLM",
            ModelHead.SequenceClassification => family + "ForSequenceClassification",
            ModelHead.QuestionAnswering => family + "ForQuestionAnswering",
            ModelHead.MultipleChoice => family + "ForMultipleChoice",
            _ => family + "ForMaskedLM",
        };
    }

    /// <summary>A randomly initialised model of the config's family with the given head.</summary>
    public static TransformerModel Create(ModelConfig config, ModelHead head) => config switch
    {
        Gpt2Config c => new Gpt2Transformer(c, head),
        BertConfig c => new BertTransformer(c, head),
        LlamaConfig c => new LlamaTransformer(c, head),
        _ => throw new ModelConfigException($"unsupported model_type '{config.ModelType}'"),
    };

    /// <summary>
    /// Loads a Hugging Face folder. With <paramref name="head"/> different from the checkpoint's own, the new
    /// head is initialised fresh (and reported); <paramref name="labels"/> sets the classes of a new
    /// classification head. Pruning recorded in config.json (pruned_heads, sparsetune_pruned_heads,
    /// sparsetune_intermediate_sizes) is applied to the model's shapes when it is built, before any weight is
    /// copied, so the strict shape checks compare against the pruned shapes.
    /// </summary>
    public static TransformerModel Load(string directory, ModelHead? head = null, IReadOnlyList<string>? labels = null)
        => Load(directory, head, labels, out _);

    public static TransformerModel Load(string directory, ModelHead? head, IReadOnlyList<string>? labels, out LoadReport report)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"model folder not found: {directory}");
        ModelConfig config = ModelConfig.Load(directory);
        ModelHead fileHead = HeadOf(config);
        ModelHead wanted = head ?? fileHead;
        if (labels is not null)
            config = config with { Id2Label = labels.Select((l, i) => (l, i)).ToDictionary(p => p.i.ToString(), p => p.l) };
        if (wanted == ModelHead.SequenceClassification && config.NumLabels == 0)
            throw new ModelConfigException($"{directory}: a classification head needs labels (config.json has no id2label)");
        config = config with { Architectures = [ArchitectureName(config, wanted)] };

        using var checkpoint = SafeTensorsCheckpoint.Open(directory);
        // A dimension in config.json that does not fit the checkpoint (n_inner 10⁹) would try to allocate the wrong model
        // before any shape check: compare sizes first, from the headers alone.
        long stored = checkpoint.Names.Sum(n => checkpoint.Info(n).Shape.Aggregate(1L, (a, b) => a * b));
        long described = config.EstimatedParameters();
        if (described > 4 * stored + 10_000_000)
            throw new ModelConfigException($"{directory}: config.json describes a model of about {described:N0} parameters but the checkpoint holds {stored:N0}: a size in config.json does not match the weights");
        TransformerModel model = Create(config, wanted);
        try
        {
            report = LoadWeights(model, checkpoint, directory, allowNewHead: wanted != fileHead || labels is not null);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Copies checkpoint tensors into the model through its <see cref="HfWeightTable"/>, checking every key and
    /// shape. Missing or unexpected keys are one error that lists them all.
    /// </summary>
    public static LoadReport LoadWeights(TransformerModel model, SafeTensorsCheckpoint checkpoint, string label, bool allowNewHead = false)
    {
        HfWeightTable table = model.WeightTable;
        var ignored = table.IgnoredKeyPatterns.Select(p => new Regex(p, RegexOptions.CultureInvariant)).ToList();
        var byCheckpointName = table.Entries.ToDictionary(e => e.CheckpointName);
        Dictionary<string, Tensor> targets = model.state_dict();

        // Resolve each file key to a table entry (allowing the family's alternative prefixes).
        var resolved = new Dictionary<string, (string FileKey, WeightMapping Entry)>();
        var unexpected = new List<string>();
        foreach (string fileKey in checkpoint.Names)
        {
            WeightMapping? entry = Resolve(fileKey, byCheckpointName, table);
            if (entry is not null)
            {
                if (!resolved.TryAdd(entry.CheckpointName, (fileKey, entry)))
                    throw new CheckpointMismatchException($"{label}: tensor {entry.CheckpointName} appears twice (as {resolved[entry.CheckpointName].FileKey} and {fileKey})");
            }
            else if (!ignored.Any(r => r.IsMatch(fileKey))) unexpected.Add(fileKey);
        }

        var headPrefixes = model.HeadModuleNames;
        bool IsHead(string name) => headPrefixes.Any(h => name == h || name.StartsWith(h + ".", StringComparison.Ordinal));
        var missing = table.Entries.Where(e => !resolved.ContainsKey(e.CheckpointName) && !table.OptionalParameters.Contains(e.ParameterName)).Select(e => e.CheckpointName).ToList();
        var newlyInitialised = new List<string>();
        var dropped = new List<string>();
        if (allowNewHead)
        {
            newlyInitialised.AddRange(missing.Where(IsHead));
            missing.RemoveAll(IsHead);
            dropped.AddRange(unexpected);   // the old head's tensors
            unexpected.Clear();
        }
        if (missing.Count > 0 || unexpected.Count > 0)
        {
            var parts = new List<string>();
            if (missing.Count > 0) parts.Add($"missing keys: {string.Join(", ", missing)}");
            if (unexpected.Count > 0) parts.Add($"unexpected keys: {string.Join(", ", unexpected)}");
            throw new CheckpointMismatchException($"{label}: checkpoint does not match {model.Config.ModelType} ({string.Join("; ", parts)})");
        }

        // Load with shape checks; a head being replaced may keep its fresh init when shapes differ.
        var shapeErrors = new List<string>();
        using (no_grad())
        {
            foreach (var (_, (fileKey, entry)) in resolved)
            {
                if (!targets.TryGetValue(entry.ParameterName, out Tensor? target))
                    throw new InvalidOperationException($"weight table names {entry.ParameterName}, which the model lacks");
                SafeTensorInfo info = checkpoint.Info(fileKey);
                long[] fileShape = entry.Transposed && info.Shape.Length == 2 ? [info.Shape[1], info.Shape[0]] : info.Shape;
                if (!fileShape.SequenceEqual(target.shape))
                {
                    if (allowNewHead && IsHead(entry.CheckpointName)) { newlyInitialised.Add(entry.CheckpointName); continue; }
                    shapeErrors.Add($"{fileKey} is [{string.Join(", ", info.Shape)}]{(entry.Transposed ? " (transposed Conv1D)" : "")}, model expects [{string.Join(", ", target.shape)}]");
                    continue;
                }
                using Tensor loaded = checkpoint.Load(fileKey);
                FiniteChecks.EnsureFinite(checkpoint.FileOf(fileKey).Path, fileKey, loaded);
                using Tensor oriented = entry.Transposed ? loaded.t() : loaded.alias();
                target.copy_(oriented);
            }
        }
        if (shapeErrors.Count > 0)
            throw new CheckpointMismatchException($"{label}: shape mismatch: {string.Join("; ", shapeErrors)}");
        model.NewlyInitialised = newlyInitialised.Select(n => table.Entries.FirstOrDefault(e => e.CheckpointName == n)?.ParameterName ?? n).ToList();
        return new LoadReport(newlyInitialised, dropped);
    }

    static WeightMapping? Resolve(string fileKey, Dictionary<string, WeightMapping> byName, HfWeightTable table)
    {
        if (byName.TryGetValue(fileKey, out var entry)) return entry;
        foreach (var (ours, inFile) in table.AlternativePrefixes)
        {
            if (fileKey.StartsWith(inFile, StringComparison.Ordinal) && byName.TryGetValue(ours + fileKey[inFile.Length..], out entry))
                return entry;
        }
        return null;
    }

    /// <summary>The model's tensors under Hugging Face checkpoint names (Conv1D weights transposed back).</summary>
    public static IEnumerable<KeyValuePair<string, Tensor>> CheckpointTensors(TransformerModel model) => CheckpointTensors(model, reshape: null);

    /// <summary>
    /// As <see cref="CheckpointTensors(TransformerModel)"/>, each tensor first passed through <paramref name="reshape"/>
    /// (parameter name, detached tensor in the model's own layout, i.e. before the Conv1D transpose).
    /// </summary>
    internal static IEnumerable<KeyValuePair<string, Tensor>> CheckpointTensors(TransformerModel model, Func<string, Tensor, Tensor>? reshape)
    {
        Dictionary<string, Tensor> state = model.state_dict();
        foreach (WeightMapping entry in model.WeightTable.Entries)
        {
            Tensor t = state[entry.ParameterName].detach();
            if (reshape is not null) t = reshape(entry.ParameterName, t);
            yield return new(entry.CheckpointName, entry.Transposed ? t.t() : t);
        }
    }

    /// <summary>Tokenizer files a Hugging Face folder may hold, copied along with a saved model.</summary>
    public static readonly IReadOnlyList<string> TokenizerFiles =
        ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "added_tokens.json"];

    /// <summary>Copies whichever tokenizer files exist from one model folder to another.</summary>
    public static void CopyTokenizerFiles(string fromDirectory, string toDirectory)
    {
        Directory.CreateDirectory(toDirectory);
        foreach (string name in TokenizerFiles)
        {
            string source = Path.Combine(fromDirectory, name);
            if (File.Exists(source)) File.Copy(source, Path.Combine(toDirectory, name), overwrite: true);
        }
    }

    /// <summary>
    /// Writes config.json and model.safetensors (Hugging Face names) into <paramref name="directory"/>. A pruned
    /// model's config carries its pruning record (<see cref="TransformerModel.PruneHeads"/>); an unpruned one's
    /// has no pruning keys.
    /// </summary>
    public static void Save(TransformerModel model, string directory, long maxShardBytes = long.MaxValue) =>
        Save(model, model.Config, directory, maxShardBytes, reshape: null);

    /// <summary>
    /// Writes <paramref name="config"/> and the model's tensors, each passed through <paramref name="reshape"/>
    /// (see <see cref="CheckpointTensors(TransformerModel, Func{string, Tensor, Tensor}?)"/>; tensors it creates are
    /// disposed here): the writer behind <see cref="Save(TransformerModel, string, long)"/> and <see cref="HuggingFaceExport"/>.
    /// </summary>
    internal static void Save(TransformerModel model, ModelConfig config, string directory, long maxShardBytes, Func<string, Tensor, Tensor>? reshape)
    {
        Directory.CreateDirectory(directory);
        using var scope = NewDisposeScope();
        SafeTensorsCheckpoint.Save(directory, CheckpointTensors(model, reshape).ToList(), maxShardBytes);
        config.Save(directory);
    }
}
