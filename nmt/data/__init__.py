"""Data: corpus reading and cleaning, subword tokenizers, the binarised store, batching."""
