using System.Text;

namespace SparseTune.Data;

/// <summary>One physical line of a file: its number (from 1), its text without the line break (null when its
/// bytes are not valid UTF-8) and the line break that ended it ("\n", "\r\n", or "" for the last line).</summary>
internal readonly record struct TextLine(int Number, string? Text, string Break);

internal static class TextLines
{
    static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The file's physical lines, each decoded on its own so an undecodable byte is pinned to its line.
    /// A UTF-8 byte-order mark is dropped; a final line break does not start another line.</summary>
    public static List<TextLine> Read(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        var lines = new List<TextLine>();
        int start = bytes.AsSpan().StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]) ? 3 : 0;
        int number = 1;
        while (start < bytes.Length)
        {
            int newline = Array.IndexOf(bytes, (byte)'\n', start);
            int end = newline < 0 ? bytes.Length : newline;
            int textEnd = end > start && bytes[end - 1] == (byte)'\r' && newline >= 0 ? end - 1 : end;
            string lineBreak = newline < 0 ? "" : textEnd < end ? "\r\n" : "\n";
            string? text;
            try { text = Strict.GetString(bytes, start, textEnd - start); }
            catch (DecoderFallbackException) { text = null; }
            lines.Add(new TextLine(number++, text, lineBreak));
            start = newline < 0 ? bytes.Length : newline + 1;
        }
        return lines;
    }
}
