using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Models;

// The LLaMA family (Touvron et al. 2023) — llama, mistral, qwen2 — module for module as Hugging Face's
// LlamaForCausalLM / LlamaForSequenceClassification (Mistral and Qwen2 share the tree), so state_dict() keys are
// the checkpoint keys:
//
//   model.embed_tokens                                    token embedding (no position embedding: rotary)
//   model.layers.{i}.input_layernorm → self_attn → (+)    pre-norm residual blocks with RMSNorm
//   model.layers.{i}.post_attention_layernorm → mlp → (+)
//   model.norm                                            final RMSNorm (last_hidden_state is taken after it)
//   lm_head (absent when tie_word_embeddings)  |  score (classification, no bias)
//
// Differences between the three types are config flags, not branches: q/k/v bias (qwen2 always, llama and
// mistral with attention_bias), o_proj bias (attention_bias, never qwen2), MLP bias (mlp_bias), head_dim.
// Mistral's sliding window (and Qwen2's, when use_sliding_window) is applied as a mask: it only changes
// anything beyond its length, 4096 tokens in Mistral-7B-v0.1.

/// <summary>
/// Grouped-query self-attention (Ainslie et al. 2023) with rotary position embedding: nh query heads share
/// n_kv key/value heads, each k/v head serving nh / n_kv query heads.
/// </summary>
public sealed class LlamaAttention : nn.Module<Tensor, (Tensor Cos, Tensor Sin), Tensor?, CacheSlot?, Tensor>, IHeadedAttention
{
    [ComponentName(Name = "q_proj")] public readonly TunableLinear QProj;   // C → nh·hs
    [ComponentName(Name = "k_proj")] public readonly TunableLinear KProj;   // C → n_kv·hs
    [ComponentName(Name = "v_proj")] public readonly TunableLinear VProj;   // C → n_kv·hs
    [ComponentName(Name = "o_proj")] public readonly TunableLinear OProj;   // nh·hs → C

    /// <summary>
    /// Query and key/value heads currently present. Head pruning lowers them with the projections' rows and
    /// o_proj's columns, so forward reads them from here, never from the config.
    /// </summary>
    public int NumHeads;
    public int NumKeyValueHeads;
    public readonly int HeadDim;
    Tensor? headGate;

    /// <summary>(nh) multiplier of each query head's context before o_proj; null: ungated. See <see cref="AttentionView.HeadGate"/>.</summary>
    public Tensor? HeadGate { get => headGate; set => headGate = Gates.Check(value, NumHeads, $"{nameof(LlamaAttention)} HeadGate"); }

    int IHeadedAttention.NumHeads => NumHeads;
    int IHeadedAttention.NumKeyValueHeads => NumKeyValueHeads;
    int IHeadedAttention.HeadDim => HeadDim;
    void IHeadedAttention.SetHeadCounts(int heads, int keyValueHeads) => (NumHeads, NumKeyValueHeads) = (heads, keyValueHeads);

    public LlamaAttention(LlamaConfig config) : base(nameof(LlamaAttention))
    {
        NumHeads = config.Heads;
        NumKeyValueHeads = config.NumKeyValueHeads;
        HeadDim = config.AttentionHeadDim;
        QProj = new TunableLinear(config.Hidden, NumHeads * HeadDim, hasBias: config.QkvBias);
        KProj = new TunableLinear(config.Hidden, NumKeyValueHeads * HeadDim, hasBias: config.QkvBias);
        VProj = new TunableLinear(config.Hidden, NumKeyValueHeads * HeadDim, hasBias: config.QkvBias);
        OProj = new TunableLinear(NumHeads * HeadDim, config.Hidden, hasBias: config.OutputBias);
        RegisterComponents();
    }

    /// <param name="x">(B, T, C)</param>
    /// <param name="rotary">cos and sin (T, hs) or (B, 1, T, hs) from <see cref="RotaryEmbedding"/>.</param>
    /// <param name="mask">boolean (B, 1, T, S) from <see cref="AttentionMasks"/>; null: plain causal.</param>
    /// <param name="cache">While decoding: this layer's key/value cache; k and v then cover all S cached slots.</param>
    public override Tensor forward(Tensor x, (Tensor Cos, Tensor Sin) rotary, Tensor? mask, CacheSlot? cache)
    {
        long B = x.shape[0], T = x.shape[1];
        Tensor q = QProj.call(x).view(B, T, NumHeads, HeadDim).transpose(1, 2);           // (B, nh, T, hs)
        Tensor k = KProj.call(x).view(B, T, NumKeyValueHeads, HeadDim).transpose(1, 2);   // (B, n_kv, T, hs)
        Tensor v = VProj.call(x).view(B, T, NumKeyValueHeads, HeadDim).transpose(1, 2);   // (B, n_kv, T, hs)
        q = RotaryEmbedding.Apply(q, rotary.Cos, rotary.Sin);
        k = RotaryEmbedding.Apply(k, rotary.Cos, rotary.Sin);
        if (cache is { } slot) (k, v) = slot.Update(k, v);                                 // 2 × (B, n_kv, S, hs)
        k = RepeatKeyValue(k);                                                             // (B, nh, S, hs)
        v = RepeatKeyValue(v);                                                             // (B, nh, S, hs)
        Tensor y = F.scaled_dot_product_attention(q, k, v, mask, is_casual: mask is null); // (B, nh, T, hs)
        if (headGate is not null) y = y * headGate.view(1, NumHeads, 1, 1);                // (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, NumHeads * HeadDim);                           // (B, T, nh·hs)
        return OProj.call(y);
    }

    /// <summary>(B, n_kv, S, hs) → (B, nh, S, hs), each k/v head repeated for its group of query heads (HF repeat_kv).</summary>
    Tensor RepeatKeyValue(Tensor kv)
    {
        int groups = NumHeads / NumKeyValueHeads;
        if (groups == 1) return kv;
        long B = kv.shape[0], T = kv.shape[2];
        return kv.unsqueeze(2).expand(B, NumKeyValueHeads, groups, T, HeadDim)           // (B, n_kv, g, T, hs)
                 .reshape(B, NumHeads, T, HeadDim);                                        // (B, nh, T, hs)
    }
}

/// <summary>SwiGLU feed-forward (Shazeer 2020): down_proj(act(gate_proj(x)) · up_proj(x)), act = silu.</summary>
public sealed class LlamaMlp : nn.Module<Tensor, Tensor>, IGatedFeedForward
{
    [ComponentName(Name = "gate_proj")] public readonly TunableLinear GateProj;   // C → I
    [ComponentName(Name = "up_proj")] public readonly TunableLinear UpProj;       // C → I
    [ComponentName(Name = "down_proj")] public readonly TunableLinear DownProj;   // I → C
    readonly string activation;
    Tensor? neuronGate;

    /// <summary>(I) multiplier of act(gate)·up before down_proj; null: ungated. See <see cref="FeedForwardView.NeuronGate"/>.</summary>
    public Tensor? NeuronGate { get => neuronGate; set => neuronGate = Gates.Check(value, DownProj.InFeatures, $"{nameof(LlamaMlp)} NeuronGate"); }

    public LlamaMlp(LlamaConfig config) : base(nameof(LlamaMlp))
    {
        GateProj = new TunableLinear(config.Hidden, config.Intermediate, hasBias: config.MlpBias);
        UpProj = new TunableLinear(config.Hidden, config.Intermediate, hasBias: config.MlpBias);
        DownProj = new TunableLinear(config.Intermediate, config.Hidden, hasBias: config.MlpBias);
        activation = config.HiddenAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        Tensor h = Activations.Apply(activation, GateProj.call(x)) * UpProj.call(x);   // (B, T, I)
        if (neuronGate is not null) h = h * neuronGate;
        return DownProj.call(h);
    }
}

/// <summary>
/// One pre-norm decoder layer:
/// <code>
///   x ──┬── input_layernorm ── self_attn ──(+)──┬── post_attention_layernorm ── mlp ──(+)──▶
///       └────────────────────────────────────┘  └─────────────────────────────────────┘
/// </code>
/// </summary>
public sealed class LlamaDecoderLayer : nn.Module<Tensor, (Tensor Cos, Tensor Sin), Tensor?, CacheSlot?, Tensor>
{
    [ComponentName(Name = "self_attn")] public readonly LlamaAttention SelfAttn;
    [ComponentName(Name = "mlp")] public readonly LlamaMlp Mlp;
    [ComponentName(Name = "input_layernorm")] public readonly RmsNorm InputNorm;
    [ComponentName(Name = "post_attention_layernorm")] public readonly RmsNorm PostAttentionNorm;

    public LlamaDecoderLayer(LlamaConfig config) : base(nameof(LlamaDecoderLayer))
    {
        SelfAttn = new LlamaAttention(config);
        Mlp = new LlamaMlp(config);
        InputNorm = new RmsNorm(config.Hidden, config.RmsNormEps);
        PostAttentionNorm = new RmsNorm(config.Hidden, config.RmsNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, (Tensor Cos, Tensor Sin) rotary, Tensor? mask, CacheSlot? cache)
    {
        x = x + SelfAttn.call(InputNorm.call(x), rotary, mask, cache);
        return x + Mlp.call(PostAttentionNorm.call(x));
    }
}

/// <summary>
/// The body, Hugging Face's LlamaModel (the "model." prefix). A container: <see cref="LlamaTransformer.Forward"/>
/// runs it, so that layers can go through activation checkpointing.
/// </summary>
public sealed class LlamaModel : nn.Module
{
    [ComponentName(Name = "embed_tokens")] public readonly Embedding TokenEmbedding;   // (vocab, C)
    [ComponentName(Name = "layers")] public readonly ModuleList<LlamaDecoderLayer> Layers;
    [ComponentName(Name = "norm")] public readonly RmsNorm FinalNorm;

    public LlamaModel(LlamaConfig config) : base(nameof(LlamaModel))
    {
        TokenEmbedding = nn.Embedding(config.VocabSize, config.Hidden);
        Layers = nn.ModuleList(Enumerable.Range(0, config.Layers).Select(_ => new LlamaDecoderLayer(config)).ToArray());
        FinalNorm = new RmsNorm(config.Hidden, config.RmsNormEps);
        RegisterComponents();
    }
}

/// <summary>A LLaMA-family decoder with a causal-LM head (lm_head, or tied to embed_tokens) or a classification head (score).</summary>
public sealed class LlamaTransformer : TransformerModel
{
    [ComponentName(Name = "model")] public readonly LlamaModel Model;
    /// <summary>(vocab, C), no bias; null when tied to embed_tokens or for classification.</summary>
    [ComponentName(Name = "lm_head")] public readonly TunableLinear? LmHead;
    /// <summary>(num_labels, C), no bias; null for the causal LM.</summary>
    [ComponentName(Name = "score")] public readonly TunableLinear? Score;

    readonly LlamaConfig config;
    readonly RotaryEmbedding rotary;   // cos/sin cache; not a module, so not in state_dict

    public LlamaTransformer(LlamaConfig config, ModelHead head) : base(nameof(LlamaTransformer), config, head)
    {
        if (head == ModelHead.MaskedLM) throw new ModelConfigException($"{config.ModelType} has no masked-LM head");
        EncoderOnlyHeads.Refuse(config, head);
        if (head == ModelHead.SequenceClassification && config.NumLabels == 0)
            throw new ModelConfigException($"a {config.ModelType} classification head needs id2label in the config");
        this.config = config;
        Model = new LlamaModel(config);
        if (head == ModelHead.CausalLM && !config.TieWordEmbeddings)
            LmHead = new TunableLinear(config.Hidden, config.VocabSize, hasBias: false);
        if (head == ModelHead.SequenceClassification)
            Score = new TunableLinear(config.Hidden, config.NumLabels, hasBias: false);
        rotary = new RotaryEmbedding(config.AttentionHeadDim, config.RopeTheta, config.MaxPositionEmbeddings);
        RegisterComponents();
        InitWeights();
        ApplyConfiguredPruning();
    }

    public override ModelOutput Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null)
    {
        using var scope = NewDisposeScope();
        long T = inputIds.shape[1];
        Device device = inputIds.device;
        ScalarType dtype = ComputeType ?? Model.TokenEmbedding.weight!.dtype;   // q and k's type: rotary in bf16 under mixed precision
        // Positions 0..T-1 even under left padding, as Hugging Face's forward does without explicit position_ids.
        var cosSin = rotary.CosSin(T, device, dtype);                            // 2 × (T, hs)
        // With activation checkpointing a layer runs again during backward, after this scope has freed the masks
        // and the cos/sin views; it then rebuilds them from the caller's attention mask (alive until backward)
        // and the rotary cache.
        var masks = new LayerMasks(m => AttentionMasks.Decoder(attentionMask, 0, T, m, device));
        (Tensor, Tensor) CosSin() => cosSin.Cos.IsInvalid ? cosSin = rotary.CosSin(T, device, dtype) : cosSin;
        Tensor x = Body(inputIds, CosSin, masks, cache: null);                  // (B, T, C)

        if (Head == ModelHead.CausalLM && LmHeadProjection() is { } projection)   // logits (B, T, vocab), when read
            return new ModelOutput(x.MoveToOuterDisposeScope(), projection);
        Tensor logits = Head switch
        {
            ModelHead.CausalLM => LmHead!.call(x),                                               // (B, T, vocab): an adapted lm_head
            _ => Score!.call(AttentionMasks.PoolLastToken(x, attentionMask)),                   // (B, num_labels)
        };
        return new ModelOutput(x.MoveToOuterDisposeScope(), logits.MoveToOuterDisposeScope());
    }

    /// <summary>Positions come from the cache: a left-padded row's first real token is at position 0.</summary>
    public override ModelOutput Forward(Tensor inputIds, Tensor? attentionMask, KeyValueCache cache)
    {
        using var scope = NewDisposeScope();
        long T = inputIds.shape[1], past = cache.Length;
        CheckDecoding(cache, Model.Layers.Count);
        Device device = inputIds.device;
        var (positions, realKeys) = cache.Begin(attentionMask, T);              // (B, T), (B, past + T)
        var cosSin = rotary.CosSinAt(positions, ComputeType ?? Model.TokenEmbedding.weight!.dtype);   // 2 × (B, 1, T, hs)
        var masks = new LayerMasks(w => AttentionMasks.Decoder(realKeys, past, T, w, device));
        Tensor x = Body(inputIds, () => cosSin, masks, cache);                  // (B, T, C)
        cache.Commit(T);
        Tensor logits = LmHeadLogits(x.narrow(1, T - 1, 1));                    // (B, 1, vocab)
        return new ModelOutput(x.MoveToOuterDisposeScope(), logits.MoveToOuterDisposeScope());
    }

    /// <summary>Embedding, decoder layers and the final RMSNorm: (B, T) ids → (B, T, C).</summary>
    Tensor Body(Tensor inputIds, Func<(Tensor, Tensor)> cosSin, LayerMasks masks, KeyValueCache? cache)
    {
        Tensor x = Model.TokenEmbedding.call(inputIds);                         // (B, T, C)
        for (int i = 0; i < Model.Layers.Count; i++)
        {
            LlamaDecoderLayer layer = Model.Layers[i];
            int? window = config.SlidingWindowOf(i);
            CacheSlot? slot = cache is null ? null : new CacheSlot(cache, i);
            x = RunBlock(h => layer.call(h, cosSin(), masks.For(window), slot), x);
        }
        return Model.FinalNorm.call(x);                                          // (B, T, C)
    }

    /// <summary>The LM head as a plain projection (tied, or an lm_head without an adapter); null when an adapter changes it.</summary>
    LanguageModelProjection? LmHeadProjection() => LmHead switch
    {
        null => new LanguageModelProjection(() => Model.TokenEmbedding.weight!, () => null, ComputeType),
        { Adapter: null } => new LanguageModelProjection(LmHead.weight, LmHead.bias, LmHead.ComputeType),
        _ => null,
    };

    /// <summary>(…, C) → (…, vocab): x · embed_tokensᵀ when tied, else lm_head (with its adapter, if any).</summary>
    Tensor LmHeadLogits(Tensor x) => LmHeadProjection() is { } projection ? projection.Logits(x) : LmHead!.call(x);

    /// <summary>
    /// The attention mask of each window size a layer uses (full causal, and Mistral's / Qwen2's sliding window),
    /// built on first use and rebuilt when activation checkpointing replays a layer after the forward's scope freed it.
    /// </summary>
    sealed class LayerMasks(Func<int?, Tensor?> build)
    {
        readonly Dictionary<int, Tensor?> built = [];

        public Tensor? For(int? window)
        {
            int key = window ?? 0;
            if (!built.TryGetValue(key, out Tensor? mask) || mask is { IsInvalid: true })
                built[key] = mask = build(window);
            return mask;
        }
    }

    /// <summary>
    /// Separate q/k/v projections; under grouped-query attention k_proj and v_proj have one block of rows per
    /// key/value head, serving <see cref="AttentionView.GroupSize"/> consecutive query heads.
    /// </summary>
    protected override IReadOnlyList<TransformerLayerView> CreateLayerViews()
    {
        var layers = new List<TransformerLayerView>();
        for (int i = 0; i < Model.Layers.Count; i++)
        {
            LlamaDecoderLayer layer = Model.Layers[i];
            LlamaAttention a = layer.SelfAttn;
            LlamaMlp m = layer.Mlp;
            string p = $"model.layers.{i}.";
            layers.Add(new TransformerLayerView(i,
                new AttentionView(i, a, new(p + "self_attn.q_proj", a.QProj), new(p + "self_attn.k_proj", a.KProj),
                    new(p + "self_attn.v_proj", a.VProj), fusedQkv: null, output: new(p + "self_attn.o_proj", a.OProj)),
                new FeedForwardView(i, m, [new(p + "mlp.gate_proj", m.GateProj), new(p + "mlp.up_proj", m.UpProj)],
                    new(p + "mlp.down_proj", m.DownProj))));
        }
        return layers;
    }

    /// <summary>score for classification; an untied lm_head for the causal LM (nothing when tied).</summary>
    public override IReadOnlyList<string> HeadModuleNames =>
        Score is not null ? ["score"] : LmHead is not null ? ["lm_head"] : [];

    /// <summary>
    /// Names are the same on both sides. Files of tied models may still carry lm_head.weight, older ones a
    /// per-layer rotary inv_freq; LlamaModel files omit "model.".
    /// </summary>
    public override HfWeightTable WeightTable
    {
        get
        {
            var entries = new List<WeightMapping>();
            void Same(string name) => entries.Add(new WeightMapping(name, name));
            void Linear(string name, bool bias) { Same(name + ".weight"); if (bias) Same(name + ".bias"); }

            Same("model.embed_tokens.weight");
            for (int i = 0; i < Model.Layers.Count; i++)
            {
                string p = $"model.layers.{i}.";
                Linear(p + "self_attn.q_proj", config.QkvBias);
                Linear(p + "self_attn.k_proj", config.QkvBias);
                Linear(p + "self_attn.v_proj", config.QkvBias);
                Linear(p + "self_attn.o_proj", config.OutputBias);
                Linear(p + "mlp.gate_proj", config.MlpBias);
                Linear(p + "mlp.up_proj", config.MlpBias);
                Linear(p + "mlp.down_proj", config.MlpBias);
                Same(p + "input_layernorm.weight");
                Same(p + "post_attention_layernorm.weight");
            }
            Same("model.norm.weight");
            if (LmHead is not null) Same("lm_head.weight");
            if (Score is not null) Same("score.weight");

            var ignored = new List<string> { @"^(model\.)?layers\.\d+\.self_attn\.rotary_emb\.inv_freq$" };
            if (Head == ModelHead.CausalLM && LmHead is null) ignored.Add(@"^lm_head\.weight$");   // tied copy
            return new HfWeightTable
            {
                Entries = entries,
                IgnoredKeyPatterns = ignored,
                AlternativePrefixes = [("model.", "")],
            };
        }
    }

    /// <summary>Hugging Face's init: N(0, 0.02) for linear and embedding weights, zero biases, RMSNorm weights 1.</summary>
    void InitWeights()
    {
        const double std = 0.02;
        using var noGrad = no_grad();
        foreach (var (_, linear) in NamedLinears())
        {
            nn.init.normal_(linear.weight, 0, std);
            if (linear.bias is not null) nn.init.zeros_(linear.bias);
        }
        nn.init.normal_(Model.TokenEmbedding.weight!, 0, std);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) rotary.Dispose();
        base.Dispose(disposing);
    }
}
