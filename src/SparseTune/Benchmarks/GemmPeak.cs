using System.Diagnostics;
using static TorchSharp.torch;

namespace SparseTune.Benchmarks;

/// <summary>
/// This machine's matrix-multiply throughput through libtorch, the denominator of MFU. Measured with the thread
/// count the training runs use, on square matrices large enough to reach the BLAS kernel's steady state.
/// </summary>
public static class GemmPeak
{
    /// <summary>Best GFLOP/s over a few timed n×n×n products (2n³ FLOPs each) after a warm-up.</summary>
    public static double MeasureGflops(ScalarType dtype = ScalarType.Float32, int n = 1024, int repeats = 10)
    {
        using var scope = NewDisposeScope();
        var a = randn(n, n).to_type(dtype);
        var b = randn(n, n).to_type(dtype);
        using (var warm = a.matmul(b)) { }
        double best = 0;
        for (int r = 0; r < repeats; r++)
        {
            var watch = Stopwatch.StartNew();
            using var c = a.matmul(b);
            watch.Stop();
            best = Math.Max(best, 2.0 * n * n * n / watch.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }

    static readonly Lazy<bool> bf16Fast = new(() =>
        MeasureGflops(ScalarType.BFloat16, n: 512, repeats: 3) > MeasureGflops(ScalarType.Float32, n: 512, repeats: 3));

    /// <summary>
    /// Whether bf16 matrix products beat float32 on this CPU (native bf16 dot products, e.g. AVX512-BF16 or AMX),
    /// measured once per process: what <c>--precision auto</c> decides by.
    /// </summary>
    public static bool Bf16IsNativelyFast() => bf16Fast.Value;

    /// <summary>True when libtorch computes bf16 matmuls here faster than a tenth of fp32 (i.e. natively).</summary>
    public static bool Bf16LooksNative(double fp32Gflops, double bf16Gflops) => bf16Gflops > 0.1 * fp32Gflops;
}
