"""Each clip's audio quality, as `check` reports it and `orpheus_dnsmos` / `orpheus_min_dnsmos` use it inside
`axolotl preprocess`: DNSMOS (listen/quality.py) of the clip as it will be trained on, mono at 24 kHz at its own
level, with its peak and clipping. Inside preprocess it runs before SNAC encodes anything, so that a clip under the
threshold is never encoded. Scores are cached beside the codes, by the same audio content key: a re-run, or
preprocess after `check`, scores nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import NamedTuple

import soundfile
import soxr
from tqdm.auto import tqdm

from axolotl_orpheus import audio
from axolotl_orpheus.prepare.cache import ScoresCache

LOG = logging.getLogger(__name__)

JUDGE = "DNSMOS P.835 + P.808 (speechmos)"
# How a clip reaches the judge, and what an entry holds: a change here must miss the cache.
PIPELINE = (
    f"libsndfile {soundfile.__libsndfile_version__}; mono mean; soxr {soxr.__version__} HQ to {audio.SAMPLE_RATE} Hz, "
    "then HQ to 16000 Hz; speechmos' windows; (ovrl, sig, bak, p808, seconds, peak, clipped)"
)
CLIPS_PER_BATCH = 32  # clips decoded and held at a time


class ClipQuality(NamedTuple):
    """One clip's DNSMOS scores and levels."""

    ovrl: float
    sig: float
    bak: float
    p808: float
    seconds: float  # as decoded, before resampling
    peak: float  # the largest magnitude at the file's own rate: 1 is full scale
    clipped: float  # the share of samples at full scale


def scores_cache(root: Path) -> ScoresCache:
    from axolotl_orpheus.listen.quality import model_digest

    return ScoresCache(root, JUDGE, model_digest(), PIPELINE)


def score_rows(
    keys: dict[int, str], column, root: Path, device: str | None
) -> tuple[dict[int, ClipQuality], dict[int, audio.AudioError]]:
    """Each row's ClipQuality, for the rows given with their clip's content key (`column`: encoding.AudioColumn),
    and the error of each row whose clip cannot be read. Cached scores are read, the rest scored and cached."""
    cache = scores_cache(root)
    found: dict[str, ClipQuality | None] = {}
    for key in dict.fromkeys(keys.values()):
        entry = cache.get(key)
        found[key] = ClipQuality(*entry) if entry is not None and len(entry) == len(ClipQuality._fields) else None
    missing = {key: row for row, key in reversed(keys.items()) if found[key] is None}  # each key's first row
    errors: dict[str, audio.AudioError] = {}
    if missing:
        from axolotl_orpheus.listen.quality import QualityJudge

        judge = QualityJudge(device)
        began, seconds = time.perf_counter(), 0.0
        pending = list(missing.items())
        with tqdm(total=len(pending), desc="Orpheus: DNSMOS", unit="clip") as progress:
            for start in range(0, len(pending), CLIPS_PER_BATCH):
                batch = pending[start : start + CLIPS_PER_BATCH]
                clips = {}
                for (key, _), source in zip(batch, column.sources([row for _, row in batch])):
                    try:
                        clips[key] = audio.load_checked_clip(source, column.base_dir)
                    except audio.AudioError as error:
                        errors[key] = error
                scored = judge.score([clip.samples for clip in clips.values()], audio.SAMPLE_RATE, progress=None)
                for (key, clip), scores in zip(clips.items(), scored):
                    found[key] = ClipQuality(*scores, clip.seconds, clip.peak, clip.clipped)
                    cache.put(key, tuple(found[key]))
                    seconds += clip.seconds
                progress.update(len(batch))
        spent = time.perf_counter() - began
        scored_clips = len(missing) - len(errors)
        LOG.info(f"Orpheus: DNSMOS scored {scored_clips} clips ({seconds / 60:.1f} min of audio) in {spent:.1f} s")
    if cache.damaged:
        LOG.warning(f"Orpheus: {cache.damaged} damaged DNSMOS entries in {cache.folder} were scored again")
    scores = {row: found[key] for row, key in keys.items() if found[key] is not None}
    return scores, {row: errors[key] for row, key in keys.items() if key in errors}
