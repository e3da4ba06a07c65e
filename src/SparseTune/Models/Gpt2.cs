using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace SparseTune.Models;

// GPT-2 (Radford et al. 2019), module for module as Hugging Face's GPT2LMHeadModel and
// GPT2ForSequenceClassification, so state_dict() keys are the checkpoint keys:
//
//   transformer.wte, transformer.wpe          token and learned position embeddings
//   transformer.h.{i}.ln_1 → attn → (+)       pre-norm residual blocks
//   transformer.h.{i}.ln_2 → mlp  → (+)
//   transformer.ln_f                           final LayerNorm (last_hidden_state is taken after it)
//   (lm_head tied to wte: no parameter)  |  score (classification, no bias)
//
// Hugging Face stores c_attn, c_proj and c_fc as Conv1D with weight (in, out); here they are TunableLinear
// with weight (out, in), and the weight table marks those four weights per block as transposed.
// Layer norms use TorchSharp's nn.LayerNorm, which is what GPT-2 uses (with bias).

/// <summary>Multi-head causal self-attention; c_attn computes q, k and v for all heads in one matmul.</summary>
public sealed class Gpt2Attention : nn.Module<Tensor, Tensor?, CacheSlot?, Tensor>, IHeadedAttention
{
    [ComponentName(Name = "c_attn")] public readonly TunableLinear QkvProj;   // C → 3·nh·hs
    [ComponentName(Name = "c_proj")] public readonly TunableLinear OutProj;   // nh·hs → C
    [ComponentName(Name = "resid_dropout")] readonly Dropout residDropout;
    readonly double attnPdrop;   // dropout on attention probabilities (see Nn/Attention)

    /// <summary>
    /// Heads currently present. Head pruning lowers it together with the rows of c_attn and the columns of
    /// c_proj, so forward reads it from here, never from the config.
    /// </summary>
    public int NumHeads;
    public readonly int HeadDim;
    Tensor? headGate;

    /// <summary>(nh) multiplier of each head's context before c_proj; null: ungated. See <see cref="AttentionView.HeadGate"/>.</summary>
    public Tensor? HeadGate { get => headGate; set => headGate = Gates.Check(value, NumHeads, "GPT-2 HeadGate"); }

    int IHeadedAttention.NumHeads => NumHeads;
    int IHeadedAttention.NumKeyValueHeads => NumHeads;
    int IHeadedAttention.HeadDim => HeadDim;
    void IHeadedAttention.SetHeadCounts(int heads, int keyValueHeads) => NumHeads = heads;

    public Gpt2Attention(Gpt2Config config) : base(nameof(Gpt2Attention))
    {
        NumHeads = config.NHead;
        HeadDim = config.HeadDim;
        QkvProj = new TunableLinear(config.NEmbd, 3 * config.NEmbd);
        OutProj = new TunableLinear(config.NEmbd, config.NEmbd);
        residDropout = nn.Dropout(config.ResidPdrop);
        attnPdrop = config.AttnPdrop;
        RegisterComponents();
    }

    /// <param name="x">(B, T, C)</param>
    /// <param name="mask">boolean (B, 1, T, S) from <see cref="AttentionMasks"/>; null: plain causal.</param>
    /// <param name="cache">While decoding: this layer's key/value cache; k and v then cover all S cached slots.</param>
    public override Tensor forward(Tensor x, Tensor? mask, CacheSlot? cache)
    {
        long B = x.shape[0], T = x.shape[1];
        long width = NumHeads * HeadDim;
        Tensor[] qkv = QkvProj.call(x).split(width, dim: 2);                   // 3 × (B, T, nh·hs)
        Tensor q = qkv[0].view(B, T, NumHeads, HeadDim).transpose(1, 2);        // (B, nh, T, hs)
        Tensor k = qkv[1].view(B, T, NumHeads, HeadDim).transpose(1, 2);        // (B, nh, T, hs)
        Tensor v = qkv[2].view(B, T, NumHeads, HeadDim).transpose(1, 2);        // (B, nh, T, hs)
        if (cache is { } slot) (k, v) = slot.Update(k, v);                      // 2 × (B, nh, S, hs)
        Tensor y = Attention.Compute(q, k, v, mask, causal: mask is null,
            dropout: training ? attnPdrop : 0.0);                               // (B, nh, T, hs)
        if (headGate is not null) y = y * headGate.view(1, NumHeads, 1, 1);       // (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, width);                             // (B, T, nh·hs)
        return residDropout.call(OutProj.call(y));
    }
}

/// <summary>Position-wise feed-forward: c_proj(act(c_fc(x))), 4·C wide unless n_inner says otherwise.</summary>
public sealed class Gpt2Mlp : nn.Module<Tensor, Tensor>, IGatedFeedForward
{
    [ComponentName(Name = "c_fc")] public readonly TunableLinear UpProj;      // C → inner
    [ComponentName(Name = "c_proj")] public readonly TunableLinear DownProj;  // inner → C
    [ComponentName(Name = "dropout")] readonly Dropout dropout;
    readonly string activation;
    Tensor? neuronGate;

    /// <summary>(inner) multiplier of each neuron's activation before c_proj; null: ungated. See <see cref="FeedForwardView.NeuronGate"/>.</summary>
    public Tensor? NeuronGate { get => neuronGate; set => neuronGate = Gates.Check(value, DownProj.InFeatures, "GPT-2 NeuronGate"); }

    public Gpt2Mlp(Gpt2Config config) : base(nameof(Gpt2Mlp))
    {
        UpProj = new TunableLinear(config.NEmbd, config.IntermediateSize);
        DownProj = new TunableLinear(config.IntermediateSize, config.NEmbd);
        dropout = nn.Dropout(config.ResidPdrop);
        activation = config.ActivationFunction;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        Tensor h = Activations.Apply(activation, UpProj.call(x));   // (B, T, inner)
        if (neuronGate is not null) h = h * neuronGate;
        return dropout.call(DownProj.call(h));
    }
}

/// <summary>
/// One pre-norm transformer block:
/// <code>
///   x ──┬── ln_1 ── attn ──(+)──┬── ln_2 ── mlp ──(+)──▶
///       └────────────────────┘  └───────────────────┘
/// </code>
/// </summary>
public sealed class Gpt2Block : nn.Module<Tensor, Tensor?, CacheSlot?, Tensor>
{
    [ComponentName(Name = "ln_1")] public readonly LayerNorm Ln1;
    [ComponentName(Name = "attn")] public readonly Gpt2Attention Attn;
    [ComponentName(Name = "ln_2")] public readonly LayerNorm Ln2;
    [ComponentName(Name = "mlp")] public readonly Gpt2Mlp Mlp;

    public Gpt2Block(Gpt2Config config) : base(nameof(Gpt2Block))
    {
        Ln1 = nn.LayerNorm(config.NEmbd, config.LayerNormEpsilon);
        Attn = new Gpt2Attention(config);
        Ln2 = nn.LayerNorm(config.NEmbd, config.LayerNormEpsilon);
        Mlp = new Gpt2Mlp(config);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor? mask, CacheSlot? cache)
    {
        x = x + Attn.call(Ln1.call(x), mask, cache);
        return x + Mlp.call(Ln2.call(x));
    }
}

/// <summary>
/// The body, Hugging Face's GPT2Model (the "transformer." prefix). A container like nanoGPT's
/// <c>transformer</c> ModuleDict: <see cref="Gpt2Transformer.Forward"/> runs it, so that blocks can go through
/// activation checkpointing.
/// </summary>
public sealed class Gpt2Model : nn.Module
{
    [ComponentName(Name = "wte")] public readonly Embedding TokenEmbedding;     // (vocab, C)
    [ComponentName(Name = "wpe")] public readonly Embedding PositionEmbedding;  // (n_positions, C)
    [ComponentName(Name = "drop")] public readonly Dropout EmbeddingDropout;
    [ComponentName(Name = "h")] public readonly ModuleList<Gpt2Block> Blocks;
    [ComponentName(Name = "ln_f")] public readonly LayerNorm FinalNorm;

    public Gpt2Model(Gpt2Config config) : base(nameof(Gpt2Model))
    {
        TokenEmbedding = nn.Embedding(config.VocabSize, config.NEmbd);
        PositionEmbedding = nn.Embedding(config.NPositions, config.NEmbd);
        EmbeddingDropout = nn.Dropout(config.EmbdPdrop);
        Blocks = nn.ModuleList(Enumerable.Range(0, config.NLayer).Select(_ => new Gpt2Block(config)).ToArray());
        FinalNorm = nn.LayerNorm(config.NEmbd, config.LayerNormEpsilon);
        RegisterComponents();
    }
}

/// <summary>GPT-2 with a causal-LM head (tied to wte) or a sequence-classification head (score).</summary>
public sealed class Gpt2Transformer : TransformerModel
{
    [ComponentName(Name = "transformer")] public readonly Gpt2Model Transformer;
    /// <summary>Classification head (num_labels, C), no bias; null for the causal LM.</summary>
    [ComponentName(Name = "score")] public readonly TunableLinear? Score;

    readonly Gpt2Config config;

    public Gpt2Transformer(Gpt2Config config, ModelHead head) : base(nameof(Gpt2Transformer), config, head)
    {
        if (head == ModelHead.MaskedLM) throw new ModelConfigException("GPT-2 has no masked-LM head");
        EncoderOnlyHeads.Refuse(config, head);
        if (head == ModelHead.SequenceClassification && config.NumLabels == 0)
            throw new ModelConfigException("a GPT-2 classification head needs id2label in the config");
        this.config = config;
        Transformer = new Gpt2Model(config);
        if (head == ModelHead.SequenceClassification)
            Score = new TunableLinear(config.NEmbd, config.NumLabels, hasBias: false);
        RegisterComponents();
        InitWeights();
        ApplyConfiguredPruning();
    }

    public override ModelOutput Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null)
    {
        using var scope = NewDisposeScope();
        long T = inputIds.shape[1];
        if (T > config.NPositions)
            throw new ArgumentException($"sequence length {T} exceeds n_positions {config.NPositions}", nameof(inputIds));

        Tensor? mask = AttentionMasks.CausalWithPadding(attentionMask);       // (B, 1, T, T) or null
        // With activation checkpointing a block runs again during backward, after this scope has freed the
        // mask; it then rebuilds it from the caller's attention mask, which lives until backward.
        Tensor? Mask() => mask is { IsInvalid: true } ? mask = AttentionMasks.CausalWithPadding(attentionMask) : mask;
        // Positions 0..T-1 whatever the padding, as Hugging Face's forward does.
        Tensor positions = arange(T, dtype: ScalarType.Int64, device: inputIds.device);   // (T)
        Tensor x = Body(inputIds, positions, Mask, cache: null);              // (B, T, C)

        if (Head == ModelHead.CausalLM)                                         // logits (B, T, vocab) = x · wteᵀ, when read
            return new ModelOutput(x.MoveToOuterDisposeScope(), LmHead);
        Tensor logits = Score!.call(AttentionMasks.PoolLastToken(x, attentionMask));   // (B, num_labels)
        return new ModelOutput(x.MoveToOuterDisposeScope(), logits.MoveToOuterDisposeScope());
    }

    /// <summary>Positions come from the cache: a left-padded row's first real token is at position 0.</summary>
    public override ModelOutput Forward(Tensor inputIds, Tensor? attentionMask, KeyValueCache cache)
    {
        using var scope = NewDisposeScope();
        long T = inputIds.shape[1], past = cache.Length;
        CheckDecoding(cache, Transformer.Blocks.Count);
        var (positions, realKeys) = cache.Begin(attentionMask, T);            // (B, T), (B, past + T)
        if (positions.max().item<long>() >= config.NPositions)
            throw new ArgumentException($"the sequence grows past n_positions {config.NPositions}", nameof(inputIds));
        Tensor? mask = AttentionMasks.Decoder(realKeys, past, T, null, inputIds.device);   // (B, 1, T, past + T)
        Tensor x = Body(inputIds, positions, () => mask, cache);             // (B, T, C)
        cache.Commit(T);
        Tensor logits = LmHead.Logits(x.narrow(1, T - 1, 1));                  // (B, 1, vocab)
        return new ModelOutput(x.MoveToOuterDisposeScope(), logits.MoveToOuterDisposeScope());
    }

    /// <summary>The LM head, tied to wte: logits = x · wteᵀ.</summary>
    LanguageModelProjection LmHead => new(() => Transformer.TokenEmbedding.weight!, () => null, ComputeType);

    /// <summary>Embeddings, blocks and the final LayerNorm: (B, T) ids → (B, T, C).</summary>
    /// <param name="positions">(T) or (B, T) position of each token.</param>
    Tensor Body(Tensor inputIds, Tensor positions, Func<Tensor?> mask, KeyValueCache? cache)
    {
        Tensor x = Transformer.TokenEmbedding.call(inputIds)
                 + Transformer.PositionEmbedding.call(positions);             // (B, T, C)
        x = Transformer.EmbeddingDropout.call(x);
        for (int i = 0; i < Transformer.Blocks.Count; i++)
        {
            Gpt2Block block = Transformer.Blocks[i];
            CacheSlot? slot = cache is null ? null : new CacheSlot(cache, i);
            x = RunBlock(h => block.call(h, mask(), slot), x);
        }
        return Transformer.FinalNorm.call(x);                                  // (B, T, C)
    }

    public override IReadOnlyList<string> HeadModuleNames => Head == ModelHead.SequenceClassification ? ["score"] : [];

    /// <summary>c_attn computes q, k and v for all heads: head pruning keeps the same rows in each of its three blocks.</summary>
    protected override IReadOnlyList<TransformerLayerView> CreateLayerViews()
    {
        var layers = new List<TransformerLayerView>();
        for (int i = 0; i < Transformer.Blocks.Count; i++)
        {
            Gpt2Block block = Transformer.Blocks[i];
            string p = $"transformer.h.{i}.";
            layers.Add(new TransformerLayerView(i,
                new AttentionView(i, block.Attn, null, null, null,
                    fusedQkv: new(p + "attn.c_attn", block.Attn.QkvProj), output: new(p + "attn.c_proj", block.Attn.OutProj)),
                new FeedForwardView(i, block.Mlp, [new(p + "mlp.c_fc", block.Mlp.UpProj)], new(p + "mlp.c_proj", block.Mlp.DownProj))));
        }
        return layers;
    }

    /// <summary>
    /// Names are the same on both sides; the Conv1D weights are transposed. Files may carry the attention-mask
    /// buffers h.N.attn.bias / masked_bias and a tied lm_head.weight, and GPT2Model files omit "transformer.".
    /// </summary>
    public override HfWeightTable WeightTable
    {
        get
        {
            var entries = new List<WeightMapping>();
            void Same(string name) => entries.Add(new WeightMapping(name, name));
            void Conv1D(string name) => entries.Add(new WeightMapping(name, name, Transposed: true));

            Same("transformer.wte.weight");
            Same("transformer.wpe.weight");
            for (int i = 0; i < Transformer.Blocks.Count; i++)
            {
                string p = $"transformer.h.{i}.";
                Same(p + "ln_1.weight"); Same(p + "ln_1.bias");
                Conv1D(p + "attn.c_attn.weight"); Same(p + "attn.c_attn.bias");
                Conv1D(p + "attn.c_proj.weight"); Same(p + "attn.c_proj.bias");
                Same(p + "ln_2.weight"); Same(p + "ln_2.bias");
                Conv1D(p + "mlp.c_fc.weight"); Same(p + "mlp.c_fc.bias");
                Conv1D(p + "mlp.c_proj.weight"); Same(p + "mlp.c_proj.bias");
            }
            Same("transformer.ln_f.weight");
            Same("transformer.ln_f.bias");
            if (Score is not null) Same("score.weight");

            return new HfWeightTable
            {
                Entries = entries,
                IgnoredKeyPatterns = [@"^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$", @"^lm_head\.weight$"],
                AlternativePrefixes = [("transformer.", "")],
            };
        }
    }

    /// <summary>
    /// Hugging Face's GPT-2 init: N(0, 0.02) for linear and embedding weights, zero biases, LayerNorm (1, 0),
    /// and the residual projections (c_proj) scaled by 1/√(2·n_layer) (GPT-2 paper, §2.3).
    /// </summary>
    void InitWeights()
    {
        const double std = 0.02;
        using var noGrad = no_grad();
        foreach (var (name, linear) in NamedLinears())
        {
            double s = name.EndsWith(".c_proj", StringComparison.Ordinal) ? std / Math.Sqrt(2.0 * config.NLayer) : std;
            nn.init.normal_(linear.weight, 0, s);
            if (linear.bias is not null) nn.init.zeros_(linear.bias);
        }
        nn.init.normal_(Transformer.TokenEmbedding.weight!, 0, std);
        nn.init.normal_(Transformer.PositionEmbedding.weight!, 0, std);
    }
}
