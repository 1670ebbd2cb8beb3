"""Label-smoothed cross-entropy with a fused backward.

With q the smoothed target distribution ((1 - ε) on the reference token, plus ε / V on every
token), the loss is -Σ_v q_v log p_v and its gradient with respect to the logits is p - q. The
forward keeps only the log-probabilities; the backward turns them into p - q in place. Autograd
on log_softmax + gather + mean would instead make about eight passes over the [N, V] logits,
which for an 8k vocabulary is the largest tensor in the model.
"""

from __future__ import annotations

import torch


class SmoothedCrossEntropy(torch.autograd.Function):
    """(loss, nll) = SmoothedCrossEntropy.apply(logits [N, V], target [N], ε), both summed."""

    @staticmethod
    def forward(ctx, logits, target, smoothing):  # noqa: D102
        log_probs = torch.log_softmax(logits, dim=-1)  # [N, V]
        nll = -log_probs.gather(1, target.unsqueeze(1)).sum()
        loss = (
            nll
            if smoothing == 0.0
            else ((1 - smoothing) * nll - smoothing * log_probs.mean(-1).sum())
        )
        ctx.save_for_backward(log_probs, target)
        ctx.smoothing = smoothing
        nll = nll.clone()  # a separate output: `loss` may be the same tensor when ε = 0
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, d_loss, _):  # noqa: D102
        log_probs, target = ctx.saved_tensors
        smoothing, vocab = ctx.smoothing, log_probs.shape[1]
        grad = log_probs.exp_().sub_(smoothing / vocab)  # p - ε/V (log_probs is not needed again)
        grad.scatter_add_(
            1, target.unsqueeze(1), grad.new_full((len(target), 1), smoothing - 1.0)
        )  # - (1 - ε)
        return grad.mul_(d_loss), None, None
