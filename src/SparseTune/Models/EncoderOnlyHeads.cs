namespace SparseTune.Models;

/// <summary>The heads only the encoder families (BERT, RoBERTa) have.</summary>
public static class EncoderOnlyHeads
{
    /// <summary>Extractive QA and multiple-choice heads read every token in both directions: encoders only.</summary>
    public static bool IsEncoderOnly(ModelHead head) => head is ModelHead.QuestionAnswering or ModelHead.MultipleChoice;

    /// <exception cref="ModelConfigException">A decoder was asked for an encoder-only head.</exception>
    public static void Refuse(ModelConfig config, ModelHead head)
    {
        if (!IsEncoderOnly(head)) return;
        throw new ModelConfigException(head == ModelHead.QuestionAnswering
            ? $"extractive question answering needs an encoder (bert, roberta), not {config.ModelType}"
            : $"{config.ModelType} has no multiple-choice head: a decoder answers multiple choice by the likelihood of each choice (its causal-LM head)");
    }
}
