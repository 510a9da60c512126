"""The `axolotl-orpheus` command (`main`), the CPU demo, and the offline stand-ins the demo and tests use."""
