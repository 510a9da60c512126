"""The fast SNAC path: SNAC's own float operations in forms that run faster and give the same values.

- `in_place`: torch forms for inference (in-place Snake and residual sums, weights computed once);
- `kernels`: Snake and the depthwise and 1x1 convolutions as C kernels (kernels.c), built when SNAC loads;
- `kernel_forms`: which modules take a C kernel, each only where it gives torch's values on this CPU.
"""

from __future__ import annotations

from snac import SNAC

from axolotl_orpheus.codec.fast.in_place import use_in_place_forms
from axolotl_orpheus.codec.fast.kernel_forms import use_c_kernels


def speed_up(model: SNAC, c_kernels: bool) -> str:
    """Put a loaded SNAC's fast forms in place, and with `c_kernels` the C kernels where they give torch's values
    (CPU inference only). Returns which path runs, for the log."""
    use_in_place_forms(model)
    return use_c_kernels(model) if c_kernels else "torch's kernels"
