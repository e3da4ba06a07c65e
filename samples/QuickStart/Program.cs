using SparseTune.Data;
using SparseTune.Models;
using SparseTune.Tokenization;
using SparseTune.Training;
using SparseTune.Tuners;
using static TorchSharp.torch;

// The bundled demo: a tiny pretrained BERT and fortune cookies labelled computers, food, sports or startrek.
string demo = Path.Combine(RepositoryRoot(), "demo");
string baseModel = Path.Combine(demo, "model");

// 1. Fine-tune with LoRA (rank 8 on query and value, the classifier in full); the adapter is saved in the output folder.
FineTuneOutcome run = FineTuneJob.Run(new FineTuneOptions
{
    ModelDirectory = baseModel,
    TrainFile = Path.Combine(demo, "data", "fortunes-train.jsonl"),   // CSV, TSV or JSONL with text and label columns
    EvalFile = Path.Combine(demo, "data", "fortunes-eval.jsonl"),
    Method = "lora",
    Training = new TrainingOptions { Epochs = 10, LearningRate = 5e-3, WarmupRatio = 0.06, OutputDirectory = "runs/quickstart" },
    Overwrite = true,
}, log: Console.WriteLine);
Console.WriteLine($"eval accuracy {run.Report.BaselineEval?["accuracy"]:0.000} untuned -> {run.Report.Eval["accuracy"]:0.000}; adapter saved in {run.Outputs["adapter"]}");

// 2. Predict labels for new texts with the base model plus the saved adapter.
string[] texts = ["My computer crashed and the disk is full of core dumps.", "Beam me up, Scotty, there is no intelligent life down here.",
    "Never eat more than you can lift.", "The team lost the game in the final inning."];
foreach (var (text, label) in texts.Zip(Predict(baseModel, run.Outputs["adapter"], texts)))
    Console.WriteLine($"{label,-10} {text}");

// Loads base + adapter, pads the batch, runs the model and takes the argmax of the class logits.
static string[] Predict(string baseModel, string adapter, string[] texts)
{
    using TransformerModel model = MethodArtifacts.LoadWithArtifact(baseModel, adapter, out _);
    model.eval();
    var encoder = new TokenizerEncoder(TextTokenizer.FromFolder(baseModel));
    var ids = texts.Select(t => encoder.Encode(t, addSpecialTokens: true)).ToList();
    int length = ids.Max(i => i.Count);
    using var scope = NewDisposeScope();
    using var noGrad = no_grad();
    Tensor inputIds = tensor(ids.SelectMany(i => i.Concat(Enumerable.Repeat(encoder.PadId, length - i.Count))).Select(x => (long)x).ToArray(), [texts.Length, length]);
    Tensor mask = tensor(ids.SelectMany(i => Enumerable.Repeat(1L, i.Count).Concat(Enumerable.Repeat(0L, length - i.Count))).ToArray(), [texts.Length, length]);
    long[] best = model.Forward(inputIds, mask).Logits.argmax(-1).data<long>().ToArray();   // (B, labels) -> (B)
    return best.Select(b => model.Config.Id2Label![b.ToString()]).ToArray();
}

// The folder holding demo/: the working folder or the program's folder, or one above them.
static string RepositoryRoot()
{
    foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "demo", "model"))) return dir.FullName;
    throw new DirectoryNotFoundException("demo/model not found: run the sample from the SparseTune checkout");
}
