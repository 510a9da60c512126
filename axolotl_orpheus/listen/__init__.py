"""Listening to a voice: speaking from a checkpoint, hearing it back (ASR, speaker embeddings) and scoring it,
during training and in `evaluate`."""
