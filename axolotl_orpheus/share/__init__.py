"""Sharing a voice: what every saved checkpoint carries for its loaders, and `axolotl-orpheus share`, which makes a
folder that anyone can load, judge, reproduce and build on (model, stop token, card, config, samples, scores)."""

DEFAULT_SAMPLES = 4  # samples a shared voice carries: enough to hear its voices, quick to speak
