using SparseTune.Models;

namespace SparseTune.Benchmarks;

/// <summary>Model shapes `sparsetune bench --preset` knows; weights are random, only the shape matters.</summary>
public static class BenchPresets
{
    static readonly Dictionary<string, string> Labels = new() { ["0"] = "negative", ["1"] = "positive" };

    public static readonly IReadOnlyDictionary<string, (ModelConfig Config, ModelHead Head)> All = new Dictionary<string, (ModelConfig, ModelHead)>
    {
        // A few-layer BERT classifier: seconds per method, for smoke runs.
        ["tiny"] = (new BertConfig { ModelType = "bert", VocabSize = 1000, Hidden = 128, Layers = 2, Heads = 4, Intermediate = 512, MaxPositionEmbeddings = 512, Id2Label = Labels, PadTokenId = 0 }, ModelHead.SequenceClassification),
        // bert-base-uncased (110M) with a 2-class head.
        ["bert-base"] = (new BertConfig { ModelType = "bert", VocabSize = 30522, Id2Label = Labels, PadTokenId = 0 }, ModelHead.SequenceClassification),
        // gpt2 (124M) with its tied LM head.
        ["gpt2-small"] = (new Gpt2Config { ModelType = "gpt2", VocabSize = 50257, BosTokenId = 50256 }, ModelHead.CausalLM),
        // A small LLaMA-family shape (about 160M: TinyLlama's width and grouped-query attention, 8 layers): SwiGLU,
        // RMSNorm, rotary positions, 4 key/value heads for 16 query heads.
        ["llama-small"] = (new LlamaConfig { ModelType = "llama", VocabSize = 32000, Hidden = 1024, Layers = 8, Heads = 16, KeyValueHeads = 4, Intermediate = 2816, MaxPositionEmbeddings = 2048, BosTokenId = 1 }, ModelHead.CausalLM),
        // TinyLlama-1.1B's shape (1.1B parameters, 4.4 GB of float32 weights): 22 layers, hidden 2048, FFN 5632,
        // 32 query and 4 key/value heads, untied 32000-token LM head.
        ["tinyllama-1.1b"] = (new LlamaConfig { ModelType = "llama", VocabSize = 32000, Hidden = 2048, Layers = 22, Heads = 32, KeyValueHeads = 4, Intermediate = 5632, MaxPositionEmbeddings = 2048, RmsNormEps = 1e-5, BosTokenId = 1 }, ModelHead.CausalLM),
        // LLaMA-7B's shape (6.74B parameters, 27 GB of float32 weights): 32 layers, hidden 4096, FFN 11008, 32 heads.
        // For `bench traffic` (computed from the shape); training it needs far more memory than a 24 GiB machine.
        ["llama-7b"] = (new LlamaConfig { ModelType = "llama", VocabSize = 32000, Hidden = 4096, Layers = 32, Heads = 32, KeyValueHeads = 32, Intermediate = 11008, MaxPositionEmbeddings = 2048, RmsNormEps = 1e-6, BosTokenId = 1 }, ModelHead.CausalLM),
    };

    public static (ModelConfig Config, ModelHead Head) Get(string name) =>
        All.TryGetValue(name, out var preset) ? preset
        : throw new ArgumentException($"unknown --preset '{name}'; available: {string.Join(", ", All.Keys)}");
}
