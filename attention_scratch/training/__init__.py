"""Training entry points (chapters 2, 3 and 15), run as ``python -m attention_scratch.seq2seq``
and ``python -m attention_scratch.transformer``."""
