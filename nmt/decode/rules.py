"""What each row of a search may emit at a step: its length limit (eos alone once reached),
the constraints' rule (placeholders kept, `nmt.decode.constraints`), and a forced prefix."""

from __future__ import annotations

import dataclasses

import torch

from nmt.decode.constraints import Constraints, StepRule


def max_lengths(src_lengths: torch.Tensor, a: float, b: int) -> torch.Tensor:
    """Output length limit per sentence: a * source length + b (source length with eos)."""
    return (a * src_lengths.float() + b).long().clamp(min=1)


def limits(
    src_lengths: torch.Tensor,
    a: float,
    b: int,
    constraints: Constraints | None,
    prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Output length limits [B], raised where the constraints or a prefix need more (with
    both, room for every placeholder after the prefix)."""
    limit = max_lengths(src_lengths, a, b)
    forced = None if prefix is None else (prefix >= 0).sum(1)  # [B]
    if forced is not None:
        limit = torch.maximum(limit.to(prefix.device), forced)
    if constraints is None:
        return limit
    limit = constraints.limits(limit.to(constraints.need.device))
    return (
        limit
        if forced is None
        else torch.maximum(limit, forced.to(limit.device) + constraints.count)
    )


def on_device(constraints: Constraints | None, device: torch.device) -> Constraints | None:
    return None if constraints is None else constraints.to(device)


def rules(
    constraints: Constraints | None,
    history: torch.Tensor | None,
    sentence: torch.Tensor,
    t: int | torch.Tensor,
    limit: torch.Tensor,
    prefix: torch.Tensor | None = None,
) -> StepRule:
    """What rows may emit at step t (one, or [N]): history [N, W] of rows of `sentence` [N]
    with length limits limit [N], and the prefix [B, P] (-1 after each sentence's own) each
    sentence's output must begin with. Without constraints, anything until the limit, then
    eos; within a prefix, its token alone."""
    if constraints is None or history is None:
        rule = StepRule(forced=t >= limit)
    else:
        rule = constraints.rule(history, sentence, t, limit)
    if prefix is None or prefix.shape[1] == 0:
        return rule
    t = torch.as_tensor(t, device=sentence.device).expand_as(sentence)
    width = prefix.shape[1]
    token = torch.where(t < width, prefix[sentence, t.clamp(max=width - 1)], -1)  # [N]
    return dataclasses.replace(rule, token=token)
