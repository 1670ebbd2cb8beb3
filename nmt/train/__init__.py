"""Training: `nmt train` turns a preprocessed directory into a run directory of checkpoints.

A tour, in the order a run meets its modules:
- run.py: `train()`, what `nmt train` calls: a new, overwritten or resumed run, alone or under
  torchrun; it builds the trainer and runs it.
- trainer.py: `Trainer`, the loop: a group of batches, one update, then log, validate,
  checkpoint and check the stop conditions, each through the collaborators below.
- update.py: one optimizer update (forward/backward over the group's batches, clip, step) and
  the skip of a gradient that is not finite.
- schedule.py: the learning rate of each update.
- progress.py: `Progress`, what a validation changes (best score, early stopping, plateau's
  scale) and when the run is over.
- validation.py: the dev set's loss and greedy BLEU/chrF.
- ema.py: the averaged weights (`train.ema_decay`).
- state.py: what last.pt holds and how a run resumes from it; best.pt and step-N.pt.
- runlog.py: metrics.jsonl, the log lines and the progress bar.
- rundir.py: which files of a run directory are the run's.
"""

from nmt.train.run import train
from nmt.train.schedule import learning_rate
from nmt.train.trainer import Trainer
from nmt.train.update import MAX_SKIPPED

__all__ = ["MAX_SKIPPED", "Trainer", "learning_rate", "train"]
