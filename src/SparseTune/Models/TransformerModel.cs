using SparseTune.Nn;
using TorchSharp;
using static TorchSharp.torch;

namespace SparseTune.Models;

/// <summary>Which output a model computes on top of its transformer body.</summary>
public enum ModelHead
{
    /// <summary>Next-token logits (B, T, vocab).</summary>
    CausalLM,
    /// <summary>Class logits (B, num_labels) from the first (BERT/RoBERTa) or last non-pad (decoders) token.</summary>
    SequenceClassification,
    /// <summary>Masked-token logits (B, T, vocab).</summary>
    MaskedLM,
    /// <summary>Extractive QA (encoders): start and end logits of every token (B, T, 2), Hugging Face's qa_outputs.</summary>
    QuestionAnswering,
    /// <summary>Multiple choice (encoders): inputs (B, choices, T), one score per choice (B, choices), Hugging Face's …ForMultipleChoice.</summary>
    MultipleChoice,
}

/// <summary>
/// What a forward pass returns; the caller owns it. A causal-LM head that is a plain projection
/// (<see cref="Projection"/>) computes its logits only when <see cref="Logits"/> is first read, so that the training
/// loss can go through <see cref="LinearCrossEntropy"/> without the whole (B, T, vocab) tensor.
/// </summary>
public sealed class ModelOutput : IDisposable
{
    Tensor? logits;

    public ModelOutput(Tensor lastHiddenState, Tensor logits) => (LastHiddenState, this.logits) = (lastHiddenState, logits);

    /// <summary>Logits of <paramref name="projection"/> over every position of <paramref name="lastHiddenState"/>, computed on first read.</summary>
    public ModelOutput(Tensor lastHiddenState, LanguageModelProjection projection) => (LastHiddenState, Projection) = (lastHiddenState, projection);

    /// <summary>(B, T, C) after the final norm.</summary>
    public Tensor LastHiddenState { get; }

    /// <summary>The LM head as a projection of <see cref="LastHiddenState"/>; null for other heads (their logits are computed).</summary>
    public LanguageModelProjection? Projection { get; }

    /// <summary>Whether <see cref="Logits"/> exists yet (a deferred LM head's are computed on first read).</summary>
    public bool HasLogits => logits is not null;

    /// <summary>
    /// The head's output: (B, T, vocab) for LM heads, (B, num_labels) for classification, … A deferred LM head computes
    /// them here, in the grad mode of this call, and the tensor belongs to this output whatever dispose scope is open.
    /// </summary>
    public Tensor Logits
    {
        get
        {
            if (logits is null)
            {
                using var scope = NewDisposeScope();
                logits = Projection!.Logits(LastHiddenState).DetachFromDisposeScope();
            }
            return logits;
        }
    }

    public void Dispose()
    {
        LastHiddenState.Dispose();
        logits?.Dispose();
    }
}

/// <summary>
/// Base of every SparseTune model. The module tree mirrors the Hugging Face module tree, so
/// <c>state_dict()</c> keys are Hugging Face checkpoint keys (pinned by a test); <see cref="WeightTable"/>
/// names the exceptions (transposed GPT-2 Conv1D weights, ignored buffers, alternative prefixes).
/// </summary>
public abstract partial class TransformerModel : nn.Module
{
    protected TransformerModel(string name, ModelConfig config, ModelHead head) : base(name)
    {
        Config = config;
        Head = head;
    }

    public ModelConfig Config { get; protected set; }
    public ModelHead Head { get; }

    /// <summary>
    /// inputIds (B, T) int64; attentionMask (B, T) with 1 for real tokens and 0 for padding (null: all real);
    /// tokenTypeIds (B, T) for BERT pairs (null: zeros).
    /// </summary>
    public abstract ModelOutput Forward(Tensor inputIds, Tensor? attentionMask = null, Tensor? tokenTypeIds = null);

    /// <summary>
    /// One decoding step with a key/value cache (decoders only): runs the T new tokens (B, T) — the prompt at the
    /// first call, then one token per row — attending to everything the cache holds, adds their keys and values to
    /// the cache, and returns the new tokens' hidden states (B, T, C) and the next-token logits of the last one
    /// (B, 1, vocab). <paramref name="attentionMask"/> (B, T) marks left padding of the first call (null: all real).
    /// </summary>
    public virtual ModelOutput Forward(Tensor inputIds, Tensor? attentionMask, KeyValueCache cache) =>
        throw new NotSupportedException($"{Config.ModelType} is not a decoder: it has no key/value cache");

    /// <summary>A cache made for this model: one buffer per layer, on the model's device.</summary>
    public KeyValueCache NewCache(long batch, long capacity) => new(Config.NumLayers, batch, capacity, Device);

    /// <summary>
    /// fp32, or bf16 mixed precision (<see cref="Nn.Precision.Bf16"/>): sets every linear's compute type, the LM
    /// head's and attention's. Weights stay float32 either way; outputs (logits) come in the compute type.
    /// </summary>
    public Precision Precision
    {
        get => precision;
        set
        {
            precision = value;
            foreach (var (_, linear) in NamedLinears()) linear.ComputeType = MixedPrecision.ComputeType(value);
        }
    }
    Precision precision;

    /// <summary>The compute type of matrix products that are not a <see cref="TunableLinear"/> (tied LM heads); null: float32.</summary>
    protected ScalarType? ComputeType => MixedPrecision.ComputeType(precision);

    /// <summary>Where the model's weights are (see <see cref="ComputeDevice"/>); inputs must be moved there.</summary>
    public Device Device => parameters().First().device;

    /// <summary>Refuses a cached forward for a model that does not produce next-token logits, or a cache of another shape.</summary>
    protected void CheckDecoding(KeyValueCache cache, int layers)
    {
        if (Head != ModelHead.CausalLM) throw new InvalidOperationException($"decoding with a key/value cache needs a causal-LM head, not {Head}");
        if (training) throw new InvalidOperationException("decoding with a key/value cache runs in eval mode (call eval() first)");
        if (cache.Layers != layers) throw new ArgumentException($"the cache has {cache.Layers} layers, the model {layers}");
    }

    /// <summary>How checkpoint keys map to this model's parameters and buffers.</summary>
    public abstract HfWeightTable WeightTable { get; }

    /// <summary>Every linear layer with its state-dict prefix (e.g. "transformer.h.0.attn.c_attn").</summary>
    public IEnumerable<(string Name, TunableLinear Layer)> NamedLinears()
    {
        foreach (var (name, module) in named_modules())
            if (module is TunableLinear linear) yield return (name, linear);
    }

    /// <summary>
    /// The classification / LM head modules that a parameter-efficient method should still train in full
    /// (PEFT's modules_to_save), as state-dict prefixes. Empty for causal LM with tied embeddings.
    /// </summary>
    public abstract IReadOnlyList<string> HeadModuleNames { get; }

    /// <summary>
    /// Head modules that a method may leave frozen when the checkpoint had them (BERT's pooler: the SIFT and PST
    /// GLUE scripts and PEFT's SEQ_CLS default train only the classifier) but must train when they are fresh.
    /// </summary>
    public virtual IReadOnlyList<string> HeadModulesTrainedOnlyWhenNew => [];

    /// <summary>
    /// Parameter names the checkpoint load initialised fresh (a new task head), set by
    /// <see cref="PretrainedModel.LoadWeights"/>; null when the model was not loaded from a checkpoint (all fresh).
    /// </summary>
    public IReadOnlyList<string>? NewlyInitialised { get; internal set; }

    /// <summary>
    /// Recompute each transformer block during backward instead of keeping its activations
    /// (see <see cref="Nn.ActivationCheckpoint"/>); only while training.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    /// <summary>Runs one transformer block, through activation checkpointing when it is on.</summary>
    protected Tensor RunBlock(Func<Tensor, Tensor> block, Tensor hidden) =>
        GradientCheckpointing && training && is_grad_enabled() ? Nn.ActivationCheckpoint.Run(block, hidden) : block(hidden);

    /// <summary>Parameter count (unique tensors; tied weights counted once).</summary>
    public long ParameterCount() => parameters().Sum(p => p.numel());
}
