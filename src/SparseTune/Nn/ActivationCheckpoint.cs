using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace SparseTune.Nn;

/// <summary>
/// Activation (gradient) checkpointing, which TorchSharp lacks: the block's forward runs without recording a
/// graph; its backward restores the RNG state (so dropout masks repeat), re-runs the block with grad enabled
/// and back-propagates through it, which accumulates the block's parameter gradients and yields the input's.
/// Memory: one block's activations at a time instead of all of them, for one extra forward per block.
/// </summary>
public static class ActivationCheckpoint
{
    public static Tensor Run(Func<Tensor, Tensor> block, Tensor input)
    {
        // A custom function joins the graph only when a tensor input requires grad. Below frozen embeddings the
        // hidden state does not, yet the block's own trainable tensors need their backward: make the input a
        // grad-requiring leaf (the original SIFT code marks the first parameter trainable for the same reason).
        if (!input.requires_grad) input = input.detach().requires_grad_(true);
        return CheckpointFunction.apply(input, block);
    }

    sealed class CheckpointFunction : SingleTensorFunction<CheckpointFunction>
    {
        public override string Name => "ActivationCheckpoint";

        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            var input = (Tensor)vars[0];
            ctx.save_for_backward([input]);
            ctx.save_data("block", vars[1]);
            using (var rng = torch.random.get_rng_state()) ctx.save_data("rng", rng.data<byte>().ToArray());
            return ((Func<Tensor, Tensor>)vars[1])(input);
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor gradOutput)
        {
            var block = (Func<Tensor, Tensor>)ctx.get_data("block");
            using var rng = tensor((byte[])ctx.get_data("rng"));
            using var scope = NewDisposeScope();
            Tensor input = ctx.get_saved_variables()[0];
            using var currentRng = torch.random.get_rng_state();
            torch.random.set_rng_state(rng);
            Tensor replayInput = input.detach().requires_grad_(input.requires_grad);
            using (enable_grad())
            {
                Tensor output = block(replayInput);
                output.backward([gradOutput]);
            }
            torch.random.set_rng_state(currentRng);
            Tensor? gradInput = replayInput.grad;
            gradInput?.MoveToOuterDisposeScope();
            return [gradInput!, null!];
        }
    }
}
