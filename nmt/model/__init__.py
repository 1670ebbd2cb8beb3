"""GRU encoder-decoder models: rnnenc (Cho et al. 2014), rnnsearch (Bahdanau et al. 2015), luong;
and their checkpoints (`nmt.model.checkpoint`)."""

from nmt.model.decoder import resize
from nmt.model.seq2seq import DecoderState, Seq2Seq, build_model

__all__ = ["DecoderState", "Seq2Seq", "build_model", "resize"]
