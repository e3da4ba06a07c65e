using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Tests.Support;
using SparseTune.Training;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace SparseTune.Tests.Models;

/// <summary>
/// The extractive-QA and multiple-choice heads of BERT/RoBERTa in Hugging Face's layout. The fixtures bert-tiny-qa
/// (BertForQuestionAnswering: body + qa_outputs (2, 48)) and bert-tiny-mc (BertForMultipleChoice: body, pooler and
/// classifier (1, 48)) are bert-tiny's weights with a new head; their references were computed in PyTorch from
/// bert-tiny's reference hidden states (TestData/hf-parity/make_head_fixtures.py): start/end logits (2, 12) and
/// choice scores (1, 2) for the two rows taken as one question's two choices.
/// </summary>
public sealed class TaskHeadTests(ITestOutputHelper output) : IDisposable
{
    readonly string temp = Fixtures.TempDirectory("heads");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    [Fact]
    public void QuestionAnsweringCheckpoint_LoadsWithItsHeadAndMatchesPyTorchStartEndLogits()
    {
        using var scope = NewDisposeScope();
        string fixture = Fixtures.Model("bert-tiny-qa");
        using TransformerModel model = PretrainedModel.Load(fixture);
        Assert.Equal(ModelHead.QuestionAnswering, model.Head);
        model.eval();
        using var noGrad = no_grad();
        var reference = SafeTensors.Load(Path.Combine(fixture, "reference.safetensors"));
        using var result = model.Forward(reference["input_ids"], reference["attention_mask"]);
        Assert.Equal([2L, 12, 2], result.Logits.shape);
        Tensor real = reference["attention_mask"].to_type(ScalarType.Bool);
        double startError = (result.Logits.select(-1, 0) - reference["start_logits"]).abs().masked_select(real).max().item<float>();
        double endError = (result.Logits.select(-1, 1) - reference["end_logits"]).abs().masked_select(real).max().item<float>();
        output.WriteLine($"qa max |Δ|: start {startError:E3}, end {endError:E3}");
        Assert.True(startError <= 1e-4, $"start logits max abs error {startError}");
        Assert.True(endError <= 1e-4, $"end logits max abs error {endError}");
        Assert.Equal(["qa_outputs"], model.HeadModuleNames);
    }

    [Fact]
    public void MultipleChoiceCheckpoint_LoadsWithItsHeadAndMatchesPyTorchChoiceScores()
    {
        using var scope = NewDisposeScope();
        string fixture = Fixtures.Model("bert-tiny-mc");
        using TransformerModel model = PretrainedModel.Load(fixture);
        Assert.Equal(ModelHead.MultipleChoice, model.Head);
        model.eval();
        using var noGrad = no_grad();
        var reference = SafeTensors.Load(Path.Combine(fixture, "reference.safetensors"));
        Assert.Equal([1L, 2, 12], reference["input_ids"].shape);
        using var result = model.Forward(reference["input_ids"], reference["attention_mask"]);
        Assert.Equal([1L, 2], result.Logits.shape);
        double error = (result.Logits - reference["logits"]).abs().max().item<float>();
        output.WriteLine($"multiple choice max |Δ|: {error:E3}");
        Assert.True(error <= 1e-4, $"choice scores max abs error {error}");
        Assert.Equal(["bert.pooler", "classifier"], model.HeadModuleNames);
    }

    [Theory]
    [InlineData("bert-tiny-qa")]
    [InlineData("bert-tiny-mc")]
    public void TaskHeadCheckpoint_SaveThenLoadRoundTripsBitExactly(string fixture) =>
        DecoderFixtures.AssertRoundTrip(Fixtures.Model(fixture), temp, output);

    [Fact]
    public void SequenceClassificationCheckpoint_LoadsForQaWithAFreshSpanHeadAndNoPooler()
    {
        using var scope = NewDisposeScope();
        using var model = PretrainedModel.Load(Fixtures.Model("bert-tiny"), ModelHead.QuestionAnswering, null, out var report);
        Assert.Equal(["qa_outputs.bias", "qa_outputs.weight"], report.NewlyInitialised.Order());
        Assert.Contains(report.DroppedKeys, k => k.StartsWith("classifier", StringComparison.Ordinal));
        Assert.DoesNotContain(model.state_dict().Keys, k => k.Contains("pooler", StringComparison.Ordinal));
        Assert.Equal("BertForQuestionAnswering", model.Config.Architectures![0]);
    }

    [Fact]
    public void DecodersRefuseEncoderOnlyHeads()
    {
        var qa = Assert.Throws<ModelConfigException>(() => PretrainedModel.Load(Fixtures.Model("gpt2-tiny"), ModelHead.QuestionAnswering));
        Assert.Contains("needs an encoder", qa.Message);
        var mc = Assert.Throws<ModelConfigException>(() => PretrainedModel.Load(Fixtures.Model("llama-tiny"), ModelHead.MultipleChoice));
        Assert.Contains("likelihood of each choice", mc.Message);
    }

    [Fact]
    public void SpanLoss_IsTheMeanOfStartAndEndCrossEntropies()
    {
        using var scope = NewDisposeScope();
        Tensor logits = tensor(new float[] { 1, 0, 2, 1, 0, 3, 0.5f, 0.5f }, [1, 4, 2]);   // start (1, 2, 0, 0.5), end (0, 1, 3, 0.5)
        Tensor spans = tensor(new long[] { 1, 2 }, [1, 2]);
        double start = -Math.Log(Math.Exp(2) / (Math.Exp(1) + Math.Exp(2) + Math.Exp(0) + Math.Exp(0.5)));
        double end = -Math.Log(Math.Exp(3) / (Math.Exp(0) + Math.Exp(1) + Math.Exp(3) + Math.Exp(0.5)));
        Assert.Equal((start + end) / 2, Losses.SpanLoss(logits, spans).item<float>(), 5);
    }
}
