using SparseTune.Cli.Commands;
using SparseTune.Data;
using SparseTune.Tests.Support;
using Xunit;

namespace SparseTune.Tests.Data;

public class SquadDataTests
{
    /// <summary>The bundled demo/squad folder (next to demo/model).</summary>
    public static string DemoFile(string name) => Path.Combine(Path.GetDirectoryName(Demo.ModelDirectory())!, "squad", name);

    static string WriteTemp(string name, string content)
    {
        string path = Path.Combine(Fixtures.TempDirectory("squad"), name);
        File.WriteAllText(path, content);
        return path;
    }

    const string V1Json = """
        {"version": "1.1", "data": [
          {"title": "Owls", "paragraphs": [
            {"context": "Barn owls hunt at night. They eat mice.",
             "qas": [
               {"id": "q1", "question": "When do barn owls hunt?", "answers": [{"text": "at night", "answer_start": 15}]},
               {"id": "q2", "question": "What do they eat?",
                "answers": [{"text": "mice", "answer_start": 34}, {"text": "mice.", "answer_start": 34}]}
             ]}
          ]}
        ]}
        """;

    [Fact]
    public void SquadJson_V1_ReadsQuestionsAnswersTitlesAndIdLines()
    {
        var data = SquadData.Load(WriteTemp("train.json", V1Json));
        Assert.False(data.Version2);
        Assert.Equal(0, data.SkippedRows);
        Assert.Equal(["q1", "q2"], data.Examples.Select(e => e.Id));
        var q2 = data.Examples[1];
        Assert.Equal("What do they eat?", q2.Question);
        Assert.Equal("Barn owls hunt at night. They eat mice.", q2.Context);
        Assert.Equal([new QaAnswer("mice", 34), new QaAnswer("mice.", 34)], q2.Answers);
        Assert.False(q2.IsImpossible);
        Assert.Equal("Owls", q2.Title);
        Assert.Equal([5, 6], data.Examples.Select(e => e.SourceLine)); // the lines of the "id"s
    }

    [Fact]
    public void SquadJson_V2_ImpossibleQuestionsHaveNoAnswersAndMakeItVersion2()
    {
        string json = """
            {"data": [{"title": "T", "paragraphs": [{"context": "Owls hunt at night.", "qas": [
              {"id": "a", "question": "When?", "answers": [{"text": "at night", "answer_start": 10}], "is_impossible": false},
              {"id": "b", "question": "Why?", "answers": [], "plausible_answers": [{"text": "Owls", "answer_start": 0}], "is_impossible": true}
            ]}]}]}
            """;
        var data = SquadData.Load(WriteTemp("dev.json", json));
        Assert.True(data.Version2);
        Assert.False(data.Examples[0].IsImpossible);
        Assert.True(data.Examples[1].IsImpossible);
        Assert.Empty(data.Examples[1].Answers);

        var declared = SquadData.Load(WriteTemp("v2.json", V1Json.Replace("\"1.1\"", "\"v2.0\"")));
        Assert.True(declared.Version2);
    }

    [Fact]
    public void Jsonl_ReadsBothAnswerLayoutsDefaultIdsAndImpossibleRows()
    {
        string path = WriteTemp("dev.jsonl", string.Join("\n",
            """{"id": "x1", "question": "Who?", "context": "Ada wrote it.", "answers": {"text": ["Ada"], "answer_start": [0]}}""",
            "",
            """{"question": "What?", "context": "Ada wrote it.", "answers": [{"text": "it", "answer_start": 10}, {"text": "wrote it", "answer_start": 4}]}""",
            """{"id": 7, "question": "When?", "context": "Ada wrote it.", "answers": {"text": [], "answer_start": []}}"""));
        var data = SquadData.Load(path);
        Assert.Equal(["x1", "3", "7"], data.Examples.Select(e => e.Id)); // no id: the line number
        Assert.Equal([new QaAnswer("Ada", 0)], data.Examples[0].Answers);
        Assert.Equal([new QaAnswer("it", 10), new QaAnswer("wrote it", 4)], data.Examples[1].Answers);
        Assert.True(data.Examples[2].IsImpossible);
        Assert.True(data.Version2);
        Assert.Equal([1, 3, 4], data.Examples.Select(e => e.SourceLine));
    }

    [Fact]
    public void Jsonl_MisalignedAnswerStart_IsABadRowNamingFileAndLine()
    {
        string path = WriteTemp("bad.jsonl", string.Join("\n",
            """{"question": "Who?", "context": "Ada wrote it.", "answers": {"text": ["Ada"], "answer_start": [0]}}""",
            """{"question": "Who?", "context": "Ada wrote it.", "answers": {"text": ["Ada"], "answer_start": [0]}}""",
            """{"question": "What?", "context": "Ada wrote it.", "answers": {"text": ["wrote"], "answer_start": [3]}}"""));
        var error = Assert.Throws<DataFormatException>(() => SquadData.Load(path));
        Assert.Equal(3, error.Line);
        Assert.StartsWith($"{path}:3: ", error.Message);
        Assert.Contains("'wrote'", error.Message);
        Assert.Contains("answer_start 3", error.Message);

        var skipped = SquadData.Load(path, new SquadDataOptions { SkipBadRows = true });
        Assert.Equal(2, skipped.Examples.Count);
        Assert.Equal(1, skipped.SkippedRows);
        Assert.StartsWith($"{path}:3: ", skipped.SkippedReasons.Single());
    }

    [Theory]
    [InlineData("""{"question": "  ", "context": "c", "answers": []}""", "empty question")]
    [InlineData("""{"question": "q", "context": "", "answers": []}""", "empty context")]
    [InlineData("""{"question": "q", "context": "abc", "answers": [{"text": "bcd", "answer_start": 1}]}""", "outside the context")]
    [InlineData("""{"question": "q", "context": "abc", "answers": {"text": ["a"], "answer_start": []}}""", "1 texts but 0 answer_start")]
    [InlineData("""{"question": "q", "context": "abc", "answers": [{"text": "a", "answer_start": "0"}]}""", "not an integer")]
    [InlineData("""{"question": "q", "context": "abc"}""", "missing field 'answers'")]
    [InlineData("""{"question": "q", "context": "abc", "answers": [{"text": "a", "answer_start": 0}], "is_impossible": true}""", "is_impossible is true")]
    [InlineData("""{"question": "q", "context": "abc", """, "invalid JSON")]
    public void Jsonl_BadRows_SayWhatIsWrong(string line, string expected)
    {
        string path = WriteTemp("bad.jsonl", line);
        var error = Assert.Throws<DataFormatException>(() => SquadData.Load(path));
        Assert.Equal(1, error.Line);
        Assert.Contains(expected, error.Problem);
    }

    [Fact]
    public void Jsonl_DuplicateIds_AreBadRows()
    {
        string path = WriteTemp("dup.jsonl", string.Join("\n",
            """{"id": "a", "question": "q", "context": "abc", "answers": []}""",
            """{"id": "a", "question": "q", "context": "abc", "answers": []}"""));
        var error = Assert.Throws<DataFormatException>(() => SquadData.Load(path));
        Assert.Equal(2, error.Line);
        Assert.Contains("duplicate id 'a' (first on line 1)", error.Problem);
    }

    [Fact]
    public void SquadJson_MisalignedAnswer_NamesTheQuestionIdAndItsLine()
    {
        string path = WriteTemp("bad.json", V1Json.Replace("\"answer_start\": 15", "\"answer_start\": 14"));
        var error = Assert.Throws<DataFormatException>(() => SquadData.Load(path));
        Assert.Equal(5, error.Line);
        Assert.Contains("question id 'q1'", error.Problem);

        var skipped = SquadData.Load(path, new SquadDataOptions { SkipBadRows = true });
        Assert.Equal(["q2"], skipped.Examples.Select(e => e.Id));
        Assert.Equal(1, skipped.SkippedRows);
    }

    [Fact]
    public void SquadJson_BrokenJson_ReportsItsLine()
    {
        string path = WriteTemp("broken.json", "{\"data\": [\n {\"title\": \"x\",\n \"paragraphs\": [}\n]}");
        var error = Assert.Throws<DataFormatException>(() => SquadData.Load(path));
        Assert.Equal(3, error.Line);
        Assert.Contains("invalid JSON", error.Problem);
    }

    [Fact]
    public void BundledDemoFiles_LoadCleanly()
    {
        var train = SquadData.Load(DemoFile("train.json"));
        Assert.False(train.Version2);
        Assert.Equal(47, train.Examples.Count);
        Assert.Equal(8, train.Examples.Select(e => e.Context).Distinct().Count());

        var dev = SquadData.Load(DemoFile("dev.jsonl"));
        Assert.False(dev.Version2);
        Assert.Equal(16, dev.Examples.Count);

        var devV2 = SquadData.Load(DemoFile("dev-v2.json"));
        Assert.True(devV2.Version2);
        Assert.Equal(13, devV2.Examples.Count);
        Assert.Equal(4, devV2.Examples.Count(e => e.IsImpossible));
        Assert.All([.. train.Examples, .. dev.Examples, .. devV2.Examples], e =>
            Assert.All(e.Answers, a => Assert.Equal(a.Text, e.Context.Substring(a.Start, a.Text.Length))));
    }
}
