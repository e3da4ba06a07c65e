using System.Runtime.CompilerServices;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace SparseTune.Nn;

/// <summary>
/// How one parameter was cut from another: <see cref="Derived"/> = <see cref="Source"/>.index_select(Dim, Kept),
/// or a same-shape copy when <see cref="Kept"/> is null (a bias that a column cut leaves as it is).
/// </summary>
public sealed record ParameterOrigin(Parameter Source, long Dim, Tensor? Kept)
{
    /// <summary>Applies the same cut to a tensor shaped like <see cref="Source"/> (an optimizer moment, a mask).</summary>
    public Tensor Apply(Tensor likeSource) => Kept is null ? likeSource.clone() : likeSource.index_select(Dim, Kept);
}

/// <summary>
/// Remembers which parameter each resized parameter was cut from. Structured pruning cannot shrink a tensor in
/// place: it builds a new Parameter and disposes the old one, and everything keyed on the old object (AdamW's
/// moments above all) would silently restart from zero. Every slicing in SparseTune (TunableLinear.KeepRows and
/// KeepColumns, LoRA's KeepRows/KeepColumns/KeepRanks, the head and neuron gates) records itself here, so
/// <see cref="Training.AdamW"/> can carry the moments across a rebuild.
/// <para>
/// Entries are weak on the derived parameter (a ConditionalWeakTable): once nothing holds it, its record and the
/// chain of disposed ancestors behind it are collected with it. Ancestors are kept only as identities; their
/// native storage is already released.
/// </para>
/// </summary>
public static class ParameterLineage
{
    static readonly ConditionalWeakTable<Parameter, ParameterOrigin> origins = new();

    /// <summary>Records that <paramref name="derived"/> is <paramref name="source"/> cut along <paramref name="dim"/>.</summary>
    /// <param name="kept">indices kept along dim (cloned here); null for a same-shape copy.</param>
    public static void Record(Parameter derived, Parameter source, long dim, Tensor? kept)
    {
        Tensor? indices = kept?.detach().to_type(ScalarType.Int64).clone().DetachFromDisposeScope();
        origins.AddOrUpdate(derived, new ParameterOrigin(source, dim, indices));
    }

    /// <summary>The cut that produced <paramref name="derived"/>, if one was recorded.</summary>
    public static bool TryGetOrigin(Parameter derived, out ParameterOrigin origin) =>
        origins.TryGetValue(derived, out origin!);

    /// <summary>
    /// The chain of cuts from the nearest ancestor that <paramref name="isKnown"/> accepts down to
    /// <paramref name="derived"/>, oldest first; null when no ancestor (nor the parameter itself) is known.
    /// An empty chain means <paramref name="derived"/> itself is known.
    /// </summary>
    public static (Parameter Ancestor, IReadOnlyList<ParameterOrigin> Cuts)? FindAncestor(Parameter derived, Func<Parameter, bool> isKnown)
    {
        var cuts = new List<ParameterOrigin>();
        Parameter current = derived;
        while (true)
        {
            if (isKnown(current))
            {
                cuts.Reverse();
                return (current, cuts);
            }
            if (!TryGetOrigin(current, out ParameterOrigin origin)) return null;
            cuts.Add(origin);
            current = origin.Source;
        }
    }

    /// <summary>
    /// A new parameter holding <paramref name="source"/>.index_select(<paramref name="dim"/>, <paramref name="kept"/>),
    /// with the same requires_grad, outside any dispose scope, and recorded here. The source is left to the caller.
    /// </summary>
    public static Parameter Slice(Parameter source, long dim, Tensor kept)
    {
        Parameter sliced;
        using (NewDisposeScope())
        using (no_grad())
        {
            sliced = new Parameter(source.detach().index_select(dim, kept).contiguous(), source.requires_grad);
            sliced.DetachFromDisposeScope();
        }
        Record(sliced, source, dim, kept);
        return sliced;
    }
}
