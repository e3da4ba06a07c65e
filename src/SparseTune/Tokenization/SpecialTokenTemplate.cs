using System.Text.Json;

namespace SparseTune.Tokenization;

/// <summary>
/// Where special tokens go around one or two encoded sequences, with the token-type id of every part: the
/// equivalent of a Hugging Face tokenizers post-processor (TemplateProcessing, BertProcessing, RobertaProcessing).
/// </summary>
internal sealed class SpecialTokenTemplate
{
    /// <summary>One part of a template: sequence 'A' or 'B', or (Sequence == '\0') fixed special-token ids.</summary>
    internal readonly record struct Piece(char Sequence, int[] Ids, int TypeId)
    {
        public static Piece A(int typeId = 0) => new('A', [], typeId);
        public static Piece B(int typeId = 1) => new('B', [], typeId);
        public static Piece Special(int id, int typeId) => new('\0', [id], typeId);
    }

    private readonly Piece[] _single;
    private readonly Piece[] _pair;

    public SpecialTokenTemplate(Piece[] single, Piece[] pair)
    {
        if (single.Count(p => p.Sequence == 'A') != 1 || single.Any(p => p.Sequence == 'B'))
            throw new ArgumentException("A single-sequence template needs exactly one A and no B.", nameof(single));
        if (pair.Count(p => p.Sequence == 'A') != 1 || pair.Count(p => p.Sequence == 'B') != 1)
            throw new ArgumentException("A pair template needs exactly one A and one B.", nameof(pair));
        (_single, _pair) = (single, pair);
    }

    /// <summary>No special tokens: a, or a b with type ids 0 then 1 (Hugging Face's default for pairs).</summary>
    public static SpecialTokenTemplate None { get; } = new([Piece.A()], [Piece.A(), Piece.B()]);

    /// <summary>[CLS] a [SEP] and [CLS] a [SEP] b [SEP], b and its [SEP] with type id 1.</summary>
    public static SpecialTokenTemplate Bert(int cls, int sep) => new(
        [Piece.Special(cls, 0), Piece.A(), Piece.Special(sep, 0)],
        [Piece.Special(cls, 0), Piece.A(), Piece.Special(sep, 0), Piece.B(), Piece.Special(sep, 1)]);

    /// <summary>&lt;s&gt; a &lt;/s&gt; and &lt;s&gt; a &lt;/s&gt;&lt;/s&gt; b &lt;/s&gt;, all type id 0: RoBERTa has one token type.</summary>
    public static SpecialTokenTemplate Roberta(int cls, int sep) => new(
        [Piece.Special(cls, 0), Piece.A(), Piece.Special(sep, 0)],
        [Piece.Special(cls, 0), Piece.A(), Piece.Special(sep, 0), Piece.Special(sep, 0), Piece.B(0), Piece.Special(sep, 0)]);

    /// <summary>Optional BOS before and EOS after each sequence (Hugging Face's Llama template: BOS a BOS b).</summary>
    public static SpecialTokenTemplate BosEos(int? bos, int? eos)
    {
        List<Piece> Around(Piece sequence)
        {
            var pieces = new List<Piece>();
            if (bos is int b) pieces.Add(Piece.Special(b, sequence.TypeId));
            pieces.Add(sequence);
            if (eos is int e) pieces.Add(Piece.Special(e, sequence.TypeId));
            return pieces;
        }
        return new([.. Around(Piece.A())], [.. Around(Piece.A()), .. Around(Piece.B())]);
    }

    /// <summary>
    /// The template of a tokenizer.json "post_processor" (null, ByteLevel, BertProcessing, RobertaProcessing,
    /// TemplateProcessing or a Sequence of those); <paramref name="cls"/>/<paramref name="sep"/> receive the tokens
    /// Bert/RobertaProcessing name.
    /// </summary>
    public static SpecialTokenTemplate FromTokenizerJson(JsonElement processor, string file, out string? cls, out string? sep)
    {
        (cls, sep) = (null, null);
        if (processor.ValueKind == JsonValueKind.Null || processor.ValueKind == JsonValueKind.Undefined) return None;
        string type = processor.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";
        switch (type)
        {
            case "ByteLevel":
                return None;
            case "Sequence":
                SpecialTokenTemplate result = None;
                if (processor.TryGetProperty("processors", out var list) && list.ValueKind == JsonValueKind.Array)
                    foreach (var inner in list.EnumerateArray())
                    {
                        var candidate = FromTokenizerJson(inner, file, out var c, out var s);
                        if (candidate == None) continue;
                        if (result != None)
                            throw new NotSupportedException($"{file}: a Sequence post_processor with more than one special-token template is not supported.");
                        (result, cls, sep) = (candidate, c, s);
                    }
                return result;
            case "BertProcessing":
            case "RobertaProcessing":
                var (clsToken, clsId) = TokenAndId(processor, "cls", file);
                var (sepToken, sepId) = TokenAndId(processor, "sep", file);
                (cls, sep) = (clsToken, sepToken);
                return type == "BertProcessing" ? Bert(clsId, sepId) : Roberta(clsId, sepId);
            case "TemplateProcessing":
                var specials = new Dictionary<string, int[]>(StringComparer.Ordinal);
                if (processor.TryGetProperty("special_tokens", out var map) && map.ValueKind == JsonValueKind.Object)
                    foreach (var entry in map.EnumerateObject())
                    {
                        if (!entry.Value.TryGetProperty("ids", out var ids) || ids.ValueKind != JsonValueKind.Array)
                            throw new InvalidDataException($"{file}: post_processor special token '{entry.Name}' has no ids.");
                        specials[entry.Name] = [.. ids.EnumerateArray().Select(i => i.GetInt32())];
                    }
                try { return new(ParseTemplate(processor, "single", specials, file), ParseTemplate(processor, "pair", specials, file)); }
                catch (ArgumentException e) { throw new InvalidDataException($"{file}: TemplateProcessing: {e.Message}"); }
            default:
                throw new NotSupportedException($"{file}: post_processor type '{type}' is not supported (expected ByteLevel, BertProcessing, RobertaProcessing or TemplateProcessing).");
        }
    }

    private static (string Token, int Id) TokenAndId(JsonElement processor, string name, string file)
    {
        if (processor.TryGetProperty(name, out var pair) && pair.ValueKind == JsonValueKind.Array && pair.GetArrayLength() == 2
            && pair[0].ValueKind == JsonValueKind.String && pair[1].ValueKind == JsonValueKind.Number)
            return (pair[0].GetString()!, pair[1].GetInt32());
        throw new InvalidDataException($"{file}: post_processor.{name} should be [token, id].");
    }

    private static Piece[] ParseTemplate(JsonElement processor, string name, Dictionary<string, int[]> specials, string file)
    {
        if (!processor.TryGetProperty(name, out var pieces) || pieces.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{file}: TemplateProcessing has no '{name}' template.");
        var result = new List<Piece>();
        foreach (var piece in pieces.EnumerateArray())
        {
            if (piece.TryGetProperty("Sequence", out var seq))
            {
                string id = seq.GetProperty("id").GetString() ?? "A";
                result.Add(new(id == "B" ? 'B' : 'A', [], seq.TryGetProperty("type_id", out var ti) ? ti.GetInt32() : 0));
            }
            else if (piece.TryGetProperty("SpecialToken", out var special))
            {
                string id = special.GetProperty("id").GetString() ?? "";
                if (!specials.TryGetValue(id, out var ids))
                    throw new InvalidDataException($"{file}: template token '{id}' is missing from post_processor.special_tokens.");
                result.Add(new('\0', ids, special.TryGetProperty("type_id", out var ti) ? ti.GetInt32() : 0));
            }
            else throw new InvalidDataException($"{file}: unrecognised template piece {piece.GetRawText()}.");
        }
        return [.. result];
    }

    /// <summary>Ids and type ids of a (a, b) or a alone.</summary>
    public EncodedPair Apply(IReadOnlyList<int> a, IReadOnlyList<int>? b)
    {
        var ids = new List<int>(a.Count + (b?.Count ?? 0) + 4);
        var types = new List<int>(ids.Capacity);
        int secondStart = 0;
        foreach (var piece in b is null ? _single : _pair)
        {
            IReadOnlyList<int> part = piece.Sequence switch { 'A' => a, 'B' => b!, _ => piece.Ids };
            if (piece.Sequence == 'B') secondStart = ids.Count;
            ids.AddRange(part);
            types.AddRange(Enumerable.Repeat(piece.TypeId, part.Count));
        }
        return new EncodedPair(ids, types) { SecondStart = secondStart };
    }
}
