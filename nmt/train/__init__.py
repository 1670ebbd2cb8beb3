"""Training: the loop and its collaborators; `train()` is what `nmt train` calls."""

from nmt.train.trainer import MAX_SKIPPED, Trainer, learning_rate, train

__all__ = ["MAX_SKIPPED", "Trainer", "learning_rate", "train"]
