using System.Text.Json;
using System.Text.Json.Serialization;

namespace SparseTune.Training;

/// <summary>
/// JSON settings of every file a run writes (report.json, metrics.jsonl, trainer_state.json): a NaN or infinite
/// number is written as null (JSON has no such numbers), so writing a report never fails on a diverged metric.
/// </summary>
public static class JsonOutput
{
    public static readonly JsonSerializerOptions Options = Create(indented: false);
    public static readonly JsonSerializerOptions Indented = Create(indented: true);

    static JsonSerializerOptions Create(bool indented)
    {
        var options = new JsonSerializerOptions { WriteIndented = indented };
        options.Converters.Add(new FiniteOrNull());
        return options;
    }

    sealed class FiniteOrNull : JsonConverter<double>
    {
        public override bool HandleNull => true;

        public override double Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
            reader.TokenType == JsonTokenType.Null ? double.NaN : reader.GetDouble();

        public override void Write(Utf8JsonWriter writer, double value, JsonSerializerOptions options)
        {
            if (double.IsFinite(value)) writer.WriteNumberValue(value);
            else writer.WriteNullValue();
        }
    }
}
