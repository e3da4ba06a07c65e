using SparseTune.Models;

namespace SparseTune.Tokenization;

/// <summary>Checks at load that a tokenizer and the model it feeds agree, naming the field and the file.</summary>
public static class TokenizerChecks
{
    /// <exception cref="InvalidDataException">The tokenizer would produce ids the model has no embedding for, or an
    /// encoder's WordPiece vocabulary lacks the [CLS]/[SEP] tokens every input is framed with.</exception>
    public static void AgainstModel(TextTokenizer tokenizer, ModelConfig config, string modelDirectory)
    {
        var problems = new List<string>();
        int maxId = tokenizer.VocabSize - 1;
        if (tokenizer.VocabSize > config.VocabSize)
            problems.Add($"the tokenizer ({Path.GetFileName(tokenizer.SourceFile)}) has {tokenizer.VocabSize} tokens but config.json's vocab_size is {config.VocabSize}: ids {config.VocabSize}…{maxId} have no embedding");
        if (config is BertConfig && tokenizer.Kind == TextTokenizer.WordPieceKind && (tokenizer.ClsId is null || tokenizer.SepId is null))
            problems.Add($"the WordPiece vocabulary ({Path.GetFileName(tokenizer.SourceFile)}) has no {(tokenizer.ClsId is null ? "[CLS]" : "[SEP]")} token, which frames every {config.ModelType} input");
        if (problems.Count > 0) throw new InvalidDataException($"{modelDirectory}: {string.Join("; ", problems)}");
    }
}
