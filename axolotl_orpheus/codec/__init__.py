"""SNAC, the codec whose codes Orpheus speaks: load it, encode clips exactly, decode codes to audio.

- `loading`: SNAC's files, read safely, with the fast CPU path (`fast/`) put in place;
- `encoder`: exact batched and windowed encoding;
- `decoder`: seeded decoding;
- `streaming`: decoding frames as they arrive, chunk by chunk, equal to one whole decode;
- `memory`: glibc kept from unmapping SNAC's activations while encoding.
"""

from axolotl_orpheus.codec.decoder import decode
from axolotl_orpheus.codec.encoder import MemoryLimit, encode
from axolotl_orpheus.codec.loading import load_snac, load_stock_snac, weights_digest
from axolotl_orpheus.codec.memory import keep_freed_memory

__all__ = ["MemoryLimit", "decode", "encode", "keep_freed_memory", "load_snac", "load_stock_snac", "weights_digest"]
