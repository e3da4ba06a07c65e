using System.CommandLine;
using System.Text.Json;
using SparseTune.Distributed;
using static TorchSharp.torch;

namespace SparseTune.Cli.Commands;

/// <summary>
/// sparsetune mpi-check: run under mpirun to check that every rank reaches the others before a long fine-tuning run
/// (hostfile, network, libmpi). Each rank all-reduces and broadcasts numbers whose results it knows, through small
/// buckets so that bucketing and chunking are exercised, and prints one JSON line; the exit code is 1 on a wrong result.
/// </summary>
public static class MpiCheckCommand
{
    public static Command Create()
    {
        var command = new Command("mpi-check", "Check data-parallel communication: run as mpirun -np N sparsetune mpi-check; each rank prints one JSON line.");
        command.SetAction(parse => CliSupport.Run(parse, () =>
        {
            MpiProcessGroup group = MpiProcessGroup.World;
            int rank = group.Rank, n = group.Size;
            using var scope = NewDisposeScope();
            // Rank r holds r+1 times [1, 2, …]: the mean is (N+1)/2 times it. Three tensors in buckets of 5 elements:
            // [3 | 4] share nothing with the 7-element tensor, which goes alone in chunks of 5 and 2.
            Tensor[] tensors = [arange(1, 4, dtype: ScalarType.Float32) * (rank + 1), arange(1, 5, dtype: ScalarType.Float32) * (rank + 1),
                arange(1, 8, dtype: ScalarType.Float32).reshape(7, 1) * (rank + 1)];
            int saved = group.BucketElements;
            group.BucketElements = 5;
            group.AllReduceMean(tensors);
            group.BucketElements = saved;
            double meanFactor = (n + 1) / 2.0;
            double meanError = tensors.Max(t => (t.reshape(-1) - arange(1, t.numel() + 1, dtype: ScalarType.Float32) * meanFactor).abs().max().item<float>());

            double[] sums = [rank + 1, 1];
            group.AllReduceSum(sums);
            bool sumOk = sums[0] == n * (n + 1) / 2.0 && sums[1] == n;

            Tensor shared = rank == 0 ? tensor(new long[] { 7, -3, 1L << 40 }) : zeros(3, dtype: ScalarType.Int64);
            group.Broadcast([shared]);
            bool broadcastOk = shared.data<long>().ToArray().SequenceEqual(new long[] { 7, -3, 1L << 40 });
            group.Barrier();

            bool ok = meanError < 1e-6 && sumOk && broadcastOk;
            Console.Out.WriteLine(JsonSerializer.Serialize(new
            {
                rank, size = n, host = Environment.MachineName, mean_max_error = meanError, sum = sums[0], broadcast = broadcastOk, ok,
            }));
            return ok ? 0 : 1;
        }));
        return command;
    }
}
