using SparseTune.IO;
using SparseTune.Models;
using SparseTune.Tests.Support;
using TorchSharp;
using Xunit;
using Xunit.Abstractions;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace SparseTune.Tests.Models;

/// <summary>
/// BERT and RoBERTa against Hugging Face. The bert-tiny fixture (2 layers, 4 heads, hidden 48, intermediate 96,
/// vocab 223, 32 positions, BertForSequenceClassification with 3 labels) comes with reference.safetensors:
/// input_ids and attention_mask (2, 12), last_hidden_state (2, 12, 48), the encoder output before the pooler;
/// logits (2, 3). RoBERTa has no fixture: its tests build a tiny random model and check it against itself and
/// against Hugging Face's position-id rule.
/// </summary>
public sealed class BertTests(ITestOutputHelper output) : IDisposable
{
    static readonly string Fixture = Fixtures.Model("bert-tiny");
    readonly string temp = Fixtures.TempDirectory("bert");

    public void Dispose() => Directory.Delete(temp, recursive: true);

    // ---- BERT against the Hugging Face fixture ------------------------------------------------------------------

    [Fact]
    public void BertTiny_MatchesHuggingFaceLogitsAndHiddenStates()
    {
        using var scope = NewDisposeScope();
        using TransformerModel model = PretrainedModel.Load(Fixture);
        model.eval();
        using var noGrad = no_grad();
        var reference = SafeTensors.Load(Path.Combine(Fixture, "reference.safetensors"));
        Tensor mask = reference["attention_mask"];
        Assert.False(mask.all().item<bool>());   // the fixture has padding, so the key-padding mask is exercised

        using ModelOutput result = model.Forward(reference["input_ids"], mask);
        Assert.Equal(reference["logits"].shape, result.Logits.shape);
        Assert.Equal(reference["last_hidden_state"].shape, result.LastHiddenState.shape);
        double logitsError = (result.Logits - reference["logits"]).abs().max().item<float>();
        Tensor real = mask.to_type(ScalarType.Bool).unsqueeze(-1).expand_as(result.LastHiddenState);   // (B, T, C)
        double hiddenError = (result.LastHiddenState - reference["last_hidden_state"]).abs().masked_select(real).max().item<float>();

        output.WriteLine($"bert-tiny max |Δ|: logits {logitsError:E3} (all rows), last_hidden_state {hiddenError:E3} (real tokens)");
        Assert.True(logitsError <= 1e-4, $"logits max abs error {logitsError}");
        Assert.True(hiddenError <= 1e-4, $"last_hidden_state max abs error {hiddenError}");
    }

    [Fact]
    public void BertTiny_ReferenceHiddenStateIsTheEncoderOutputBeforeThePooler()
    {
        // HF's logits are classifier(tanh(pooler.dense(h[:, 0]))); if last_hidden_state is the encoder output h
        // (not the pooled vector, not the embeddings) it reproduces them through the file's head weights alone.
        using var scope = NewDisposeScope();
        var reference = SafeTensors.Load(Path.Combine(Fixture, "reference.safetensors"));
        var weights = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        Tensor first = reference["last_hidden_state"].select(1, 0);                                           // (B, C)
        Tensor pooled = F.linear(first, weights["bert.pooler.dense.weight"], weights["bert.pooler.dense.bias"]).tanh();
        Tensor logits = F.linear(pooled, weights["classifier.weight"], weights["classifier.bias"]);           // (B, 3)
        double error = (logits - reference["logits"]).abs().max().item<float>();
        output.WriteLine($"|classifier(tanh(pooler(last_hidden_state[:, 0]))) - logits| max {error:E3}");
        Assert.True(error <= 1e-5, $"{error}");
    }

    [Fact]
    public void BertTiny_StateDictKeysAndShapesArePinned()
    {
        var expected = new List<string>
        {
            "bert.embeddings.word_embeddings.weight [223, 48]",
            "bert.embeddings.position_embeddings.weight [32, 48]",
            "bert.embeddings.token_type_embeddings.weight [2, 48]",
            "bert.embeddings.LayerNorm.weight [48]",
            "bert.embeddings.LayerNorm.bias [48]",
        };
        for (int i = 0; i < 2; i++)
        {
            string p = $"bert.encoder.layer.{i}.";
            expected.AddRange(
            [
                p + "attention.self.query.weight [48, 48]",
                p + "attention.self.query.bias [48]",
                p + "attention.self.key.weight [48, 48]",
                p + "attention.self.key.bias [48]",
                p + "attention.self.value.weight [48, 48]",
                p + "attention.self.value.bias [48]",
                p + "attention.output.dense.weight [48, 48]",
                p + "attention.output.dense.bias [48]",
                p + "attention.output.LayerNorm.weight [48]",
                p + "attention.output.LayerNorm.bias [48]",
                p + "intermediate.dense.weight [96, 48]",
                p + "intermediate.dense.bias [96]",
                p + "output.dense.weight [48, 96]",
                p + "output.dense.bias [48]",
                p + "output.LayerNorm.weight [48]",
                p + "output.LayerNorm.bias [48]",
            ]);
        }
        expected.AddRange(
        [
            "bert.pooler.dense.weight [48, 48]",
            "bert.pooler.dense.bias [48]",
            "classifier.weight [3, 48]",
            "classifier.bias [3]",
        ]);
        Assert.Equal(41, expected.Count);

        using TransformerModel model = PretrainedModel.Create(ModelConfig.Load(Fixture), ModelHead.SequenceClassification);
        Assert.Equal(expected, DecoderFixtures.KeysAndShapes(model));
        Assert.Equal(model.state_dict().Keys, model.WeightTable.Entries.Select(e => e.ParameterName));
        Assert.All(model.WeightTable.Entries, e => Assert.False(e.Transposed));
        Assert.Equal(["bert.pooler", "classifier"], model.HeadModuleNames);

        // The masked-LM model: no pooler (BertForMaskedLM), the cls.predictions head, no decoder weight (tied).
        using TransformerModel mlm = PretrainedModel.Create(ModelConfig.Load(Fixture), ModelHead.MaskedLM);
        Assert.Equal(
        [
            .. expected.Take(37),
            "cls.predictions.bias [223]",
            "cls.predictions.transform.dense.weight [48, 48]",
            "cls.predictions.transform.dense.bias [48]",
            "cls.predictions.transform.LayerNorm.weight [48]",
            "cls.predictions.transform.LayerNorm.bias [48]",
        ], DecoderFixtures.KeysAndShapes(mlm));
        Assert.Equal(mlm.state_dict().Keys, mlm.WeightTable.Entries.Select(e => e.ParameterName));
        Assert.Equal(["cls"], mlm.HeadModuleNames);
    }

    [Fact]
    public void BertTiny_SaveThenLoadRoundTripsBitExactly() => DecoderFixtures.AssertRoundTrip(Fixture, temp, output);

    [Theory]
    [InlineData("missing", "bert.encoder.layer.1.intermediate.dense.bias")]
    [InlineData("extra", "bert.encoder.layer.0.attention.self.extra.weight")]
    [InlineData("shape", "bert.encoder.layer.1.attention.self.query.weight")]
    public void BertTiny_CheckpointMismatchNamesTheKey(string kind, string key) =>
        DecoderFixtures.AssertMismatch(Fixture, temp, kind, key, output);

    [Fact]
    public void BertTiny_ClassifierIgnoresRightPadding()
    {
        using var scope = NewDisposeScope();
        manual_seed(5);
        using TransformerModel model = PretrainedModel.Load(Fixture);
        model.eval();
        DecoderFixtures.AssertClassifierIgnoresRightPadding(model, vocab: 223, classes: 3);
    }

    [Fact]
    public void Bert_PreTrainingCheckpointLoadsAsMaskedLmIgnoringTiedDecoderNspAndPooler()
    {
        // What BertForPreTraining (bert-base-uncased) files carry beyond BertForMaskedLM's parameters: the
        // position_ids buffer, the tied decoder weight and its bias alias, the NSP head and a pooler.
        using var scope = NewDisposeScope();
        var tensors = SafeTensors.Load(Path.Combine(Fixture, "model.safetensors"));
        tensors.Remove("classifier.weight");
        tensors.Remove("classifier.bias");
        manual_seed(11);
        tensors["cls.predictions.bias"] = randn(223);
        tensors["cls.predictions.transform.dense.weight"] = randn(48, 48);
        tensors["cls.predictions.transform.dense.bias"] = randn(48);
        tensors["cls.predictions.transform.LayerNorm.weight"] = randn(48);
        tensors["cls.predictions.transform.LayerNorm.bias"] = randn(48);
        tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"];
        tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"];
        tensors["cls.seq_relationship.weight"] = randn(2, 48);
        tensors["cls.seq_relationship.bias"] = randn(2);
        tensors["bert.embeddings.position_ids"] = arange(32).unsqueeze(0);
        string dir = Folder("pretraining");
        File.WriteAllText(Path.Combine(dir, "config.json"),
            File.ReadAllText(Path.Combine(Fixture, "config.json")).Replace("BertForSequenceClassification", "BertForPreTraining"));
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), tensors);

        using TransformerModel model = PretrainedModel.Load(dir, null, null, out LoadReport report);
        Assert.Equal(ModelHead.MaskedLM, model.Head);
        Assert.Empty(report.NewlyInitialised);
        Assert.Empty(report.DroppedKeys);
        var state = model.state_dict();
        Assert.True(state["cls.predictions.bias"].Equals(tensors["cls.predictions.bias"]));
        Assert.True(state["cls.predictions.transform.dense.weight"].Equals(tensors["cls.predictions.transform.dense.weight"]));
        AssertMaskedLmHeadIsTied((BertTransformer)model, vocab: 223);
    }

    [Fact]
    public void Bert_MaskedLmCheckpointWithoutPoolerLoadsForClassificationWithFreshPoolerAndClassifier()
    {
        // BertForMaskedLM (and SparseTune's own pretraining) saves no pooler; a classifier built on it gets a fresh
        // pooler, which is therefore part of the head that trains in full.
        using var scope = NewDisposeScope();
        manual_seed(12);
        using (TransformerModel mlm = PretrainedModel.Create(
            ModelConfig.Load(Fixture) with { Architectures = ["BertForMaskedLM"], Id2Label = null }, ModelHead.MaskedLM))
            PretrainedModel.Save(mlm, Folder("mlm"));

        using TransformerModel model = PretrainedModel.Load(Path.Combine(temp, "mlm"), ModelHead.SequenceClassification,
            ["neg", "pos"], out LoadReport report);
        Assert.Equal(
            ["bert.pooler.dense.bias", "bert.pooler.dense.weight", "classifier.bias", "classifier.weight"],
            report.NewlyInitialised.Order(StringComparer.Ordinal));
        Assert.Equal(
            ["cls.predictions.bias", "cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.weight",
             "cls.predictions.transform.dense.bias", "cls.predictions.transform.dense.weight"],
            report.DroppedKeys.Order(StringComparer.Ordinal));
        model.eval();
        using var noGrad = no_grad();
        using ModelOutput result = model.Forward(randint(2, 223, [2, 7]));
        Assert.Equal([2L, 2L], result.Logits.shape);
    }

    [Fact]
    public void Bert_DropoutOnlyInTrainingMode()
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        using TransformerModel model = PretrainedModel.Load(Fixture);
        Tensor ids = randint(1, 223, [2, 10]);
        using var noGrad = no_grad();
        model.eval();
        using (ModelOutput a = model.Forward(ids), b = model.Forward(ids))
        {
            Assert.True(a.Logits.Equals(b.Logits));
            Assert.True(a.LastHiddenState.Equals(b.LastHiddenState));
        }
        model.train();
        using (ModelOutput a = model.Forward(ids), b = model.Forward(ids)) Assert.False(a.LastHiddenState.Equals(b.LastHiddenState));
    }

    [Fact]
    public void Bert_GradientCheckpointingGivesTheSameGradientsWithDropout()
    {
        using TransformerModel model = PretrainedModel.Load(Fixture);
        DecoderFixtures.AssertCheckpointingKeepsGradients(model, vocab: 223, output);
    }

    [Fact]
    public void Bert_ForwardAndBackwardLeaveNoLiveTensors()
    {
        using TransformerModel model = PretrainedModel.Load(Fixture);
        DecoderFixtures.AssertNoTensorLeaks(model, vocab: 223);
    }

    [Fact]
    public void Bert_HeadCountIsMutableStateOfTheSelfAttentionModule()
    {
        // Physically drop head 2 of layer 0 (its rows of query/key/value and columns of attention.output.dense):
        // forward must follow the module's NumHeads, not the config's 4.
        using var scope = NewDisposeScope();
        using TransformerModel model = PretrainedModel.Load(Fixture);
        model.eval();
        BertAttention attention = ((BertTransformer)model).Body.Encoder.Layers[0].Attention;
        Assert.Equal(4, attention.Self.NumHeads);
        Assert.Equal(12, attention.Self.HeadDim);

        Tensor keep = cat([arange(0, 24), arange(36, 48)]);   // heads 0, 1, 3
        attention.Self.Query.KeepRows(keep);
        attention.Self.Key.KeepRows(keep);
        attention.Self.Value.KeepRows(keep);
        attention.Output.Dense.KeepColumns(keep);
        attention.Self.NumHeads = 3;

        using var noGrad = no_grad();
        using ModelOutput result = model.Forward(randint(1, 223, [2, 9]));
        Assert.Equal([2L, 9L, 48L], result.LastHiddenState.shape);
        Assert.True(result.Logits.isfinite().all().item<bool>());
        Assert.Equal([36L, 48L], model.state_dict()["bert.encoder.layer.0.attention.self.query.weight"].shape);
    }

    // ---- RoBERTa ------------------------------------------------------------------------------------------------

    const int RobertaVocab = 60;
    const int RobertaPad = 1;
    const int RobertaMaxLength = 12;

    /// <summary>A tiny RoBERTa config: pad 1, one token type, and max_position_embeddings = max length + pad + 1.</summary>
    static BertConfig TinyRobertaConfig(string architecture) => new()
    {
        ModelType = "roberta",
        Architectures = [architecture],
        VocabSize = RobertaVocab,
        Hidden = 32,
        Layers = 2,
        Heads = 4,
        Intermediate = 64,
        MaxPositionEmbeddings = RobertaMaxLength + 2,
        TypeVocabSize = 1,
        LayerNormEps = 1e-5,
        PadTokenId = RobertaPad,
        BosTokenId = 0,
        Id2Label = architecture.EndsWith("ForSequenceClassification", StringComparison.Ordinal)
            ? new() { ["0"] = "a", ["1"] = "b", ["2"] = "c" }
            : null,
    };

    /// <summary>Create → Save → Load: a random RoBERTa model read back through its own checkpoint.</summary>
    TransformerModel SavedAndLoadedRoberta(string architecture, ModelHead head, int seed)
    {
        manual_seed(seed);
        string dir = Folder(architecture);
        using (TransformerModel created = PretrainedModel.Create(TinyRobertaConfig(architecture), head))
        {
            PretrainedModel.Save(created, dir);
            TransformerModel loaded = PretrainedModel.Load(dir);
            var before = created.state_dict();
            var after = loaded.state_dict();
            Assert.Equal(before.Keys, after.Keys);
            foreach (var (name, tensor) in before) Assert.True(tensor.Equals(after[name]), $"{name} changed in the round trip");
            return loaded;
        }
    }

    [Fact]
    public void Roberta_PositionIdsCountRealTokensFromPadPlusOne()
    {
        using var scope = NewDisposeScope();
        Tensor ids = tensor(new long[,] { { 5, 6, 1, 1 }, { 1, 1, 7, 8 }, { 0, 9, 4, 2 } });
        Tensor positions = BertTransformer.RobertaPositionIds(ids, padTokenId: 1);
        Assert.Equal(new long[] { 2, 3, 1, 1, /* left padding */ 1, 1, 2, 3, /* no padding */ 2, 3, 4, 5 },
            positions.data<long>().ToArray());
    }

    [Fact]
    public void Roberta_QuestionAnsweringHeadIsQaOutputsWithoutPooler()
    {
        using var scope = NewDisposeScope();
        using TransformerModel model = SavedAndLoadedRoberta("RobertaForQuestionAnswering", ModelHead.QuestionAnswering, seed: 33);
        Assert.Equal(ModelHead.QuestionAnswering, model.Head);
        var keys = model.state_dict().Keys.ToList();
        Assert.Contains("qa_outputs.weight", keys);
        Assert.DoesNotContain(keys, k => k.Contains("pooler", StringComparison.Ordinal));
        model.eval();
        using var noGrad = no_grad();
        Tensor ids = tensor(new long[,] { { 0, 5, 6, 7, 2 }, { 0, 8, 2, 1, 1 } });
        using var output = model.Forward(ids, ids.ne(RobertaPad).to_type(ScalarType.Int64));
        Assert.Equal([2L, 5, 2], output.Logits.shape);
    }

    [Fact]
    public void Roberta_MultipleChoiceHeadPoolsEachChoice_AndScoresAChoiceAsItWouldAlone()
    {
        using var scope = NewDisposeScope();
        using TransformerModel model = SavedAndLoadedRoberta("RobertaForMultipleChoice", ModelHead.MultipleChoice, seed: 35);
        var keys = model.state_dict().Keys.ToList();
        Assert.Contains("roberta.pooler.dense.weight", keys);
        Assert.Contains("classifier.weight", keys);
        Assert.Equal([1L, 32], model.state_dict()["classifier.weight"].shape);
        model.eval();
        using var noGrad = no_grad();
        Tensor ids = tensor(new long[,,] { { { 0, 5, 6, 2 }, { 0, 9, 2, 1 }, { 0, 7, 7, 2 } } });   // one question, three choices
        Tensor mask = ids.ne(RobertaPad).to_type(ScalarType.Int64);
        using var all = model.Forward(ids, mask);
        Assert.Equal([1L, 3], all.Logits.shape);
        using var second = model.Forward(ids[.., 1..2, ..3], mask[.., 1..2, ..3]);   // the padded choice alone, unpadded
        Assert.Equal(all.Logits[0, 1].item<float>(), second.Logits[0, 0].item<float>(), 5);
    }

    [Fact]
    public void Roberta_ClassifierSavesAndLoadsUnderHuggingFaceNamesWithoutPooler()
    {
        using var scope = NewDisposeScope();
        using TransformerModel model = SavedAndLoadedRoberta("RobertaForSequenceClassification", ModelHead.SequenceClassification, seed: 31);
        Assert.Equal(ModelHead.SequenceClassification, model.Head);
        var keys = model.state_dict().Keys.ToList();
        Assert.Equal(2 + 3 + 2 * 16 + 4, keys.Count);   // embeddings (3 + LayerNorm 2), 2 layers, classifier.{dense,out_proj}
        Assert.Equal("roberta.embeddings.word_embeddings.weight", keys[0]);
        Assert.Contains("roberta.encoder.layer.1.attention.self.value.bias", keys);
        Assert.Equal(["classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight", "classifier.out_proj.bias"], keys.TakeLast(4));
        Assert.DoesNotContain(keys, k => k.Contains("pooler"));
        Assert.Equal([1L, 32L], model.state_dict()["roberta.embeddings.token_type_embeddings.weight"].shape);
        Assert.Equal(["classifier"], model.HeadModuleNames);
        Assert.Equal(keys, model.WeightTable.Entries.Select(e => e.ParameterName));
    }

    [Fact]
    public void Roberta_RightPaddedBatchEqualsEachRowAlone()
    {
        using var scope = NewDisposeScope();
        using TransformerModel model = SavedAndLoadedRoberta("RobertaForSequenceClassification", ModelHead.SequenceClassification, seed: 32);
        model.eval();
        using var noGrad = no_grad();
        int[] lengths = [RobertaMaxLength, 7, 3];
        Tensor ids = full([lengths.Length, RobertaMaxLength], RobertaPad, dtype: ScalarType.Int64);
        Tensor mask = zeros(lengths.Length, RobertaMaxLength, dtype: ScalarType.Int64);
        for (int b = 0; b < lengths.Length; b++)
        {
            ids[b, TensorIndex.Slice(0, lengths[b])] = randint(3, RobertaVocab, [lengths[b]]);   // never the pad id
            mask[b, TensorIndex.Slice(0, lengths[b])] = 1;
        }

        using ModelOutput batch = model.Forward(ids, mask);
        Assert.Equal([3L, 3L], batch.Logits.shape);
        double worst = 0;
        for (int b = 0; b < lengths.Length; b++)
        {
            using ModelOutput alone = model.Forward(ids[TensorIndex.Slice(b, b + 1), TensorIndex.Slice(0, lengths[b])]);
            Tensor hidden = batch.LastHiddenState[TensorIndex.Slice(b, b + 1), TensorIndex.Slice(0, lengths[b])];
            worst = Math.Max(worst, (hidden - alone.LastHiddenState).abs().max().item<float>());
            worst = Math.Max(worst, (batch.Logits[b] - alone.Logits[0]).abs().max().item<float>());
        }
        output.WriteLine($"max |padded batch - row alone| at real positions: {worst:E3}");
        Assert.True(worst <= 1e-5, $"{worst}");

        // Positions run to pad + max length = max_position_embeddings - 1; one more token has no position.
        Assert.Throws<ArgumentException>(() => model.Forward(randint(3, RobertaVocab, [1, RobertaMaxLength + 1])).Dispose());
    }

    [Fact]
    public void Roberta_MaskedLmLogitsUseTheTiedWordEmbeddings()
    {
        using var scope = NewDisposeScope();
        using TransformerModel model = SavedAndLoadedRoberta("RobertaForMaskedLM", ModelHead.MaskedLM, seed: 33);
        Assert.Equal(ModelHead.MaskedLM, model.Head);
        var keys = model.state_dict().Keys.ToList();
        Assert.Equal(["lm_head.bias", "lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight", "lm_head.layer_norm.bias"],
            keys.Where(k => k.StartsWith("lm_head.", StringComparison.Ordinal)));
        Assert.DoesNotContain(keys, k => k.Contains("decoder") || k.Contains("pooler"));
        Assert.Equal(["lm_head"], model.HeadModuleNames);
        Assert.Equal(keys, model.WeightTable.Entries.Select(e => e.ParameterName));
        AssertMaskedLmHeadIsTied((BertTransformer)model, RobertaVocab);
    }

    [Fact]
    public void Roberta_LoadIgnoresTiedDecoderPositionIdsAndStrayPooler()
    {
        // Hugging Face RoBERTa files may carry lm_head.decoder.{weight,bias} (tied aliases), the position_ids
        // buffer, and a roberta.pooler that RobertaFor* never builds.
        using var scope = NewDisposeScope();
        using TransformerModel original = SavedAndLoadedRoberta("RobertaForMaskedLM", ModelHead.MaskedLM, seed: 34);
        var tensors = SafeTensors.Load(Path.Combine(temp, "RobertaForMaskedLM", "model.safetensors"));
        tensors["lm_head.decoder.weight"] = tensors["roberta.embeddings.word_embeddings.weight"];
        tensors["lm_head.decoder.bias"] = tensors["lm_head.bias"];
        tensors["roberta.embeddings.position_ids"] = arange(RobertaMaxLength + 2).unsqueeze(0);
        tensors["roberta.pooler.dense.weight"] = randn(32, 32);
        tensors["roberta.pooler.dense.bias"] = randn(32);
        string dir = Folder("roberta-extras");
        File.Copy(Path.Combine(temp, "RobertaForMaskedLM", "config.json"), Path.Combine(dir, "config.json"));
        SafeTensors.Save(Path.Combine(dir, "model.safetensors"), tensors);

        using TransformerModel model = PretrainedModel.Load(dir, null, null, out LoadReport report);
        Assert.Empty(report.NewlyInitialised);
        Assert.Empty(report.DroppedKeys);
        foreach (var (name, t) in original.state_dict()) Assert.True(t.Equals(model.state_dict()[name]), name);
    }

    // ---- helpers ------------------------------------------------------------------------------------------------

    string Folder(string name) => DecoderFixtures.Folder(temp, name);

    /// <summary>
    /// The masked-LM decoder is the word embedding matrix itself (same storage, no parameter of its own), and the
    /// logits are head(h) · Eᵀ + bias: (B, T, vocab).
    /// </summary>
    static void AssertMaskedLmHeadIsTied(BertTransformer model, long vocab)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        model.eval();
        Tensor embeddings = model.Body.Embeddings.WordEmbeddings.weight!;
        static IntPtr Address(Tensor t) => t.storage<float>().data_ptr();
        Assert.Equal(Address(embeddings), Address(model.DecoderWeight));
        Assert.Equal(Address(model.state_dict()[model.BodyName + ".embeddings.word_embeddings.weight"]), Address(model.DecoderWeight));

        Tensor ids = randint(3, vocab, [2, 6]);
        using ModelOutput result = model.Forward(ids);
        Assert.Equal([2L, 6L, vocab], result.Logits.shape);
        Tensor h = result.LastHiddenState;
        Tensor expected = model.LmHead is { } lm
            ? F.linear(lm.LayerNorm.call(lm.Dense.call(h).gelu()), embeddings, lm.Bias)
            : F.linear(model.Cls!.Predictions.Transform.call(h), embeddings, model.Cls.Predictions.Bias);
        Assert.True((result.Logits - expected).abs().max().item<float>() < 1e-6);

        // Changing an embedding row moves that token's logit: the decoder reads the embedding's storage.
        long unused = Enumerable.Range(3, (int)vocab - 3).First(t => !ids.eq(t).any().item<bool>());
        Tensor before = result.Logits[TensorIndex.Ellipsis, unused].clone();
        embeddings[unused].add_(1.0);
        try
        {
            using ModelOutput after = model.Forward(ids);
            Assert.True(after.LastHiddenState.Equals(result.LastHiddenState));   // the row is not looked up
            Assert.False(after.Logits[TensorIndex.Ellipsis, unused].allclose(before));
        }
        finally { embeddings[unused].sub_(1.0); }
    }
}
