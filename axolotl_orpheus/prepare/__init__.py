"""Preparing data, inside `axolotl preprocess`: local sources made loadable, clips encoded (locally or on Ray)
through the self-checking codes cache, and the report of what was kept and dropped."""
