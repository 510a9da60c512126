"""axolotl-orpheus: fine-tune Orpheus TTS with axolotl on raw audio + text."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `import axolotl_orpheus.layout` does not import axolotl; axolotl's plugin loader
    # still finds `axolotl_orpheus.OrpheusPlugin` through getattr.
    if name == "OrpheusPlugin":
        from axolotl_orpheus.plugin import OrpheusPlugin

        return OrpheusPlugin
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["OrpheusPlugin", "__version__"]
