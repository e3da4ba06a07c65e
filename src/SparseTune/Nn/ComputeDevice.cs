using static TorchSharp.torch;

namespace SparseTune.Nn;

/// <summary>
/// Where a command runs its model: <c>--device cpu|cuda|auto</c>. The model is moved there once after loading and
/// every tensor made during training, evaluation or decoding is created on the model's device
/// (<see cref="Models.TransformerModel.Device"/>). This build references TorchSharp-cpu, so CUDA is only
/// available when the project is built against TorchSharp-cuda-linux (README, "Running on a GPU").
/// </summary>
public static class ComputeDevice
{
    public static readonly IReadOnlyList<string> Choices = ["cpu", "cuda", "auto"];

    /// <summary>The device for a choice; "auto" takes CUDA when libtorch sees a GPU and says in one line when it falls back.</summary>
    public static Device Resolve(string choice, Action<string>? log = null)
    {
        switch (choice.Trim().ToLowerInvariant())
        {
            case "cpu":
                return CPU;
            case "cuda":
                if (!CudaAvailable())
                    throw new ArgumentException("--device cuda: no CUDA device is available to libtorch (this build uses TorchSharp-cpu unless built with -p:TorchSharpPackage=TorchSharp-cuda-linux; see README \"Running on a GPU\")");
                return CUDA;
            case "auto":
                if (CudaAvailable()) return CUDA;
                log?.Invoke("--device auto: no CUDA device available, running on the CPU");
                return CPU;
            default:
                throw new ArgumentException($"--device: unknown '{choice}' (choose {string.Join(", ", Choices)})");
        }
    }

    static bool CudaAvailable()
    {
        try
        {
            return cuda.is_available();
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or InvalidOperationException)
        {
            return false;
        }
    }
}
