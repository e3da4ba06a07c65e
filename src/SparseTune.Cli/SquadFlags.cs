using System.CommandLine;
using SparseTune.Evaluation;

namespace SparseTune.Cli;

/// <summary>Extractive QA's flags (Hugging Face run_qa.py's), shared by finetune, eval and predict.</summary>
public sealed class SquadFlags
{
    readonly Option<int?> docStride = new("--doc-stride") { Description = "squad: context tokens consecutive windows share (default: 128, or half a window's room for context when less)." };
    readonly Option<int> maxQueryLength = new("--max-query-length") { DefaultValueFactory = _ => 64, Description = "squad: question tokens kept (at most half of --max-length)." };
    readonly Option<int> maxAnswerLength = new("--max-answer-length") { DefaultValueFactory = _ => 30, Description = "squad: longest answer in tokens." };
    readonly Option<double> nullThreshold = new("--null-threshold") { DefaultValueFactory = _ => 0.0, Description = "squad v2.0: answer nothing when the no-answer score beats the best span's by more than this." };

    public IEnumerable<Option> All => [docStride, maxQueryLength, maxAnswerLength, nullThreshold];

    public SquadTaskOptions Bind(ParseResult parse) => new()
    {
        DocStride = parse.GetValue(docStride),
        MaxQueryLength = parse.GetValue(maxQueryLength),
        MaxAnswerLength = parse.GetValue(maxAnswerLength),
        NullScoreThreshold = parse.GetValue(nullThreshold),
    };
}
