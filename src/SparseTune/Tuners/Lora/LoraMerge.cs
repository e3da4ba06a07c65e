using System.Text.Json;
using SparseTune.IO;
using SparseTune.Models;

namespace SparseTune.Tuners.Lora;

/// <summary>Folds a PEFT LoRA adapter into its base model and writes a plain Hugging Face checkpoint.</summary>
public static class LoraMerge
{
    /// <summary>Tokenizer files of the supported families, copied beside the merged weights when present.</summary>
    public static readonly IReadOnlyList<string> TokenizerFiles =
        ["vocab.json", "merges.txt", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"];

    /// <summary>
    /// Loads the base model from <paramref name="baseModelDirectory"/> with the head the adapter was trained for
    /// (task_type SEQ_CLS: a classification head with the labels recorded in the adapter, else the base config's;
    /// CAUSAL_LM: the LM head; otherwise the base's own), attaches the adapter, merges it (W += B·A·alpha/r),
    /// and writes config.json + model.safetensors to <paramref name="outputDirectory"/>, plus the tokenizer
    /// files of the adapter folder, or else of the base folder. A head the base lacks must come from the adapter's
    /// modules_to_save.
    /// </summary>
    public static void MergeToCheckpoint(string baseModelDirectory, string adapterDirectory, string outputDirectory)
    {
        if (!Directory.Exists(baseModelDirectory)) throw new DirectoryNotFoundException($"base model folder not found: {baseModelDirectory}");
        if (!Directory.Exists(adapterDirectory)) throw new DirectoryNotFoundException($"adapter folder not found: {adapterDirectory}");
        string output = Path.GetFullPath(outputDirectory);
        foreach (var (input, what) in new[] { (baseModelDirectory, "base model"), (adapterDirectory, "adapter") })
            if (string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(input)), Path.TrimEndingDirectorySeparator(output), StringComparison.Ordinal))
                throw new ArgumentException($"the output folder must differ from the {what} folder ({input})", nameof(outputDirectory));

        var config = PeftLoraConfig.Load(adapterDirectory);
        ModelHead? head = PeftAdapterFormat.HeadOf(config.TaskType);
        IReadOnlyList<string>? labels = head == ModelHead.SequenceClassification ? AdapterLabels(adapterDirectory) : null;

        TransformerModel model = PretrainedModel.Load(baseModelDirectory, head, labels, out LoadReport report);
        try
        {
            using var tuner = LoraTuner.LoadAdapter(model, adapterDirectory);
            var uncovered = report.NewlyInitialised.Where(n => !ModuleSelection.IsUnder(n, tuner.SavedModuleNames)).ToList();
            if (uncovered.Count > 0)
                throw new InvalidDataException(
                    $"{adapterDirectory}: the base model {baseModelDirectory} has no trained {string.Join(", ", uncovered)} and the adapter does not carry them (modules_to_save)");
            tuner.MergeAndDetach();
            PretrainedModel.Save(model, output);
        }
        finally
        {
            model.Dispose();
        }

        foreach (string name in TokenizerFiles)
        {
            string? source = new[] { adapterDirectory, baseModelDirectory }.Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);
            if (source is not null)
                AtomicFile.Write(Path.Combine(output, name), s => { using var from = File.OpenRead(source); from.CopyTo(s); });
        }
    }

    /// <summary>Class names that SparseTune records in the adapter's safetensors metadata; null when absent (PEFT's own files).</summary>
    static IReadOnlyList<string>? AdapterLabels(string adapterDirectory)
    {
        using var file = SafeTensorsFile.Open(Path.Combine(adapterDirectory, PeftAdapterFormat.WeightsFileName));
        if (!file.Metadata.TryGetValue(PeftAdapterFormat.Id2LabelMetadataKey, out var json)) return null;
        var id2label = JsonSerializer.Deserialize<Dictionary<string, string>>(json)
            ?? throw new InvalidDataException($"{adapterDirectory}: empty {PeftAdapterFormat.Id2LabelMetadataKey} metadata");
        return id2label.OrderBy(p => int.Parse(p.Key, System.Globalization.CultureInfo.InvariantCulture)).Select(p => p.Value).ToList();
    }
}
