using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace SparseTune.Models;

/// <summary>Thrown for a config.json that cannot describe a supported model.</summary>
public sealed class ModelConfigException(string message) : Exception(message);

/// <summary>
/// What every family's Hugging Face config.json has in common. Family records map their own names with
/// [JsonPropertyName] and expose them through these properties, so training code never branches on
/// model_type.
/// </summary>
public abstract record ModelConfig
{
    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "";
    [JsonPropertyName("architectures")] public string[]? Architectures { get; init; }
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; }
    [JsonPropertyName("pad_token_id")] public int? PadTokenId { get; init; }
    [JsonPropertyName("bos_token_id")] public int? BosTokenId { get; init; }
    [JsonPropertyName("eos_token_id")] public JsonElement? EosTokenIdRaw { get; init; }
    /// <summary>Class names by id for classification heads; null for language models.</summary>
    [JsonPropertyName("id2label")] public Dictionary<string, string>? Id2Label { get; init; }
    /// <summary>"regression" for a float target with one output, as Hugging Face names it.</summary>
    [JsonPropertyName("problem_type")] public string? ProblemType { get; init; }

    /// <summary>
    /// Hugging Face's own record of head pruning (PretrainedConfig.pruned_heads), used for gpt2, bert and roberta:
    /// {"layer index": [ORIGINAL indices of the heads removed, sorted]}. transformers calls
    /// model.prune_heads(config.pruned_heads) when it builds the model, so a checkpoint saved with pruned shapes
    /// loads there as it does here. Null (not written) when nothing was pruned.
    /// </summary>
    [JsonPropertyName("pruned_heads")] public Dictionary<string, int[]>? PrunedHeads { get; init; }

    /// <summary>
    /// SparseTune's record of head pruning for the llama family (transformers has no head pruning there): the same
    /// layout as <see cref="PrunedHeads"/>, original QUERY head indices; a key/value head is gone when all the
    /// query heads of its group are. Null (not written) when nothing was pruned.
    /// </summary>
    [JsonPropertyName("sparsetune_pruned_heads")] public Dictionary<string, int[]>? SparseTunePrunedHeads { get; init; }

    /// <summary>
    /// SparseTune's record of FFN neuron pruning, every family: the intermediate size of each layer, in layer
    /// order. Null (not written) while every layer has the config's intermediate size. transformers does not know
    /// this key, so it cannot load a neuron-pruned checkpoint (its shapes differ); SparseTune can.
    /// </summary>
    [JsonPropertyName("sparsetune_intermediate_sizes")] public int[]? IntermediateSizes { get; init; }

    /// <summary>Heads removed per layer (original indices), from whichever key records them for this family.</summary>
    [JsonIgnore] public IReadOnlyDictionary<string, int[]>? RemovedHeads => UsesHuggingFacePrunedHeads ? PrunedHeads : SparseTunePrunedHeads;

    /// <summary>True where transformers itself reads pruned_heads (gpt2, bert, roberta).</summary>
    [JsonIgnore] public bool UsesHuggingFacePrunedHeads => this is not LlamaConfig;

    /// <summary>This config with <paramref name="heads"/> recorded under the family's key (null: nothing pruned).</summary>
    public ModelConfig WithRemovedHeads(Dictionary<string, int[]>? heads) =>
        UsesHuggingFacePrunedHeads ? this with { PrunedHeads = heads } : this with { SparseTunePrunedHeads = heads };

    /// <summary>Keys this record does not model (initializer_range, transformers_version, …), written back unchanged.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? OtherKeys { get; init; }

    [JsonIgnore] public abstract int HiddenSize { get; }
    [JsonIgnore] public abstract int NumLayers { get; }
    [JsonIgnore] public abstract int NumHeads { get; }
    [JsonIgnore] public abstract int IntermediateSize { get; }
    [JsonIgnore] public abstract int MaxPositions { get; }
    [JsonIgnore] public int HeadDim => HiddenSize / NumHeads;
    [JsonIgnore] public int NumLabels => Id2Label?.Count ?? 0;

    /// <summary>First eos id (llama-family configs may list several).</summary>
    [JsonIgnore]
    public int? EosTokenId => EosTokenIdRaw is { } e
        ? e.ValueKind == JsonValueKind.Number ? e.GetInt32()
        : e.ValueKind == JsonValueKind.Array && e.GetArrayLength() > 0 ? e[0].GetInt32() : null
        : null;

    public static readonly IReadOnlyList<string> SupportedModelTypes = ["gpt2", "bert", "roberta", "llama", "mistral", "qwen2"];

    static readonly JsonSerializerOptions WriteOptions = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull };

    /// <summary>Reads DIR/config.json (or a config.json path) and dispatches on model_type.</summary>
    public static ModelConfig Load(string path)
    {
        string file = Directory.Exists(path) ? Path.Combine(path, "config.json") : path;
        if (!File.Exists(file)) throw new FileNotFoundException($"no config.json at {file}", file);
        string text = File.ReadAllText(file);
        try { return Parse(text); }
        catch (JsonException e) { throw new ModelConfigException($"{file}: invalid JSON: {e.Message}"); }
        catch (ModelConfigException e) { throw new ModelConfigException($"{file}: {e.Message}"); }
    }

    public static ModelConfig Parse(string json)
    {
        if (JsonNode.Parse(json) is not JsonObject root) throw new ModelConfigException("config.json is not a JSON object");
        string type = root["model_type"] switch
        {
            null => throw new ModelConfigException("config.json has no model_type"),
            JsonValue v when v.TryGetValue(out string? name) => name,
            var other => throw new ModelConfigException($"model_type must be a string (got {other.ToJsonString()})"),
        };
        ModelConfig config = type switch
        {
            "gpt2" => root.Deserialize<Gpt2Config>()!,
            "bert" or "roberta" => root.Deserialize<BertConfig>()!,
            "llama" or "mistral" or "qwen2" => root.Deserialize<LlamaConfig>()!,
            _ => throw new ModelConfigException($"unsupported model_type '{type}'; supported: {string.Join(", ", SupportedModelTypes)}"),
        };
        config.Validate();
        return config;
    }

    /// <summary>Checks the numbers a model is built from; throws naming every problem.</summary>
    public virtual void Validate()
    {
        var problems = new List<string>();
        if (VocabSize <= 0) problems.Add("vocab_size must be positive");
        if (HiddenSize <= 0) problems.Add("hidden size must be positive");
        if (NumLayers <= 0) problems.Add("number of layers must be positive");
        if (MaxPositions <= 0) problems.Add($"the maximum sequence length (positions) must be positive (got {MaxPositions})");
        if (IntermediateSize <= 0) problems.Add($"the feed-forward size must be positive (got {IntermediateSize})");
        if (NumHeads <= 0) problems.Add("number of attention heads must be positive");
        else if (HiddenSize % NumHeads != 0 && this is not LlamaConfig { HeadDimOverride: not null })
            problems.Add($"hidden size {HiddenSize} is not divisible by {NumHeads} heads");
        if (UsesHuggingFacePrunedHeads && SparseTunePrunedHeads is { Count: > 0 })
            problems.Add($"sparsetune_pruned_heads is for llama-family models; {ModelType} records pruned heads in pruned_heads");
        if (!UsesHuggingFacePrunedHeads && PrunedHeads is { Count: > 0 })
            problems.Add($"{ModelType} records pruned heads in sparsetune_pruned_heads, not pruned_heads (transformers cannot prune its heads)");
        if (IntermediateSizes is { } sizes && sizes.Length != NumLayers)
            problems.Add($"sparsetune_intermediate_sizes has {sizes.Length} entries for {NumLayers} layers");
        problems.AddRange(RangeProblems());
        if (problems.Count > 0) throw new ModelConfigException(string.Join("; ", problems));
    }

    /// <summary>
    /// Roughly the parameters this config describes (embeddings, positions and, per layer, attention 4·h² and FFN
    /// 3·h·I): enough to tell a config that does not belong to its checkpoint before allocating it.
    /// </summary>
    public long EstimatedParameters() =>
        (long)VocabSize * HiddenSize + (long)MaxPositions * HiddenSize
        + (long)NumLayers * (4L * HiddenSize * HiddenSize + 3L * HiddenSize * IntermediateSize);

    /// <summary>The family's own fields out of range (epsilons, dropout probabilities, activation names), each named.</summary>
    protected virtual IEnumerable<string> RangeProblems() => [];

    /// <summary>A normalisation epsilon: positive and finite (a negative one makes the output NaN).</summary>
    protected static IEnumerable<string> Epsilon(string field, double value) =>
        value > 0 && double.IsFinite(value) ? [] : [$"{field} must be a small positive number (got {value})"];

    /// <summary>A dropout probability: in [0, 1).</summary>
    protected static IEnumerable<string> Probability(string field, double? value) =>
        value is null || value >= 0 && value < 1 ? [] : [$"{field} must be in [0, 1) (got {value})"];

    protected static IEnumerable<string> Activation(string field, string name) =>
        Nn.Activations.Supported.Contains(name) ? [] : [$"{field} '{name}' is not supported (supported: {string.Join(", ", Nn.Activations.Supported)})"];

    public string ToJson() => JsonSerializer.Serialize(this, GetType(), WriteOptions);

    public void Save(string directory)
    {
        Directory.CreateDirectory(directory);
        IO.AtomicFile.WriteAllText(Path.Combine(directory, "config.json"), ToJson());
    }
}

/// <summary>GPT-2 (GPT2LMHeadModel). Names as in transformers' GPT2Config.</summary>
public sealed record Gpt2Config : ModelConfig
{
    [JsonPropertyName("n_embd")] public int NEmbd { get; init; } = 768;
    [JsonPropertyName("n_layer")] public int NLayer { get; init; } = 12;
    [JsonPropertyName("n_head")] public int NHead { get; init; } = 12;
    /// <summary>FFN width; null means 4 × n_embd.</summary>
    [JsonPropertyName("n_inner")] public int? NInner { get; init; }
    [JsonPropertyName("n_positions")] public int NPositions { get; init; } = 1024;
    [JsonPropertyName("activation_function")] public string ActivationFunction { get; init; } = "gelu_new";
    [JsonPropertyName("layer_norm_epsilon")] public double LayerNormEpsilon { get; init; } = 1e-5;
    [JsonPropertyName("resid_pdrop")] public double ResidPdrop { get; init; } = 0.1;
    [JsonPropertyName("embd_pdrop")] public double EmbdPdrop { get; init; } = 0.1;
    [JsonPropertyName("attn_pdrop")] public double AttnPdrop { get; init; } = 0.1;
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; init; } = true;

    [JsonIgnore] public override int HiddenSize => NEmbd;
    [JsonIgnore] public override int NumLayers => NLayer;
    [JsonIgnore] public override int NumHeads => NHead;
    [JsonIgnore] public override int IntermediateSize => NInner ?? 4 * NEmbd;
    [JsonIgnore] public override int MaxPositions => NPositions;

    protected override IEnumerable<string> RangeProblems() =>
        [.. Epsilon("layer_norm_epsilon", LayerNormEpsilon), .. Probability("resid_pdrop", ResidPdrop), .. Probability("embd_pdrop", EmbdPdrop),
         .. Probability("attn_pdrop", AttnPdrop), .. Activation("activation_function", ActivationFunction)];
}

/// <summary>BERT and RoBERTa (same config class in transformers; RoBERTa differs in position ids).</summary>
public sealed record BertConfig : ModelConfig
{
    [JsonPropertyName("hidden_size")] public int Hidden { get; init; } = 768;
    [JsonPropertyName("num_hidden_layers")] public int Layers { get; init; } = 12;
    [JsonPropertyName("num_attention_heads")] public int Heads { get; init; } = 12;
    [JsonPropertyName("intermediate_size")] public int Intermediate { get; init; } = 3072;
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "gelu";
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 512;
    [JsonPropertyName("type_vocab_size")] public int TypeVocabSize { get; init; } = 2;
    [JsonPropertyName("layer_norm_eps")] public double LayerNormEps { get; init; } = 1e-12;
    [JsonPropertyName("hidden_dropout_prob")] public double HiddenDropoutProb { get; init; } = 0.1;
    [JsonPropertyName("attention_probs_dropout_prob")] public double AttentionProbsDropoutProb { get; init; } = 0.1;
    [JsonPropertyName("classifier_dropout")] public double? ClassifierDropout { get; init; }

    [JsonIgnore] public bool IsRoberta => ModelType == "roberta";
    [JsonIgnore] public override int HiddenSize => Hidden;
    [JsonIgnore] public override int NumLayers => Layers;
    [JsonIgnore] public override int NumHeads => Heads;
    [JsonIgnore] public override int IntermediateSize => Intermediate;
    [JsonIgnore] public override int MaxPositions => MaxPositionEmbeddings;

    protected override IEnumerable<string> RangeProblems() =>
        [.. Epsilon("layer_norm_eps", LayerNormEps), .. Probability("hidden_dropout_prob", HiddenDropoutProb),
         .. (TypeVocabSize > 0 ? Array.Empty<string>() : [$"type_vocab_size must be positive (got {TypeVocabSize})"]),
         .. Probability("attention_probs_dropout_prob", AttentionProbsDropoutProb), .. Probability("classifier_dropout", ClassifierDropout),
         .. Activation("hidden_act", HiddenAct)];
}

/// <summary>LLaMA family: llama, mistral, qwen2 (RMSNorm, rotary, grouped-query attention).</summary>
public sealed record LlamaConfig : ModelConfig
{
    [JsonPropertyName("hidden_size")] public int Hidden { get; init; } = 4096;
    [JsonPropertyName("num_hidden_layers")] public int Layers { get; init; } = 32;
    [JsonPropertyName("num_attention_heads")] public int Heads { get; init; } = 32;
    /// <summary>Grouped-query attention: key/value heads; null means one per query head.</summary>
    [JsonPropertyName("num_key_value_heads")] public int? KeyValueHeads { get; init; }
    [JsonPropertyName("head_dim")] public int? HeadDimOverride { get; init; }
    [JsonPropertyName("intermediate_size")] public int Intermediate { get; init; } = 11008;
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 2048;
    [JsonPropertyName("rms_norm_eps")] public double RmsNormEps { get; init; } = 1e-6;
    [JsonPropertyName("rope_theta")] public double RopeTheta { get; init; } = 10000.0;
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "silu";
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; init; }
    /// <summary>llama/mistral: bias on q,k,v,o when true. qwen2 always has q/k/v bias (not o).</summary>
    [JsonPropertyName("attention_bias")] public bool AttentionBias { get; init; }
    [JsonPropertyName("mlp_bias")] public bool MlpBias { get; init; }

    /// <summary>Mistral: each token attends to itself and the sliding_window - 1 tokens before it (null: no window). Qwen2: the same, when use_sliding_window.</summary>
    [JsonPropertyName("sliding_window")] public int? SlidingWindow { get; init; }
    /// <summary>Qwen2: whether sliding_window applies at all (its configs carry a window that is off by default).</summary>
    [JsonPropertyName("use_sliding_window")] public bool UseSlidingWindow { get; init; }
    /// <summary>Qwen2: layers below this index attend in full even with use_sliding_window (Hugging Face's layer_types; default 28).</summary>
    [JsonPropertyName("max_window_layers")] public int? MaxWindowLayers { get; init; }

    /// <summary>
    /// The attention window of layer <paramref name="layer"/>, null for full causal attention: Mistral's sliding_window
    /// on every layer; Qwen2's only with use_sliding_window and from max_window_layers on; never LLaMA's.
    /// </summary>
    public int? SlidingWindowOf(int layer) => ModelType switch
    {
        "mistral" => SlidingWindow,
        "qwen2" when UseSlidingWindow && layer >= (MaxWindowLayers ?? 28) => SlidingWindow,
        _ => null,
    };

    [JsonIgnore] public override int HiddenSize => Hidden;
    [JsonIgnore] public override int NumLayers => Layers;
    [JsonIgnore] public override int NumHeads => Heads;
    [JsonIgnore] public override int IntermediateSize => Intermediate;
    [JsonIgnore] public override int MaxPositions => MaxPositionEmbeddings;
    [JsonIgnore] public int NumKeyValueHeads => KeyValueHeads ?? Heads;
    [JsonIgnore] public int AttentionHeadDim => HeadDimOverride ?? Hidden / Heads;
    [JsonIgnore] public bool QkvBias => ModelType == "qwen2" || AttentionBias;
    [JsonIgnore] public bool OutputBias => ModelType != "qwen2" && AttentionBias;

    public override void Validate()
    {
        base.Validate();
        if (NumKeyValueHeads <= 0)
            throw new ModelConfigException($"num_key_value_heads must be positive (got {NumKeyValueHeads})");
        if (Heads % NumKeyValueHeads != 0)
            throw new ModelConfigException($"num_attention_heads {Heads} is not a multiple of num_key_value_heads {NumKeyValueHeads}");
        if (SlidingWindow is <= 0)
            throw new ModelConfigException($"sliding_window must be positive or null (got {SlidingWindow})");
    }

    protected override IEnumerable<string> RangeProblems() =>
        [.. Epsilon("rms_norm_eps", RmsNormEps), .. Activation("hidden_act", HiddenAct)];
}
