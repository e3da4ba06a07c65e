using SparseTune.Inference;
using SparseTune.Training;

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

// 2. Predict labels for new texts with the base model plus the saved adapter (merged in memory).
string[] texts = ["My computer crashed and the disk is full of core dumps.", "Beam me up, Scotty, there is no intelligent life down here.",
    "Never eat more than you can lift.", "The team lost the game in the final inning."];
using var predictor = ClassificationPredictor.Load(baseModel, adapter: run.Outputs["adapter"]);
foreach (var (text, prediction) in texts.Zip(predictor.Predict(texts)))
    Console.WriteLine($"{prediction.Label,-10} {prediction.Scores[prediction.Label!]:0.00}  {text}");

// The folder holding demo/: the working folder or the program's folder, or one above them.
static string RepositoryRoot()
{
    foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "demo", "model"))) return dir.FullName;
    throw new DirectoryNotFoundException("demo/model not found: run the sample from the SparseTune checkout");
}
