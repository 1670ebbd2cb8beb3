"""GRU encoder-decoder models: rnnenc (Cho et al. 2014), rnnsearch (Bahdanau et al. 2015), luong;
and their checkpoints (`nmt.model.checkpoint`)."""

from nmt.model.seq2seq import Seq2Seq, build_model
from nmt.model.state import DecoderState, resize

__all__ = ["DecoderState", "Seq2Seq", "build_model", "resize"]
