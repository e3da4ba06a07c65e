using System.CommandLine;
using SparseTune.Models;
using Spectre.Console;

namespace SparseTune.Cli.Commands;

/// <summary>sparsetune inspect: what a checkpoint is — family, sizes, and where its parameters are.</summary>
public static class InspectCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder.", Required = true };
        var command = new Command("inspect", "Show a model's family, shape and parameter counts by module kind.") { model };
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            string dir = CliSupport.ExistingDirectory(parse.GetValue(model), "--model");
            using TransformerModel net = PretrainedModel.Load(dir);
            var c = net.Config;
            var info = new Table().AddColumns("property", "value");
            info.AddRow("family", c.ModelType);
            info.AddRow("architecture", c.Architectures?.FirstOrDefault() ?? "");
            info.AddRow("layers", c.NumLayers.ToString());
            info.AddRow("hidden size", c.HiddenSize.ToString());
            // Per layer when structured pruning left the layers different (heads present / FFN width).
            static string PerLayer(IEnumerable<int> values, int configured) =>
                values.Distinct().Count() == 1 && values.First() == configured ? configured.ToString() : $"{string.Join(", ", values)} (per layer; {configured} before pruning)";
            info.AddRow("attention heads", PerLayer(net.Layers.Select(l => l.Attention.NumHeads), c.NumHeads));
            info.AddRow("intermediate size", PerLayer(net.Layers.Select(l => l.FeedForward.IntermediateSize), c.IntermediateSize));
            info.AddRow("vocabulary", c.VocabSize.ToString());
            if (c.NumLabels > 0) info.AddRow("labels", string.Join(", ", c.Id2Label!.OrderBy(p => int.Parse(p.Key)).Select(p => p.Value)));
            var parameters = net.named_parameters().ToList();
            info.AddRow("dtype", string.Join(", ", parameters.Select(p => p.parameter.dtype.ToString()).Distinct()));
            long total = parameters.Sum(p => p.parameter.numel());
            long bytes = parameters.Sum(p => p.parameter.numel() * p.parameter.ElementSize);
            info.AddRow("parameters", $"{total:N0} ({CliSupport.HumanCount(total)})");
            info.AddRow("bytes", $"{bytes:N0} ({CliSupport.HumanBytes(bytes)})");
            CliSupport.Out.Write(info);

            var byKind = new Table().AddColumns("module kind", "parameters", "share");
            foreach (var group in parameters.GroupBy(p => ModuleKind(p.name)).OrderByDescending(g => g.Sum(p => p.parameter.numel())))
            {
                long n = group.Sum(p => p.parameter.numel());
                byKind.AddRow(group.Key, $"{n:N0}", $"{100.0 * n / total:0.0}%");
            }
            CliSupport.Out.Write(byKind);
            return 0;
        }));
        return command;
    }

    /// <summary>Groups a Hugging Face parameter name into embeddings / attention / mlp / norm / head.</summary>
    public static string ModuleKind(string name)
    {
        if (name.Contains("norm", StringComparison.OrdinalIgnoreCase) || name.Contains(".ln_", StringComparison.Ordinal)) return "norm";
        if (name.Contains("embed", StringComparison.Ordinal) || name.Contains(".wte.", StringComparison.Ordinal) || name.Contains(".wpe.", StringComparison.Ordinal)) return "embeddings";
        if (name.Contains("attn", StringComparison.Ordinal) || name.Contains("attention", StringComparison.Ordinal)) return "attention";
        if (name.Contains("mlp", StringComparison.Ordinal) || name.Contains("intermediate", StringComparison.Ordinal) || name.Contains(".output.", StringComparison.Ordinal)) return "mlp";
        return "head";
    }
}
