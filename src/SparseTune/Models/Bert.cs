using SparseTune.Nn;
using TorchSharp;
using TorchSharp.Modules;
using TorchSharp.Utils;
using static TorchSharp.torch;

namespace SparseTune.Models;

// BERT (Devlin et al. 2019) and RoBERTa (Liu et al. 2019), module for module as Hugging Face's
// Bert/RobertaFor{SequenceClassification, MaskedLM, QuestionAnswering, MultipleChoice}, so state_dict() keys are the
// checkpoint keys:
//
//   {bert|roberta}.embeddings                 word + position + token-type embeddings → LayerNorm
//   {bert|roberta}.encoder.layer.{i}          post-norm residual blocks:
//       attention.self → attention.output (dense, + x, LayerNorm)
//       intermediate (dense, act) → output (dense, + x, LayerNorm)
//   {bert|roberta}.pooler                      first token → dense → tanh (BERT classification, multiple choice)
//   classifier                                 BERT: linear on the pooled token;
//                                              RoBERTa: dense → tanh → out_proj on the first token;
//                                              multiple choice (both): linear (1, C) on the pooled token of each choice
//   qa_outputs                                 extractive QA: linear (2, C) on every token → start, end logits
//   cls.predictions | lm_head                  masked-LM head; its decoder is tied to word_embeddings
//
// last_hidden_state is the encoder output, before the pooler. The two families differ in where the body
// sits (bert. / roberta.), in position ids (RoBERTa counts from pad_token_id + 1 and skips padding), in the
// classification head and in the names of the masked-LM head; the blocks are shared as they are in Hugging Face.
// Hugging Face's BertForMaskedLM and RobertaFor* are built without a pooler (add_pooling_layer=False), and
// checkpoints written by BertForPreTraining still carry one: the weight table ignores it there.

/// <summary>Token, position and token-type embeddings, summed, then LayerNorm and dropout.</summary>
public sealed class BertEmbeddings : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    [ComponentName(Name = "word_embeddings")] public readonly Embedding WordEmbeddings;           // (vocab, C)
    [ComponentName(Name = "position_embeddings")] public readonly Embedding PositionEmbeddings;   // (max_positions, C)
    [ComponentName(Name = "token_type_embeddings")] public readonly Embedding TokenTypeEmbeddings; // (type_vocab, C)
    [ComponentName(Name = "LayerNorm")] public readonly LayerNorm LayerNorm;
    [ComponentName(Name = "dropout")] readonly Dropout dropout;

    public BertEmbeddings(BertConfig config, long padTokenId) : base(nameof(BertEmbeddings))
    {
        // padding_idx as in Hugging Face: the pad row gets no gradient (and RoBERTa's pad position is never trained).
        WordEmbeddings = nn.Embedding(config.VocabSize, config.Hidden, padding_idx: padTokenId);
        PositionEmbeddings = config.IsRoberta
            ? nn.Embedding(config.MaxPositionEmbeddings, config.Hidden, padding_idx: padTokenId)
            : nn.Embedding(config.MaxPositionEmbeddings, config.Hidden);
        TokenTypeEmbeddings = nn.Embedding(config.TypeVocabSize, config.Hidden);
        LayerNorm = nn.LayerNorm(config.Hidden, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    /// <param name="inputIds">(B, T)</param>
    /// <param name="positionIds">(B, T) or (1, T)</param>
    /// <param name="tokenTypeIds">(B, T)</param>
    /// <returns>(B, T, C)</returns>
    public override Tensor forward(Tensor inputIds, Tensor positionIds, Tensor tokenTypeIds)
    {
        Tensor x = WordEmbeddings.call(inputIds)
                 + PositionEmbeddings.call(positionIds)
                 + TokenTypeEmbeddings.call(tokenTypeIds);                      // (B, T, C)
        return dropout.call(LayerNorm.call(x));
    }
}

/// <summary>
/// Bidirectional multi-head self-attention (no causal mask): every token attends every real token. Returns the
/// heads' concatenated context, before the output projection.
/// </summary>
public sealed class BertSelfAttention : nn.Module<Tensor, Tensor?, Tensor>, IHeadedAttention
{
    [ComponentName(Name = "query")] public readonly TunableLinear Query;   // C → nh·hs
    [ComponentName(Name = "key")] public readonly TunableLinear Key;       // C → nh·hs
    [ComponentName(Name = "value")] public readonly TunableLinear Value;   // C → nh·hs
    readonly double attnPdrop;   // dropout on attention probabilities (see Nn/Attention)

    /// <summary>
    /// Heads currently present. Head pruning lowers it together with the rows of query/key/value and the
    /// columns of attention.output.dense, so forward reads it from here, never from the config.
    /// </summary>
    public int NumHeads;
    public readonly int HeadDim;
    Tensor? headGate;

    /// <summary>(nh) multiplier of each head's context before attention.output.dense; null: ungated. See <see cref="AttentionView.HeadGate"/>.</summary>
    public Tensor? HeadGate { get => headGate; set => headGate = Gates.Check(value, NumHeads, "BERT HeadGate"); }

    int IHeadedAttention.NumHeads => NumHeads;
    int IHeadedAttention.NumKeyValueHeads => NumHeads;
    int IHeadedAttention.HeadDim => HeadDim;
    void IHeadedAttention.SetHeadCounts(int heads, int keyValueHeads) => NumHeads = heads;

    public BertSelfAttention(BertConfig config) : base(nameof(BertSelfAttention))
    {
        NumHeads = config.Heads;
        HeadDim = config.HeadDim;
        Query = new TunableLinear(config.Hidden, NumHeads * HeadDim);
        Key = new TunableLinear(config.Hidden, NumHeads * HeadDim);
        Value = new TunableLinear(config.Hidden, NumHeads * HeadDim);
        attnPdrop = config.AttentionProbsDropoutProb;
        RegisterComponents();
    }

    /// <param name="x">(B, T, C)</param>
    /// <param name="mask">additive (B, 1, 1, T) from <see cref="BertTransformer.KeyPaddingMask"/>; null: no padding.</param>
    /// <returns>(B, T, nh·hs)</returns>
    public override Tensor forward(Tensor x, Tensor? mask)
    {
        long B = x.shape[0], T = x.shape[1];
        Tensor q = Query.call(x).view(B, T, NumHeads, HeadDim).transpose(1, 2);   // (B, nh, T, hs)
        Tensor k = Key.call(x).view(B, T, NumHeads, HeadDim).transpose(1, 2);     // (B, nh, T, hs)
        Tensor v = Value.call(x).view(B, T, NumHeads, HeadDim).transpose(1, 2);   // (B, nh, T, hs)
        // softmax(q kᵀ / √hs + mask) v, as BertSelfAttention computes it.
        Tensor y = Attention.Compute(q, k, v, mask, causal: false, dropout: training ? attnPdrop : 0.0);   // (B, nh, T, hs)
        if (headGate is not null) y = y * headGate.view(1, NumHeads, 1, 1);         // (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, NumHeads * HeadDim);               // (B, T, nh·hs)
    }
}

/// <summary>
/// Post-norm residual: LayerNorm(dropout(dense(h)) + x). HF's BertSelfOutput (after attention, nh·hs → C) and
/// BertOutput (after the intermediate layer, I → C) are this same module with different input widths.
/// </summary>
public sealed class BertResidualOutput : nn.Module<Tensor, Tensor, Tensor>
{
    [ComponentName(Name = "dense")] public readonly TunableLinear Dense;   // inFeatures → C
    [ComponentName(Name = "LayerNorm")] public readonly LayerNorm LayerNorm;
    [ComponentName(Name = "dropout")] readonly Dropout dropout;

    public BertResidualOutput(BertConfig config, int inFeatures) : base(nameof(BertResidualOutput))
    {
        Dense = new TunableLinear(inFeatures, config.Hidden);
        LayerNorm = nn.LayerNorm(config.Hidden, config.LayerNormEps);
        dropout = nn.Dropout(config.HiddenDropoutProb);
        RegisterComponents();
    }

    /// <param name="h">(B, T, inFeatures): the attention context or the intermediate activation</param>
    /// <param name="residual">(B, T, C), the sub-block's input</param>
    public override Tensor forward(Tensor h, Tensor residual) =>
        LayerNorm.call(dropout.call(Dense.call(h)) + residual);
}

/// <summary>Self-attention and its output projection with residual and LayerNorm ("attention.self", "attention.output").</summary>
public sealed class BertAttention : nn.Module<Tensor, Tensor?, Tensor>
{
    [ComponentName(Name = "self")] public readonly BertSelfAttention Self;
    [ComponentName(Name = "output")] public readonly BertResidualOutput Output;   // nh·hs → C

    public BertAttention(BertConfig config) : base(nameof(BertAttention))
    {
        Self = new BertSelfAttention(config);
        Output = new BertResidualOutput(config, config.Hidden);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor? mask) => Output.call(Self.call(x, mask), x);
}

/// <summary>The feed-forward's first half: act(dense(x)), C → intermediate_size.</summary>
public sealed class BertIntermediate : nn.Module<Tensor, Tensor>, IGatedFeedForward
{
    [ComponentName(Name = "dense")] public readonly TunableLinear Dense;   // C → I
    readonly string activation;
    Tensor? neuronGate;

    /// <summary>
    /// (I) multiplier of each neuron's activation, applied here at the end of the intermediate layer, i.e. just
    /// before output.dense; null: ungated. See <see cref="FeedForwardView.NeuronGate"/>.
    /// </summary>
    public Tensor? NeuronGate { get => neuronGate; set => neuronGate = Gates.Check(value, Dense.OutFeatures, "BERT NeuronGate"); }

    public BertIntermediate(BertConfig config) : base(nameof(BertIntermediate))
    {
        Dense = new TunableLinear(config.Hidden, config.Intermediate);
        activation = config.HiddenAct;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        Tensor h = Activations.Apply(activation, Dense.call(x));   // (B, T, I)
        return neuronGate is null ? h : h * neuronGate;
    }
}

/// <summary>
/// One post-norm encoder layer (the LayerNorms sit after each residual sum, unlike GPT-2):
/// <code>
///   x ──┬── attention.self ── attention.output.dense ──(+)── LayerNorm ──┬── intermediate ── output.dense ──(+)── LayerNorm ──▶
///       └──────────────────────────────────────────────┘               └────────────────────────────────┘
/// </code>
/// </summary>
public sealed class BertLayer : nn.Module<Tensor, Tensor?, Tensor>
{
    [ComponentName(Name = "attention")] public readonly BertAttention Attention;
    [ComponentName(Name = "intermediate")] public readonly BertIntermediate Intermediate;
    [ComponentName(Name = "output")] public readonly BertResidualOutput Output;   // I → C

    public BertLayer(BertConfig config) : base(nameof(BertLayer))
    {
        Attention = new BertAttention(config);
        Intermediate = new BertIntermediate(config);
        Output = new BertResidualOutput(config, config.Intermediate);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor? mask)
    {
        Tensor a = Attention.call(x, mask);                 // (B, T, C)
        return Output.call(Intermediate.call(a), a);        // (B, T, C)
    }
}

/// <summary>The stack of layers ("encoder.layer.{i}"); run by <see cref="BertTransformer.Forward"/> for checkpointing.</summary>
public sealed class BertEncoder : nn.Module
{
    [ComponentName(Name = "layer")] public readonly ModuleList<BertLayer> Layers;

    public BertEncoder(BertConfig config) : base(nameof(BertEncoder))
    {
        Layers = nn.ModuleList(Enumerable.Range(0, config.Layers).Select(_ => new BertLayer(config)).ToArray());
        RegisterComponents();
    }
}

/// <summary>tanh(dense(x[:, 0])): the first ([CLS]) token's summary that BERT's classifier reads.</summary>
public sealed class BertPooler : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "dense")] public readonly TunableLinear Dense;   // C → C

    public BertPooler(BertConfig config) : base(nameof(BertPooler))
    {
        Dense = new TunableLinear(config.Hidden, config.Hidden);
        RegisterComponents();
    }

    /// <param name="x">(B, T, C)</param>
    /// <returns>(B, C)</returns>
    public override Tensor forward(Tensor x) => Dense.call(x.select(1, 0)).tanh();
}

/// <summary>
/// The body, Hugging Face's BertModel / RobertaModel (the "bert." or "roberta." prefix). A container:
/// <see cref="BertTransformer.Forward"/> runs it, so that layers can go through activation checkpointing.
/// </summary>
public sealed class BertModel : nn.Module
{
    [ComponentName(Name = "embeddings")] public readonly BertEmbeddings Embeddings;
    [ComponentName(Name = "encoder")] public readonly BertEncoder Encoder;
    /// <summary>Null where Hugging Face builds the body with add_pooling_layer=False.</summary>
    [ComponentName(Name = "pooler")] public readonly BertPooler? Pooler;

    public BertModel(BertConfig config, long padTokenId, bool addPoolingLayer) : base(nameof(BertModel))
    {
        Embeddings = new BertEmbeddings(config, padTokenId);
        Encoder = new BertEncoder(config);
        if (addPoolingLayer) Pooler = new BertPooler(config);
        RegisterComponents();
    }
}

/// <summary>
/// RoBERTa's classifier ("classifier.dense", "classifier.out_proj") on the first (&lt;s&gt;) token:
/// out_proj(dropout(tanh(dense(dropout(x[:, 0]))))). It replaces BERT's pooler.
/// </summary>
public sealed class RobertaClassificationHead : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "dense")] public readonly TunableLinear Dense;      // C → C
    [ComponentName(Name = "out_proj")] public readonly TunableLinear OutProj; // C → num_labels
    [ComponentName(Name = "dropout")] readonly Dropout dropout;

    public RobertaClassificationHead(BertConfig config) : base(nameof(RobertaClassificationHead))
    {
        Dense = new TunableLinear(config.Hidden, config.Hidden);
        OutProj = new TunableLinear(config.Hidden, config.NumLabels);
        dropout = nn.Dropout(config.ClassifierDropout ?? config.HiddenDropoutProb);
        RegisterComponents();
    }

    /// <param name="x">(B, T, C)</param>
    /// <returns>(B, num_labels)</returns>
    public override Tensor forward(Tensor x)
    {
        Tensor h = dropout.call(x.select(1, 0));            // (B, C)
        h = dropout.call(Dense.call(h).tanh());
        return OutProj.call(h);
    }
}

/// <summary>BERT's "cls.predictions.transform": LayerNorm(act(dense(x))) with the config's hidden_act.</summary>
public sealed class BertPredictionHeadTransform : nn.Module<Tensor, Tensor>
{
    [ComponentName(Name = "dense")] public readonly TunableLinear Dense;   // C → C
    [ComponentName(Name = "LayerNorm")] public readonly LayerNorm LayerNorm;
    readonly string activation;

    public BertPredictionHeadTransform(BertConfig config) : base(nameof(BertPredictionHeadTransform))
    {
        Dense = new TunableLinear(config.Hidden, config.Hidden);
        LayerNorm = nn.LayerNorm(config.Hidden, config.LayerNormEps);
        activation = config.HiddenAct;
        RegisterComponents();
    }

    // LayerNorm in float32 under mixed precision (the dense output is bf16 then).
    public override Tensor forward(Tensor x) => LayerNorm.call(MixedPrecision.To(Activations.Apply(activation, Dense.call(x)), ScalarType.Float32));
}

/// <summary>
/// BERT's "cls.predictions": transform, then the decoder x · Eᵀ + bias with E the word embedding matrix (tied:
/// the decoder has no weight of its own; Hugging Face's cls.predictions.decoder.bias is this same bias).
/// </summary>
public sealed class BertLMPredictionHead : nn.Module<Tensor, Tensor, Tensor>
{
    [ComponentName(Name = "transform")] public readonly BertPredictionHeadTransform Transform;
    [ComponentName(Name = "bias")] public Parameter Bias;   // (vocab)

    public BertLMPredictionHead(BertConfig config) : base(nameof(BertLMPredictionHead))
    {
        Transform = new BertPredictionHeadTransform(config);
        Bias = new Parameter(zeros(config.VocabSize));
        RegisterComponents();
    }

    /// <param name="x">(B, T, C)</param>
    /// <param name="wordEmbeddings">(vocab, C), the tied decoder weight</param>
    /// <returns>(B, T, vocab)</returns>
    public override Tensor forward(Tensor x, Tensor wordEmbeddings) =>
        MixedPrecision.Linear(Transform.call(x), wordEmbeddings, Bias, Transform.Dense.ComputeType);
}

/// <summary>The "cls" container of BertForMaskedLM (BertOnlyMLMHead), holding "predictions".</summary>
public sealed class BertOnlyMLMHead : nn.Module<Tensor, Tensor, Tensor>
{
    [ComponentName(Name = "predictions")] public readonly BertLMPredictionHead Predictions;

    public BertOnlyMLMHead(BertConfig config) : base(nameof(BertOnlyMLMHead))
    {
        Predictions = new BertLMPredictionHead(config);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x, Tensor wordEmbeddings) => Predictions.call(x, wordEmbeddings);
}

/// <summary>
/// RoBERTa's "lm_head": layer_norm(gelu(dense(x))) · Eᵀ + bias, E the tied word embeddings. Hugging Face uses
/// exact GELU here whatever hidden_act says.
/// </summary>
public sealed class RobertaLMHead : nn.Module<Tensor, Tensor, Tensor>
{
    [ComponentName(Name = "dense")] public readonly TunableLinear Dense;   // C → C
    [ComponentName(Name = "layer_norm")] public readonly LayerNorm LayerNorm;
    [ComponentName(Name = "bias")] public Parameter Bias;                  // (vocab)

    public RobertaLMHead(BertConfig config) : base(nameof(RobertaLMHead))
    {
        Dense = new TunableLinear(config.Hidden, config.Hidden);
        LayerNorm = nn.LayerNorm(config.Hidden, config.LayerNormEps);
        Bias = new Parameter(zeros(config.VocabSize));
        RegisterComponents();
    }

    /// <param name="x">(B, T, C)</param>
    /// <param name="wordEmbeddings">(vocab, C), the tied decoder weight</param>
    /// <returns>(B, T, vocab)</returns>
    public override Tensor forward(Tensor x, Tensor wordEmbeddings) =>
        MixedPrecision.Linear(LayerNorm.call(MixedPrecision.To(Dense.call(x).gelu(), ScalarType.Float32)), wordEmbeddings, Bias, Dense.ComputeType);
}

/// <summary>BERT or RoBERTa with a sequence-classification head or a masked-LM head (tied to word_embeddings).</summary>
public sealed class BertTransformer : TransformerModel
{
    // Exactly one body field is set; its name is the checkpoint prefix.
    [ComponentName(Name = "bert")] readonly BertModel? bert;
    [ComponentName(Name = "roberta")] readonly BertModel? roberta;
    /// <summary>Classification: BERT's linear (num_labels, C) or a <see cref="RobertaClassificationHead"/>; null for MLM.</summary>
    [ComponentName(Name = "classifier")] public readonly nn.Module<Tensor, Tensor>? Classifier;
    /// <summary>BERT's dropout between pooler and classifier (RoBERTa's head holds its own).</summary>
    [ComponentName(Name = "dropout")] readonly Dropout? classifierDropout;
    /// <summary>BERT's masked-LM head; null otherwise.</summary>
    [ComponentName(Name = "cls")] public readonly BertOnlyMLMHead? Cls;
    /// <summary>RoBERTa's masked-LM head; null otherwise.</summary>
    [ComponentName(Name = "lm_head")] public readonly RobertaLMHead? LmHead;
    /// <summary>Extractive QA's span head (2, C): start and end logits of every token; null otherwise.</summary>
    [ComponentName(Name = "qa_outputs")] public readonly TunableLinear? QaOutputs;

    readonly BertConfig config;
    readonly long padTokenId;

    public BertTransformer(BertConfig config, ModelHead head) : base(nameof(BertTransformer), config, head)
    {
        if (head == ModelHead.CausalLM) throw new ModelConfigException($"{config.ModelType} has no causal-LM head");
        if (head == ModelHead.SequenceClassification && config.NumLabels == 0)
            throw new ModelConfigException($"a {config.ModelType} classification head needs id2label in the config");
        if (config.ModelType is not ("bert" or "roberta"))
            throw new ModelConfigException($"BertTransformer serves bert and roberta, not '{config.ModelType}'");
        this.config = config;
        // Hugging Face's defaults: BertConfig pads with 0, RobertaConfig with 1.
        padTokenId = config.PadTokenId ?? (config.IsRoberta ? 1 : 0);
        if (padTokenId < 0 || padTokenId >= config.VocabSize)
            throw new ModelConfigException($"pad_token_id {padTokenId} is outside the vocabulary (vocab_size {config.VocabSize})");

        // BertForSequenceClassification and both …ForMultipleChoice build the pooler; the masked-LM and QA models and
        // RobertaForSequenceClassification do not.
        bool pooler = head == ModelHead.MultipleChoice || (!config.IsRoberta && head == ModelHead.SequenceClassification);
        var body = new BertModel(config, padTokenId, addPoolingLayer: pooler);
        if (config.IsRoberta) roberta = body; else bert = body;

        if (head == ModelHead.SequenceClassification)
        {
            if (config.IsRoberta) Classifier = new RobertaClassificationHead(config);
            else
            {
                Classifier = new TunableLinear(config.Hidden, config.NumLabels);
                classifierDropout = nn.Dropout(config.ClassifierDropout ?? config.HiddenDropoutProb);
            }
        }
        else if (head == ModelHead.MultipleChoice)
        {
            Classifier = new TunableLinear(config.Hidden, 1);
            classifierDropout = nn.Dropout(config.ClassifierDropout ?? config.HiddenDropoutProb);
        }
        else if (head == ModelHead.QuestionAnswering) QaOutputs = new TunableLinear(config.Hidden, 2);
        else if (config.IsRoberta) LmHead = new RobertaLMHead(config);
        else Cls = new BertOnlyMLMHead(config);
        RegisterComponents();
        InitWeights();
        ApplyConfiguredPruning();
    }

    /// <summary>The encoder body (bert. or roberta.).</summary>
    public BertModel Body => bert ?? roberta!;

    /// <summary>The state-dict prefix of the body: "bert" or "roberta".</summary>
    public string BodyName => config.IsRoberta ? "roberta" : "bert";

    /// <summary>The masked-LM decoder weight (vocab, C): the word embedding matrix itself.</summary>
    public Tensor DecoderWeight => Body.Embeddings.WordEmbeddings.weight!;

    /// <remarks>A multiple-choice model takes (B, choices, T) inputs, runs them as B·choices sequences and returns one
    /// score per choice (B, choices); its last hidden state is (B·choices, T, C).</remarks>
    public override ModelOutput Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null)
    {
        using var scope = NewDisposeScope();
        long choices = 0;
        if (Head == ModelHead.MultipleChoice)
        {
            if (inputIds.dim() != 3) throw new ArgumentException($"a multiple-choice model takes (batch, choices, length) ids, not {inputIds.dim()}-D", nameof(inputIds));
            choices = inputIds.shape[1];
            long length = inputIds.shape[2];
            inputIds = inputIds.reshape(-1, length);                                      // (B·choices, T)
            attentionMask = attentionMask?.reshape(-1, length);
            tokenTypeIds = tokenTypeIds?.reshape(-1, length);
        }
        long T = inputIds.shape[1];
        // RoBERTa's positions start at pad + 1, so it has pad + 1 fewer usable positions (514 → 512).
        long maxLength = config.IsRoberta ? config.MaxPositionEmbeddings - padTokenId - 1 : config.MaxPositionEmbeddings;
        if (T > maxLength)
            throw new ArgumentException($"sequence length {T} exceeds the {maxLength} positions of this {config.ModelType} model", nameof(inputIds));

        Tensor positions = config.IsRoberta
            ? RobertaPositionIds(inputIds, padTokenId)                                    // (B, T)
            : arange(T, dtype: ScalarType.Int64, device: inputIds.device).unsqueeze(0);  // (1, T)
        Tensor types = tokenTypeIds ?? zeros_like(inputIds);                              // (B, T)
        Tensor x = Body.Embeddings.call(inputIds, positions, types);                     // (B, T, C)

        ScalarType dtype = ComputeType ?? x.dtype;                                        // q and k's type: bf16 under mixed precision
        Tensor? mask = KeyPaddingMask(attentionMask, dtype);                              // (B, 1, 1, T) or null
        // With activation checkpointing a layer runs again during backward, after this scope has freed the
        // mask; it then rebuilds it from the caller's attention mask, which lives until backward.
        Tensor? Mask() => mask is { IsInvalid: true } ? mask = KeyPaddingMask(attentionMask, dtype) : mask;
        foreach (BertLayer layer in Body.Encoder.Layers)
            x = RunBlock(h => layer.call(h, Mask()), x);                                  // (B, T, C)

        Tensor logits = Head switch
        {
            ModelHead.SequenceClassification when config.IsRoberta => Classifier!.call(x),                 // (B, num_labels)
            ModelHead.SequenceClassification => Classifier!.call(classifierDropout!.call(Body.Pooler!.call(x))),
            ModelHead.MultipleChoice => Classifier!.call(classifierDropout!.call(Body.Pooler!.call(x))).view(-1, choices),   // (B, choices)
            ModelHead.QuestionAnswering => QaOutputs!.call(x),                                                // (B, T, 2)
            _ when config.IsRoberta => LmHead!.call(x, DecoderWeight),                                     // (B, T, vocab)
            _ => Cls!.call(x, DecoderWeight),                                                              // (B, T, vocab)
        };
        return new ModelOutput(x.MoveToOuterDisposeScope(), logits.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// RoBERTa's position ids (Hugging Face create_position_ids_from_input_ids): real tokens count
    /// pad + 1, pad + 2, … in order and pad tokens keep position pad, whichever side the padding is on.
    /// </summary>
    /// <param name="inputIds">(B, T)</param>
    /// <returns>(B, T) int64</returns>
    public static Tensor RobertaPositionIds(Tensor inputIds, long padTokenId)
    {
        Tensor real = inputIds.ne(padTokenId).to_type(ScalarType.Int64);   // (B, T) 1 for real tokens
        return real.cumsum(1) * real + padTokenId;                         // (B, T)
    }

    /// <summary>
    /// The additive key-padding mask (B, 1, 1, T) that Hugging Face's BERT gives SDPA: 0 for real keys and the
    /// dtype's lowest value for padding. Additive rather than boolean so that a row of pure padding stays finite
    /// (uniform attention) instead of NaN. Null when every token is real, which lets SDPA use its fused kernels.
    /// </summary>
    /// <param name="attentionMask">(B, T), 1 for real tokens and 0 for padding; null means all real.</param>
    public static Tensor? KeyPaddingMask(Tensor? attentionMask, ScalarType dtype)
    {
        if (attentionMask is null) return null;
        long B = attentionMask.shape[0], T = attentionMask.shape[1];
        Tensor pad = attentionMask.eq(0);                                              // (B, T)
        if (!pad.any().item<bool>()) return null;
        return zeros(B, 1, 1, T, dtype: dtype, device: attentionMask.device)
            .masked_fill(pad.view(B, 1, 1, T), finfo(dtype).min);                      // (B, 1, 1, T)
    }

    /// <summary>attention.self.{query,key,value} → attention.output.dense; intermediate.dense → output.dense.</summary>
    protected override IReadOnlyList<TransformerLayerView> CreateLayerViews()
    {
        var layers = new List<TransformerLayerView>();
        for (int i = 0; i < Body.Encoder.Layers.Count; i++)
        {
            BertLayer layer = Body.Encoder.Layers[i];
            BertSelfAttention a = layer.Attention.Self;
            string p = $"{BodyName}.encoder.layer.{i}.";
            layers.Add(new TransformerLayerView(i,
                new AttentionView(i, a, new(p + "attention.self.query", a.Query), new(p + "attention.self.key", a.Key),
                    new(p + "attention.self.value", a.Value), fusedQkv: null,
                    output: new(p + "attention.output.dense", layer.Attention.Output.Dense)),
                new FeedForwardView(i, layer.Intermediate, [new(p + "intermediate.dense", layer.Intermediate.Dense)],
                    new(p + "output.dense", layer.Output.Dense))));
        }
        return layers;
    }

    /// <summary>
    /// The classification head with BERT's pooler (freshly initialised when the checkpoint comes from BertForMaskedLM,
    /// which has none), or the masked-LM head's own transform and bias.
    /// </summary>
    public override IReadOnlyList<string> HeadModuleNames => Head switch
    {
        ModelHead.SequenceClassification when config.IsRoberta => ["classifier"],
        ModelHead.SequenceClassification => ["bert.pooler", "classifier"],
        ModelHead.MultipleChoice => [BodyName + ".pooler", "classifier"],
        ModelHead.QuestionAnswering => ["qa_outputs"],
        _ when config.IsRoberta => ["lm_head"],
        _ => ["cls"],
    };

    /// <summary>
    /// Names are the same on both sides, nothing is transposed. Files may carry the position_ids buffer, the tied
    /// decoder (weight = word_embeddings, bias = the head's bias), BERT's next-sentence head, and a pooler our
    /// model does not build; BertModel/RobertaModel files omit the body prefix.
    /// </summary>
    /// <summary>The pooler: frozen when pretrained by methods whose original does so (SIFT), trained when fresh.</summary>
    public override IReadOnlyList<string> HeadModulesTrainedOnlyWhenNew => Body.Pooler is null ? [] : [BodyName + ".pooler"];

    public override HfWeightTable WeightTable
    {
        get
        {
            var entries = new List<WeightMapping>();
            void Same(string name) => entries.Add(new WeightMapping(name, name));
            void Linear(string name) { Same(name + ".weight"); Same(name + ".bias"); }
            void Norm(string name) { Same(name + ".weight"); Same(name + ".bias"); }

            string b = BodyName;
            Same($"{b}.embeddings.word_embeddings.weight");
            Same($"{b}.embeddings.position_embeddings.weight");
            Same($"{b}.embeddings.token_type_embeddings.weight");
            Norm($"{b}.embeddings.LayerNorm");
            for (int i = 0; i < Body.Encoder.Layers.Count; i++)
            {
                string p = $"{b}.encoder.layer.{i}.";
                Linear(p + "attention.self.query");
                Linear(p + "attention.self.key");
                Linear(p + "attention.self.value");
                Linear(p + "attention.output.dense");
                Norm(p + "attention.output.LayerNorm");
                Linear(p + "intermediate.dense");
                Linear(p + "output.dense");
                Norm(p + "output.LayerNorm");
            }
            if (Body.Pooler is not null) Linear($"{b}.pooler.dense");

            if (Head == ModelHead.SequenceClassification && config.IsRoberta)
            {
                Linear("classifier.dense");
                Linear("classifier.out_proj");
            }
            else if (Head is ModelHead.SequenceClassification or ModelHead.MultipleChoice) Linear("classifier");
            else if (Head == ModelHead.QuestionAnswering) Linear("qa_outputs");
            else if (config.IsRoberta)
            {
                Same("lm_head.bias");   // a module's own parameters come before its children's in state_dict()
                Linear("lm_head.dense");
                Norm("lm_head.layer_norm");
            }
            else
            {
                Same("cls.predictions.bias");
                Linear("cls.predictions.transform.dense");
                Norm("cls.predictions.transform.LayerNorm");
            }

            var ignored = new List<string>
            {
                $@"^({b}\.)?embeddings\.position_ids$",
                @"^cls\.predictions\.decoder\.(weight|bias)$",
                @"^lm_head\.decoder\.(weight|bias)$",
                @"^cls\.seq_relationship\.(weight|bias)$",
            };
            if (Body.Pooler is null) ignored.Add($@"^({b}\.)?pooler\.dense\.(weight|bias)$");

            return new HfWeightTable
            {
                Entries = entries,
                IgnoredKeyPatterns = ignored,
                AlternativePrefixes = [($"{b}.", "")],
            };
        }
    }

    /// <summary>
    /// Hugging Face's BERT init (initializer_range 0.02): N(0, 0.02) for linear and embedding weights with the
    /// padding rows zeroed, zero biases (the MLM bias included), LayerNorm (1, 0).
    /// </summary>
    void InitWeights()
    {
        const double std = 0.02;
        using var noGrad = no_grad();
        foreach (var (_, linear) in NamedLinears())
        {
            nn.init.normal_(linear.weight, 0, std);
            if (linear.bias is not null) nn.init.zeros_(linear.bias);
        }
        BertEmbeddings e = Body.Embeddings;
        foreach (Embedding embedding in new[] { e.WordEmbeddings, e.PositionEmbeddings, e.TokenTypeEmbeddings })
            nn.init.normal_(embedding.weight!, 0, std);
        e.WordEmbeddings.weight![padTokenId].zero_();
        if (config.IsRoberta) e.PositionEmbeddings.weight![padTokenId].zero_();
    }
}
