using System.Text.Json.Serialization;

namespace SparseTune.Tuners.Dsee;

/// <summary>DSEE's part of report.json (<c>method_report</c>).</summary>
public sealed record DseeReport
{
    [JsonPropertyName("prune")] public required string Prune { get; init; }
    [JsonPropertyName("pruned")] public bool Pruned { get; init; }
    /// <summary>Unstructured: the final share of zeros in pool 1 (key, attention-output, FFN weights).</summary>
    [JsonPropertyName("sparsity_key_output_ffn")] public double? BackboneSparsity { get; init; }
    /// <summary>Unstructured: the final share of zeros in pool 2 (query and value W; the update stays beside it).</summary>
    [JsonPropertyName("sparsity_query_value")] public double? QueryValueSparsity { get; init; }
    /// <summary>Heads: layer → the original indices of the heads removed.</summary>
    [JsonPropertyName("heads_removed")] public IReadOnlyDictionary<string, int[]> HeadsRemoved { get; init; } = new Dictionary<string, int[]>();
    /// <summary>Values of A, B and S (the dually sparse update) over all targeted matrices.</summary>
    [JsonPropertyName("update_parameters")] public long UpdateParameters { get; init; }
    /// <summary>Blocks' forward FLOPs per token (zeros skipped, attention at 128 tokens) with the update kept beside W, relative to the dense model.</summary>
    [JsonPropertyName("inference_flops_relative")] public double InferenceFlopsRelativeUpdateSeparate { get; init; }
    /// <summary>The same for the merged model/ (the update fills the query/value zeros).</summary>
    [JsonPropertyName("inference_flops_relative_merged")] public double InferenceFlopsRelativeMerged { get; init; }
    /// <summary>Time to choose Ω (the decomposition of every query and value matrix).</summary>
    [JsonPropertyName("support_seconds")] public double SupportSeconds { get; init; }
    [JsonPropertyName("retune_steps")] public int RetuneSteps { get; init; }
}
