"""The cluster path's set-up without a Ray cluster running (tests/test_cluster.py starts one for its module, and
stops it before this one): the missing extra, the options' effect on rows, the actor's memory, an address where
nothing listens."""

from __future__ import annotations

import subprocess
import sys

import pytest

from axolotl_orpheus.args import OrpheusArgs
from axolotl_orpheus.prepare import cluster
from helpers import prepare


def test_without_ray_the_error_names_the_extra(monkeypatch, tokenizer, standins, audiofolder_24k):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(RuntimeError, match=r"pip install 'axolotl-orpheus\[ray\]'"):
        prepare(
            tokenizer,
            audiofolder_24k / "metadata.csv",
            orpheus_snac_model=str(standins["snac"]),
            orpheus_encode_cluster="ray",
        )


def test_the_cluster_options_change_no_row_and_import_no_ray_until_used():
    cluster = OrpheusArgs(orpheus_encode_cluster="ray", orpheus_ray_address="head:6379")
    assert cluster.fingerprint() == OrpheusArgs().fingerprint()
    script = "import sys, axolotl_orpheus.prepare.cluster; print('ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


HOLDING_FREED_MEMORY_IN_AN_ACTOR = """
import sys, torch
from axolotl_orpheus.prepare import cluster
from axolotl_orpheus.prepare.encoding import EncodeSettings

def resident_pages():
    return int(open("/proc/self/statm").read().split()[1])

cluster.ray_worker = lambda: ("node:pid", False)  # outside Ray: the rest of the actor's set-up, as Ray runs it
actor = cluster.SnacEncoder(EncodeSettings(sys.argv[1], 1, False), "cpu", None, 1)
block = torch.ones(16 << 20)  # 64 MB, written through
holding = resident_pages()
del block
print(holding - resident_pages())
"""


def test_a_snac_actor_keeps_freed_memory_for_its_life(standins):
    """The actor enters codec.keep_freed_memory for the worker's life: after its set-up a freed 64 MB block stays in
    the heap for the next layer (as tests/test_codec.py measures), where a context left unreferenced would be
    collected at once and give glibc's settings back, and glibc would unmap the block. Measured as the pages given
    back by the free, which does not depend on how much free heap the set-up left. In a fresh process, without Ray."""
    import resource

    result = subprocess.run(
        [sys.executable, "-c", HOLDING_FREED_MEMORY_IN_AN_ACTOR, str(standins["snac"])],
        capture_output=True,
        text=True,
        check=True,
    )
    given_back = int(result.stdout.split()[-1])
    assert given_back < (64 << 20) // resource.getpagesize() // 4, result.stdout


def test_a_cluster_address_where_nothing_listens_is_named_in_seconds(monkeypatch):
    """Ray retries an address where nothing listens for minutes: the run stops at once, naming the address and the
    fix (orpheus_ray_address, or RAY_ADDRESS). No Ray starts."""
    import socket
    import time

    from axolotl_orpheus.errors import UserError

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 2.0)
    started = time.monotonic()
    with pytest.raises(
        UserError, match=rf"^nothing answers at the Ray cluster address orpheus_ray_address 127.0.0.1:{port}"
    ):
        with cluster.connected(f"127.0.0.1:{port}"):
            pass
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(UserError, match=rf"address RAY_ADDRESS=127.0.0.1:{port} \(.+\)\. To fix: start the cluster"):
        with cluster.connected(None):
            pass
    assert time.monotonic() - started < 60  # the bound: named within a minute, not retried for minutes
    import ray

    assert not ray.is_initialized()
