using SparseTune.IO;
using SparseTune.Models;

namespace SparseTune.Tuners;

/// <summary>The head (and class labels) a base model needs before an artifact can be applied to it; null head: the base's own.</summary>
public sealed record ArtifactHead(ModelHead? Head, IReadOnlyList<string>? Labels);

/// <summary>
/// Reads what a method wrote (a LoRA adapter folder, a sparse-matrix file, …) and applies it to a base model.
/// Artifacts are recognised by their metadata, never by file name.
/// </summary>
public interface IArtifactReader
{
    /// <summary>What the reader accepts, for error messages.</summary>
    string Description { get; }

    /// <summary>This reader's artifacts at <paramref name="path"/>: the path itself, or the artifacts inside a folder; empty when none.</summary>
    IReadOnlyList<string> Locate(string path);

    /// <summary>The head the base model must be loaded with.</summary>
    ArtifactHead HeadOf(string artifact);

    /// <summary>
    /// Folds the artifact into the model's own weights (the model is then a plain model). Returns the names of the
    /// parameters it set in full, so a caller can check that a newly initialised head was covered.
    /// </summary>
    IReadOnlyCollection<string> ApplyTo(TransformerModel model, string artifact);
}

/// <summary>Any method's artifact, found by its reader: loaded onto a base model, or merged into a plain checkpoint.</summary>
public static class MethodArtifacts
{
    /// <summary>Safetensors metadata key of every SparseTune artifact (ignored by PEFT) holding the classification labels as id2label JSON.</summary>
    public const string Id2LabelMetadataKey = "sparsetune.id2label";

    /// <summary>
    /// The safetensors files at <paramref name="path"/> (the file itself, or the *.safetensors at the top of a folder)
    /// whose metadata "format" passes <paramref name="isFormat"/>; a file that is not safetensors at all is skipped.
    /// Shared by the readers that recognise their files by format metadata.
    /// </summary>
    public static IReadOnlyList<string> SafeTensorsWithFormat(string path, Func<string, bool> isFormat)
    {
        IEnumerable<string> candidates = Directory.Exists(path)
            ? Directory.EnumerateFiles(path, "*.safetensors").Order(StringComparer.Ordinal)
            : File.Exists(path) ? [path] : [];
        return candidates.Where(candidate =>
        {
            try
            {
                using var file = SafeTensorsFile.Open(candidate);
                return file.Metadata.TryGetValue("format", out var format) && isFormat(format);
            }
            catch (Exception e) when (e is InvalidDataException or SafeTensorsFormatException) { return false; }   // not a safetensors file: not ours
        }).ToList();
    }

    /// <summary>Safetensors metadata key of every SparseTune artifact naming the head it was trained with (a <see cref="ModelHead"/> name).</summary>
    public const string HeadMetadataKey = "sparsetune.head";

    /// <summary>
    /// What an artifact records of the model's head so that it can be loaded without being told: the head's name, and
    /// the class labels of a classification head.
    /// </summary>
    public static Dictionary<string, string> HeadMetadata(TransformerModel model)
    {
        var metadata = new Dictionary<string, string> { [HeadMetadataKey] = model.Head.ToString() };
        if (model.Head == ModelHead.SequenceClassification && model.Config.Id2Label is { Count: > 0 } labels)
            metadata[Id2LabelMetadataKey] = System.Text.Json.JsonSerializer.Serialize(labels);
        return metadata;
    }

    /// <summary>
    /// The head a file's metadata records (<see cref="HeadMetadata"/>), with a classification head's labels. A file
    /// written before the head was recorded: its labels mean a classification head; without either, the base's own head.
    /// </summary>
    public static ArtifactHead HeadFromRecordedLabels(string safetensorsPath)
    {
        var labels = RecordedLabels(safetensorsPath);
        using (var file = SafeTensorsFile.Open(safetensorsPath))
            if (file.Metadata.TryGetValue(HeadMetadataKey, out var name))
                return Enum.TryParse(name, out ModelHead head)
                    ? new ArtifactHead(head, head == ModelHead.SequenceClassification ? labels : null)
                    : throw new InvalidDataException($"{safetensorsPath}: unknown head '{name}' in its {HeadMetadataKey} metadata");
        return labels is not null ? new ArtifactHead(ModelHead.SequenceClassification, labels) : new ArtifactHead(null, null);
    }

    /// <summary>The class labels recorded in a safetensors file's metadata, in id order; null when it records none.</summary>
    public static IReadOnlyList<string>? RecordedLabels(string safetensorsPath)
    {
        using var file = SafeTensorsFile.Open(safetensorsPath);
        if (!file.Metadata.TryGetValue(Id2LabelMetadataKey, out var json)) return null;
        var id2label = System.Text.Json.JsonSerializer.Deserialize<Dictionary<string, string>>(json)
            ?? throw new InvalidDataException($"{safetensorsPath}: empty {Id2LabelMetadataKey} metadata");
        return id2label.OrderBy(p => int.Parse(p.Key, System.Globalization.CultureInfo.InvariantCulture)).Select(p => p.Value).ToList();
    }

    /// <summary>What is wrong with an --adapter path before anything is read (nothing there); null: nothing, or no adapter given.</summary>
    public static string? PathProblem(string? path) =>
        path is not null && !File.Exists(path) && !Directory.Exists(path) ? $"--adapter: not found: {path}" : null;

    /// <summary>The one artifact at <paramref name="path"/> and its reader; none or several is an error naming what was looked for or found.</summary>
    public static (IArtifactReader Reader, string Artifact) Find(string path)
    {
        if (!File.Exists(path) && !Directory.Exists(path)) throw new FileNotFoundException($"no file or folder at {path}", path);
        var readers = MethodRegistry.ArtifactReaders;
        var found = readers.SelectMany(r => r.Locate(path).Select(a => (Reader: r, Artifact: a))).ToList();
        return found.Count switch
        {
            1 => found[0],
            0 => throw new InvalidDataException(
                $"{path} holds no method artifact; expected {string.Join(", or ", readers.Select(r => r.Description))}"),
            _ => throw new InvalidDataException(
                $"{path} holds several method artifacts ({string.Join(", ", found.Select(f => f.Artifact))}); name one of them"),
        };
    }

    /// <summary>
    /// Loads the base model with the head the artifact was trained for and applies the artifact. A head that the
    /// base lacks must come from the artifact itself.
    /// </summary>
    public static TransformerModel LoadWithArtifact(string baseModelDirectory, string artifactPath, out string artifact)
    {
        var (reader, found) = Find(artifactPath);
        artifact = found;
        var head = reader.HeadOf(found);
        TransformerModel model = PretrainedModel.Load(baseModelDirectory, head.Head, head.Labels, out LoadReport report);
        try
        {
            var covered = reader.ApplyTo(model, found);
            var uncovered = report.NewlyInitialised.Where(n => !covered.Contains(n)).ToList();
            if (uncovered.Count > 0)
                throw new InvalidDataException(
                    $"{found}: the base model {baseModelDirectory} has no trained {string.Join(", ", uncovered)} and the artifact does not carry them");
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>Base model + artifact → a plain Hugging Face folder, with the tokenizer files of the artifact's folder or else the base's.</summary>
    public static void MergeToCheckpoint(string baseModelDirectory, string artifactPath, string outputDirectory)
    {
        if (!Directory.Exists(baseModelDirectory)) throw new DirectoryNotFoundException($"base model folder not found: {baseModelDirectory}");
        string output = Path.TrimEndingDirectorySeparator(Path.GetFullPath(outputDirectory));
        foreach (var (input, what) in new[] { (baseModelDirectory, "base model"), (artifactPath, "artifact") })
            if (string.Equals(Path.TrimEndingDirectorySeparator(Path.GetFullPath(input)), output, StringComparison.Ordinal))
                throw new ArgumentException($"--output must differ from the {what} folder ({input})");
        using (var model = LoadWithArtifact(baseModelDirectory, artifactPath, out string artifact))
        {
            PretrainedModel.Save(model, output);
            string artifactFolder = Directory.Exists(artifact) ? artifact : Path.GetDirectoryName(Path.GetFullPath(artifact))!;
            foreach (string name in PretrainedModel.TokenizerFiles)
            {
                string? source = new[] { artifactFolder, baseModelDirectory }.Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);
                if (source is not null)
                    AtomicFile.Write(Path.Combine(output, name), s => { using var from = File.OpenRead(source); from.CopyTo(s); });
            }
        }
    }
}
