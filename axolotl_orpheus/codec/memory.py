"""glibc's malloc kept from unmapping SNAC's large activations while encoding."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

# glibc's malloc parameters (malloc.h), its default for M_MMAP_MAX, and the largest mmap threshold its dynamic
# rule reaches on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX), which sets the trim threshold to twice the mmap threshold.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_MMAP_MAX, _DYNAMIC_MMAP_THRESHOLD_MAX = 65536, 32 * 1024 * 1024


@contextmanager
def keep_freed_memory() -> Iterator[None]:
    """Have glibc keep freed memory for reuse while encoding, and give it back after.

    Each activation in SNAC's encoder is tens of MB. glibc maps every such block afresh and unmaps it when
    it is freed, so each layer pays page faults on memory the previous one just gave back. Kept in the heap,
    freed memory serves the next layer, with identical codes. Without glibc (macOS, musl) this does nothing.

    Any mallopt switches off glibc's dynamic mmap threshold for good, which would leave the rest of the process
    (`axolotl train` on unprepared data) mapping every block over 128 KB afresh. So leaving sets the thresholds
    where the dynamic rule settles in a process that frees large blocks, as torch's do: blocks up to 32 MB come
    from the heap, and up to 64 MB of free memory at its top is kept.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        yield
        return
    mallopt(_M_MMAP_MAX, 0)
    mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        mallopt(_M_MMAP_THRESHOLD, _DYNAMIC_MMAP_THRESHOLD_MAX)
        mallopt(_M_TRIM_THRESHOLD, 2 * _DYNAMIC_MMAP_THRESHOLD_MAX)
        malloc_trim(0)
