using SparseTune.Models;
using SparseTune.Nn;

namespace SparseTune.Tuners;

/// <summary>
/// Which linear layers a method targets, by PEFT's rule: a module is targeted when its name equals a target or
/// ends with "." + target. Shared by every tuner so "--target-modules" means the same everywhere.
/// </summary>
public static class ModuleSelection
{
    public static bool Matches(string moduleName, IEnumerable<string> targets) =>
        targets.Any(t => moduleName == t || moduleName.EndsWith("." + t, StringComparison.Ordinal));

    public static bool IsUnder(string name, IEnumerable<string> prefixes) =>
        prefixes.Any(p => name == p || name.StartsWith(p + ".", StringComparison.Ordinal));

    /// <summary>Every linear layer inside the transformer blocks: all linears except the task head's.</summary>
    public static List<(string Name, TunableLinear Layer)> BlockLinears(TransformerModel model) =>
        model.NamedLinears().Where(l => !IsUnder(l.Name, model.HeadModuleNames)).ToList();

    /// <summary>
    /// The targeted linears: <paramref name="targets"/> null means every block linear. A target that matches
    /// nothing is an error listing what could be targeted.
    /// </summary>
    public static List<(string Name, TunableLinear Layer)> Select(TransformerModel model, IReadOnlyList<string>? targets)
    {
        var candidates = BlockLinears(model);
        if (targets is null) return candidates;
        var unmatched = targets.Where(t => !candidates.Any(c => Matches(c.Name, [t]))).ToList();
        if (unmatched.Count > 0)
        {
            var available = candidates.Select(c => c.Name[(c.Name.LastIndexOf('.') + 1)..]).Distinct();
            throw new ArgumentException($"target module(s) {string.Join(", ", unmatched)} match no linear layer of this {model.Config.ModelType} model; available: {string.Join(", ", available)}");
        }
        return candidates.Where(c => Matches(c.Name, targets)).ToList();
    }

    /// <summary>
    /// Full module names of the modules trained in full (PEFT's modules_to_save), one rule for every method:
    /// null means the model's task head (classification, QA, multiple choice) and nothing for a language model (as PEFT's SEQ_CLS
    /// and CAUSAL_LM task types do); with <paramref name="freezePretrainedHeadParts"/> (a method whose original
    /// leaves BERT's pretrained pooler frozen: SIFT) the parts in
    /// <see cref="TransformerModel.HeadModulesTrainedOnlyWhenNew"/> count only when the checkpoint lacked them, since a
    /// random pooler must learn; a given name matches like PEFT (equal, or a suffix after "."), and a name that
    /// matches nothing is an error. A module inside another matched module is covered by its parent.
    /// </summary>
    public static List<string> ResolveTrainedModules(TransformerModel model, IReadOnlyList<string>? names, bool freezePretrainedHeadParts = false)
    {
        if (names is null)
        {
            if (model.Head is ModelHead.CausalLM or ModelHead.MaskedLM) return [];
            bool IsNew(string module) => model.NewlyInitialised is not { } fresh || fresh.Any(p => IsUnder(p, [module]));
            return model.HeadModuleNames.Where(h => !freezePretrainedHeadParts || !model.HeadModulesTrainedOnlyWhenNew.Contains(h) || IsNew(h)).ToList();
        }
        var all = model.named_modules().Select(m => m.name).Where(n => n.Length > 0).ToList();
        var unmatched = names.Where(n => !all.Any(m => Matches(m, [n]))).ToList();
        if (unmatched.Count > 0)
            throw new ArgumentException($"module(s) trained in full {string.Join(", ", unmatched)} match no module of this {model.Config.ModelType} model; its top-level modules: {string.Join(", ", model.named_children().Select(c => c.name))}");
        var matched = all.Where(m => Matches(m, names)).ToList();
        return matched.Where(m => !matched.Any(p => p != m && m.StartsWith(p + ".", StringComparison.Ordinal))).ToList();
    }
}
