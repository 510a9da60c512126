"""The SNAC codec wrapper: exact batching, safe loading, device choice, reproducible decoding."""

from __future__ import annotations

import copy
import pickle
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from axolotl_orpheus import codec, devices, layout
from axolotl_orpheus.codec import encoder
from helpers import DEVICE, assert_same_codes


def test_batched_encoding_equals_one_clip_at_a_time(snac_model, speech_24k):
    """Mixed lengths, several sharing a padded length: batching changes no code."""
    base = speech_24k[0]
    clips = list(speech_24k) + [base[: len(base) - cut] * gain for cut, gain in [(1, 0.5), (300, 0.9), (1500, 1.2)]]
    assert len({-(-len(c) // 2048) for c in clips}) < len(clips)  # some clips do share a batch
    alone = [codec.encode(snac_model, [clip], batch_size=1)[0] for clip in clips]
    assert_same_codes(codec.encode(snac_model, clips, batch_size=4), alone)
    assert_same_codes(codec.encode(snac_model, clips[::-1], batch_size=8), alone[::-1])
    assert_same_codes(codec.encode(snac_model, clips), alone)  # the default: encoder.BATCH_SECONDS of audio


def test_a_default_batch_holds_batch_seconds_of_audio_whatever_the_clip_length():
    """Many short clips, few long ones: memory stays bounded, and an explicit batch size wins."""
    seconds = lambda frames: frames * 2048 / 24000  # noqa: E731
    for frames in [1, 30, 117, 704, 10_000]:
        clips = encoder.clips_per_batch(frames, None)
        assert clips == 1 or clips * seconds(frames) <= encoder.BATCH_SECONDS < (clips + 1) * seconds(frames)
    assert encoder.clips_per_batch(30, None) == 125 and encoder.clips_per_batch(704, None) == 5
    assert encoder.clips_per_batch(10_000, None) == 1 and encoder.clips_per_batch(30, 4) == 4


def test_a_batch_the_gpu_has_no_memory_for_is_encoded_in_halves(monkeypatch, snac_model, speech_24k):
    """torch.OutOfMemoryError is injected for batches over 2 clips' samples (this machine has no GPU to fill): the
    batch is split until it fits, with the same codes, and later batches start below what failed; one clip
    that does not fit gets a clear error."""
    clips = [speech_24k[0] * gain for gain in [1.0, 0.5, 0.8, 1.1, 0.3]]
    alone = [codec.encode(snac_model, [clip], batch_size=1)[0] for clip in clips]
    short = [clip[:2048] for clip in clips]
    short_alone = [codec.encode(snac_model, [clip])[0] for clip in short]
    room = 2 * layout.whole_frames(len(clips[0])) * layout.SAMPLES_PER_FRAME  # for 2 of these clips
    real, tried = encoder._encode_padded, []

    def small_gpu(model, batch, limit=room):
        tried.append(len(batch))
        if batch.size > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(model, batch)

    monkeypatch.setattr(encoder, "_encode_padded", small_gpu)
    memory = codec.MemoryLimit()  # it keeps the size that ran out of memory
    assert_same_codes(codec.encode(snac_model, clips, batch_size=5, memory=memory), alone)
    assert tried == [5, 2, 3, 1, 2]
    # Later batches stay below the smallest that failed (3 clips of this length) instead of failing first.
    tried.clear()
    assert_same_codes(codec.encode(snac_model, clips, batch_size=5, memory=memory), alone)
    assert tried == [2, 2, 1]
    tried.clear()
    assert_same_codes(codec.encode(snac_model, short, batch_size=5, memory=memory), short_alone)
    assert tried == [5]  # five one-frame clips hold fewer samples than the batch that failed
    tried.clear()
    assert_same_codes(codec.encode(snac_model, clips, batch_size=5), alone)  # without it, a call learns afresh
    assert tried == [5, 2, 3, 1, 2]
    monkeypatch.setattr(encoder, "_encode_padded", lambda model, batch: small_gpu(model, batch, limit=0))
    with pytest.raises(
        RuntimeError, match=r"SNAC ran out of GPU memory encoding one \d+ s clip; .+orpheus_device: cpu"
    ):
        codec.encode(snac_model, clips[:1])


def test_codes_equal_stock_snac_encode_and_have_snac_shapes(snac_model, stock_snac, speech_24k):
    """The in-place Snake and residual sums change no code: ours equal SNAC's own encode of the same clip,
    on all clips."""
    for clip in speech_24k:
        with torch.inference_mode():
            direct = [level[0].numpy() for level in stock_snac.encode(torch.from_numpy(clip)[None, None])]
        assert_same_codes(codec.encode(snac_model, [clip]), [direct])
    clip = speech_24k[1]
    (ours,) = codec.encode(snac_model, [clip])
    n = -(-len(clip) // 2048)
    assert [len(level) for level in ours] == [n, 2 * n, 4 * n]


def test_encoding_and_decoding_run_in_ieee_fp32_whatever_the_process_asked(snac_model, speech_24k):
    """With TF32 a GPU's codes depend on the batch; encode and decode force IEEE fp32, then restore."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    seen = []
    record = lambda *_: seen.append((conv.fp32_precision, matmul.fp32_precision))  # noqa: E731
    hooks = [snac_model.encoder.register_forward_pre_hook(record), snac_model.decoder.register_forward_pre_hook(record)]
    try:
        conv.fp32_precision = matmul.fp32_precision = "tf32"
        (codes,) = codec.encode(snac_model, [speech_24k[0]])
        codec.decode(snac_model, codes)
        assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
    finally:
        conv.fp32_precision, matmul.fp32_precision = before
        for hook in hooks:
            hook.remove()
    assert seen == [("ieee", "ieee")] * 2


KEEPING_FREED_MEMORY = """
import torch
from axolotl_orpheus import codec, devices, layout
from axolotl_orpheus.codec import encoder

def resident_pages():
    return int(open("/proc/self/statm").read().split()[1])

def kept_after_freeing():
    before = resident_pages()
    torch.ones(16 << 20)  # 64 MB, written through, then freed
    return resident_pages() - before

by_default = kept_after_freeing()
with codec.keep_freed_memory():
    kept = kept_after_freeing()
    holding = resident_pages()
print(by_default, kept, holding - resident_pages())
"""


def test_freed_activations_are_kept_for_reuse_then_given_back():
    """keep_freed_memory: a freed 64 MB block stays in the heap for the next layer to reuse (glibc unmaps such
    blocks by default, and encoding then pays fresh page faults in every layer), and leaving gives it back.
    In a fresh process, where the heap holds nothing else. (How often the kept memory is reused depends on
    where blocks land; the benchmark measures the effect on speed.)"""
    result = subprocess.run([sys.executable, "-c", KEEPING_FREED_MEMORY], capture_output=True, text=True, check=True)
    by_default, kept, given_back = map(int, result.stdout.split())
    pages = (64 << 20) // resource.getpagesize()
    assert by_default < pages // 4
    assert kept > pages * 3 // 4
    assert given_back > pages * 3 // 4


REUSING_AFTER_ENCODING = """
import resource, sys, torch
from axolotl_orpheus import codec, devices, layout
from axolotl_orpheus.codec import encoder

def faults_of_a_4mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(1 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

if sys.argv[1] == "after encoding":
    with codec.keep_freed_memory():
        pass
print(*[faults_of_a_4mb_tensor() for _ in range(12)])
"""


@pytest.mark.parametrize("when", ["fresh", "after encoding"])
def test_the_rest_of_the_process_reuses_freed_blocks_as_glibc_does_by_default(when):
    """Any mallopt ends glibc's dynamic mmap threshold for the process: left at 128 KB, every later 4 MB tensor
    (in `axolotl train` after encoding) would be mapped afresh and fault in every page. After
    keep_freed_memory later 4 MB tensors reuse freed memory, as in a fresh process (where blocks land decides
    which ones: most do)."""
    pages = (4 << 20) // resource.getpagesize()
    runs = []
    # Up to three fresh processes: on a busy machine one has been seen to map every tensor afresh, even with no
    # mallopt at all (the cause is outside the process); a threshold left at 128 KB does so in every process.
    for _ in range(3):
        result = subprocess.run(
            [sys.executable, "-c", REUSING_AFTER_ENCODING, when], capture_output=True, text=True, check=True
        )
        faults = list(map(int, result.stdout.split()))
        runs.append(faults)
        assert faults[0] > pages // 2  # the first is mapped afresh either way
        if sorted(faults[4:])[4] < pages // 8:  # the median of the last eight
            return
    pytest.fail(f"every later 4 MB tensor was mapped afresh, in three processes: {runs}")


def test_load_refuses_a_pickle_that_runs_code(tmp_path, standins):
    """weights_only=True: a pytorch_model.bin that would execute code on load is rejected."""
    folder = tmp_path / "evil"
    shutil.copytree(standins["snac"], folder)
    torch.save({"payload": _RunsCode()}, folder / "pytorch_model.bin")
    with pytest.raises(pickle.UnpicklingError):
        codec.load_snac(str(folder), "cpu")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_a_folder_without_weights_names_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"lacks .*pytorch_model.bin"):
        codec.load_snac(str(tmp_path))


def test_device_choice(monkeypatch):
    assert devices.pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert devices.pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.pick_device() == torch.device("cuda")
    assert devices.pick_device("cpu") == torch.device("cpu")


def test_decode_is_reproducible_and_leaves_the_global_rng_alone(snac_model, speech_24k):
    (codes,) = codec.encode(snac_model, [speech_24k[2]])
    torch.manual_seed(123)
    first = codec.decode(snac_model, codes)
    after = torch.rand(1)
    torch.manual_seed(123)
    second = codec.decode(snac_model, codes)
    assert torch.equal(torch.rand(1), after)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32 and len(first) == len(codes[0]) * 2048
    assert not np.array_equal(first, codec.decode(snac_model, codes, seed=1))  # the seed does matter


def test_long_clips_are_encoded_in_windows_with_the_same_codes(snac_model, speech_24k):
    """Bounded memory for long clips: windows with context give exactly the whole clip's codes."""
    clip = np.concatenate(speech_24k[:3])  # about 9 s, 103 frames
    whole = codec.encode(snac_model, [clip], window_frames=10_000)
    assert len(whole[0][0]) > 3 * 30  # frames for 4 windows of 30
    assert_same_codes(codec.encode(snac_model, [clip], window_frames=30), whole)  # 4 windows
    assert_same_codes(
        codec.encode(snac_model, [clip[:-3000], clip], window_frames=40),  # 3 windows each, in one batch
        codec.encode(snac_model, [clip[:-3000], clip]),
    )


def test_decoding_with_the_in_place_snake_equals_stock_snac(snac_model, stock_snac, speech_24k):
    (codes,) = codec.encode(snac_model, [speech_24k[0]])
    stock = copy.deepcopy(stock_snac).to(DEVICE)  # the decoder's noise comes from the device's generator
    with torch.inference_mode(), torch.random.fork_rng(), devices.exact_fp32():
        torch.manual_seed(0)
        expected = stock.decode([torch.as_tensor(level, device=DEVICE)[None] for level in codes])[0, 0].cpu().numpy()
    np.testing.assert_array_equal(codec.decode(snac_model, codes, seed=0), expected)


def test_the_compiled_encoder_agrees_with_eager_snac(standins, stock_snac, speech_24k):
    """orpheus_compile: true rounds Snake differently, so a few codes may differ (hence opt-in); on real
    speech of mixed lengths nearly all agree and every clip has SNAC's shapes."""
    compiled = codec.load_snac(str(standins["snac"]), DEVICE, compile_encoder=True)
    assert isinstance(compiled.encoder, torch._dynamo.eval_frame.OptimizedModule)
    clips = list(speech_24k) + [speech_24k[0][:-700] * 0.6]
    same = total = 0
    for clip, got in zip(clips, codec.encode(compiled, clips, batch_size=1)):
        with torch.inference_mode():
            expected = [level[0].numpy() for level in stock_snac.encode(torch.from_numpy(clip)[None, None])]
        for level_got, level_expected in zip(got, expected):
            assert level_got.shape == level_expected.shape
            same += int((level_got == level_expected).sum())
            total += level_expected.size
    assert same / total >= 0.999


def test_encode_devices(monkeypatch):
    """orpheus_encode_devices as listed; a bare `cuda` means every visible GPU."""
    assert devices.pick_devices(listed=["cpu", "cpu"]) == [torch.device("cpu")] * 2
    assert devices.pick_devices("cpu") == [torch.device("cpu")]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.pick_devices("cuda") == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert devices.pick_devices("cuda:1") == [torch.device("cuda", 1)]
