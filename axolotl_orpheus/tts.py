"""`type: axolotl_orpheus.tts`: raw audio + text rows -> Orpheus training rows, inside `axolotl preprocess`.

Each output row has exactly input_ids, attention_mask and labels in the layout of `layout.py`. A row that
cannot be used is dropped and counted in the report, or stops the run (`orpheus_on_bad_row`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from axolotl.prompt_tokenizers import DatasetWrappingStrategy
from datasets import Audio, Dataset, Features, Sequence, Value
from tqdm.auto import tqdm

from axolotl_orpheus import layout
from axolotl_orpheus.args import FINGERPRINT_KEY, REPORTS_KEY, SOURCE_KEY, SPLIT_KEY, OrpheusArgs
from axolotl_orpheus.devices import pick_devices
from axolotl_orpheus.errors import UserError
from axolotl_orpheus.prepare.report import DROP_REASONS, DatasetReport, dedupe_warning, summarize, summary_text

try:
    from axolotl_orpheus import audio, codec
    from axolotl_orpheus.prepare import cluster, encoding
    from axolotl_orpheus.prepare.cache import CodesCache, open_cache
except ModuleNotFoundError as exc:
    # axolotl turns a ModuleNotFoundError raised while importing a strategy into "unhandled prompt
    # tokenization strategy", which hides the real cause: say it instead.
    raise RuntimeError(
        f"axolotl_orpheus.tts needs the package `{exc.name}`, which is not installed. "
        "Install axolotl-orpheus with its dependencies: pip install axolotl-orpheus "
        "(or pip install snac soundfile soxr)."
    ) from exc

LOG = logging.getLogger(__name__)

# The types datasets' writer gives every other strategy's rows (input_ids int32, attention_mask int8, labels as
# inferred), so that axolotl can merge an Orpheus dataset with a text one in one config.
ROW_FEATURES = Features(
    {
        "input_ids": Sequence(Value("int32")),
        "attention_mask": Sequence(Value("int8")),
        "labels": Sequence(Value("int64")),
    }
)
MAP_BATCH_SIZE = 64  # rows read per step while checking and framing: bounds memory
AUDIOFOLDER_FILE_COLUMN = "file_name"
# Per-dataset settings live in the entry's message_property_mappings, the one dict axolotl keeps.
DATASET_KEYS = {"audio", "text", "speaker", "voice"}


class RowError(ValueError):
    """A row that cannot become a training row; the message names the dataset, row and fix."""


@dataclass(frozen=True)
class Columns:
    audio: str
    text: str
    speaker: str | None
    voice: str | None  # one speaker name for every row of a dataset without a speaker column

    def read(self) -> list[str]:
        """The columns the strategy reads."""
        return [self.audio, self.text, *([self.speaker] if self.speaker else [])]


class Planned(NamedTuple):
    """A row that passed every check before framing: its codes are (or are being) cached under `key`."""

    key: str


class Rejected(NamedTuple):
    """A row dropped before framing: counted in the report under `reason` when framing reaches it."""

    reason: str
    seconds: float


def data_folder(path: str | None) -> str | None:
    """The folder relative audio paths are resolved against: the data file's folder, or the folder."""
    if not path or not os.path.exists(path):
        return None
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def audio_frames(codes: layout.Codes, settings: OrpheusArgs) -> np.ndarray:
    """One clip's SNAC codes -> its (n, 7) frames of audio tokens, duplicate frames dropped if asked."""
    frames = layout.interleave(*codes)
    return frames[layout.duplicate_frame_mask(frames)] if settings.orpheus_remove_duplicate_frames else frames


def training_row(prompt_ids: list[int], frames: np.ndarray, settings: OrpheusArgs) -> dict[str, np.ndarray]:
    """One training row from a tokenized prompt (with BOS) and its audio frames."""
    input_ids = layout.frame_row(np.asarray(prompt_ids), frames)
    labels = input_ids if settings.orpheus_train_on_text else layout.speech_labels(input_ids, len(prompt_ids))
    return {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids, np.int8), "labels": labels}


def text_problem(text: Any) -> tuple[str, str] | None:
    if text is None:
        return "no_text", "the row has no text"
    if not isinstance(text, str):
        return "text_not_string", f"the text is {text!r}, not a string"
    if not text.strip():
        return "empty_text", f"the text is {text!r}"
    return None


def speaker_text(speaker: Any) -> str:
    """A speaker value as the prompt names it: the cell's text, an integral float as its integer.

    A numeric speaker column with a gap is a float column in parquet and on the hub: speaker 1 is 1.0 there.
    """
    return str(int(speaker)) if isinstance(speaker, float) and speaker.is_integer() else str(speaker)


class OrpheusTTSStrategy(DatasetWrappingStrategy):
    """Decodes, resamples and SNAC-encodes each row's audio, then frames it with its tokenized prompt."""

    def __init__(
        self,
        tokenizer,
        settings: OrpheusArgs,
        ds_cfg: dict[str, Any],
        sequence_len: int | None,
        reports: list[DatasetReport],
    ):
        self.tokenizer = tokenizer
        self.settings = settings
        # The user's data file when the entry reads a converted copy of it; audio resolves against `path`.
        self.dataset_path = (ds_cfg.get("message_property_mappings") or {}).get(SOURCE_KEY) or ds_cfg.get("path")
        self.dataset_keys = {
            key: value for key, value in (ds_cfg.get("message_property_mappings") or {}).items() if key in DATASET_KEYS
        }
        self.sequence_len = sequence_len
        self.base_dir = data_folder(ds_cfg.get("path"))
        split = (ds_cfg.get("message_property_mappings") or {}).get(SPLIT_KEY, "train")
        self.report = DatasetReport(str(self.dataset_path), tokenizer.name_or_path, sequence_len, split)
        self.reports = reports  # the plugin's, during `axolotl preprocess`: it writes them beside the rows
        self.dnsmos: dict = {}  # row -> its clip's screening.ClipQuality, with orpheus_dnsmos

    def wrap_dataset(self, dataset, process_count: int | None = None, keep_in_memory: bool | None = False, **kwargs):
        """Raw rows -> training rows: check the columns and the tokenizer, check every row, encode the clips the
        codes cache lacks, then frame each kept row from its codes."""
        if not isinstance(dataset, Dataset):
            raise ValueError(
                f"Orpheus dataset {self.dataset_path}: streaming datasets are not supported; "
                "remove `streaming: true` so the audio can be encoded during `axolotl preprocess`."
            )
        if not len(dataset):
            raise UserError(
                f"Orpheus dataset {self.dataset_path} has no rows. To fix: give it a row per clip, or remove its entry"
            )
        columns = self.columns(dataset)
        layout.check_tokenizer(self.tokenizer)
        if self.settings.orpheus_encode_cluster == "ray":
            cluster.check_settings(self.settings.orpheus_device, self.settings.orpheus_encode_devices)
        if isinstance(dataset.features[columns.audio], Audio):
            # Rows become {bytes, path}: we decode them ourselves, without torchcodec.
            dataset = dataset.cast_column(columns.audio, Audio(decode=False))
        snac_digest = codec.weights_digest(self.settings.orpheus_snac_model)
        self.reports.append(self.report)
        with self.codes_cache(snac_digest) as cache:
            plan, jobs = self.scan(dataset, columns, cache)
            column = encoding.AudioColumn(dataset, columns.audio, self.base_dir)
            if self.settings.dnsmos:
                jobs = self.screen(plan, jobs, column, cache.root)
            self.encode(plan, jobs, column, cache)
            rows = self.frame(
                dataset, columns, plan, cache, self.fingerprint(dataset, plan, snac_digest), bool(keep_in_memory)
            )
        summary = summarize([self.report])
        LOG.info(f"{self.dataset_path}:\n{summary_text(summary)}")
        warning = dedupe_warning(summary)
        if warning:
            LOG.warning(f"Orpheus dataset {self.dataset_path}: {warning}")
        return rows

    def columns(self, dataset: Dataset) -> Columns:
        """The columns to read, or an error listing the columns there are. Per-dataset keys win."""
        names = dataset.column_names
        default_speaker = OrpheusArgs.model_fields["orpheus_speaker_column"].default
        audio_column = self.dataset_keys.get("audio", self.settings.orpheus_audio_column)
        text_column = self.dataset_keys.get("text", self.settings.orpheus_text_column)
        speaker_column = self.dataset_keys.get("speaker", self.settings.orpheus_speaker_column)
        if audio_column not in names and audio_column == "audio" and AUDIOFOLDER_FILE_COLUMN in names:
            audio_column = AUDIOFOLDER_FILE_COLUMN
        required = (("audio", audio_column), ("text", text_column))
        missing = [f"{key} {column!r}" for key, column in required if column not in names]
        if speaker_column == default_speaker and speaker_column not in names:
            # The seed's recipe names its speaker column speaker_id, Unsloth's and canopy's source.
            recipes_column = next((name for name in ("speaker_id", "source") if name in names), None)
            if recipes_column:
                LOG.info(
                    f"Orpheus dataset {self.dataset_path}: no {default_speaker!r} column: the speakers are column "
                    f'{recipes_column!r}; set orpheus_speaker_column: "" for text-only prompts'
                )
                speaker_column = recipes_column
        if speaker_column not in names:  # "" asks for text-only prompts
            if speaker_column not in ("", default_speaker):  # asked for by name: it must be there
                missing.append(f"speaker {speaker_column!r}")
            speaker_column = None
        if missing:
            raise ValueError(
                f"Orpheus dataset {self.dataset_path}: no {', no '.join(missing)} column. The dataset has columns "
                f"{names}; name the right ones with orpheus_audio_column / orpheus_text_column / "
                "orpheus_speaker_column, or per dataset under message_property_mappings (audio, text, speaker)."
            )
        return Columns(audio_column, text_column, speaker_column, self.dataset_keys.get("voice"))

    def codes_cache(self, snac_digest: str) -> AbstractContextManager[CodesCache]:
        settings = self.settings
        return open_cache(
            settings.orpheus_codes_cache, snac_digest, settings.orpheus_compile, settings.orpheus_snac_model
        )

    def scan(self, dataset: Dataset, columns: Columns, cache: CodesCache) -> tuple[list, list[encoding.Job]]:
        """Check every row before encoding any: a plan entry per row, and the clips the cache lacks, once each."""
        plan: list[Planned | Rejected] = []
        jobs: dict[str, encoding.Job] = {}  # by key: a clip that several rows hold is encoded once
        batches = dataset.select_columns(columns.read()).iter(batch_size=MAP_BATCH_SIZE)
        with tqdm(total=len(dataset), desc="Orpheus: reading audio", unit="row") as progress:
            for batch in batches:
                speakers = batch[columns.speaker] if columns.speaker else [None] * len(batch[columns.audio])
                for source, text, speaker in zip(batch[columns.audio], batch[columns.text], speakers):
                    entry, job = self.check_row(len(plan), source, text, speaker, columns, cache)
                    plan.append(entry)
                    if job:
                        jobs.setdefault(job.key, job)
                progress.update(len(speakers))
        return plan, list(jobs.values())

    def check_row(self, index: int, source: Any, text: Any, speaker: Any, columns: Columns, cache: CodesCache):
        """A row's Planned codes (cached, or a Job to encode them), or why it cannot be used.

        Reads only the audio's bytes (the cache key) and, when the codes are not cached, its header.
        """
        problem = text_problem(text)
        if problem is None and columns.speaker and (speaker is None or not speaker_text(speaker).strip()):
            problem = "empty_speaker", f"the speaker column {columns.speaker!r} holds {speaker!r}"
        if problem:
            return self.reject(index, source, *problem), None
        try:
            key = audio.content_key(source, self.base_dir)
            cached = cache.get(key)
            header = None if cached else audio.audio_header(source, self.base_dir)
        except audio.AudioError as exc:
            return self.reject(index, source, exc.reason, str(exc)), None
        seconds = cached.seconds if cached else header.seconds
        if header and header.frames == 0:  # SNAC would be asked for a clip of no frames
            return self.reject(index, source, "empty_audio", "the audio has no samples"), None
        if self.settings.orpheus_max_seconds and seconds > self.settings.orpheus_max_seconds:
            detail = f"the clip lasts {seconds:.1f} s"
            return self.reject(index, source, "longer_than_max_seconds", detail, seconds), None
        if self.settings.orpheus_min_seconds and seconds < self.settings.orpheus_min_seconds:
            detail = f"the clip lasts {seconds:.2f} s"
            return self.reject(index, source, "shorter_than_min_seconds", detail, seconds), None
        max_frames = self.max_frames()
        if header and max_frames and not self.settings.orpheus_remove_duplicate_frames:
            # Every frame is kept: the header shows a clip too long before any encoding. The lower bound allows for
            # lossy formats' headers, which can count a few frames more than decode.
            least = int(0.99 * header.frames * audio.SAMPLE_RATE / header.rate) // layout.SAMPLES_PER_FRAME
            if least > max_frames:
                detail = (
                    f"the clip lasts {seconds:.1f} s, at least {least} frames; sequence_len {self.sequence_len} "
                    f"holds {max_frames}"
                )
                return self.reject(index, source, "longer_than_sequence_len", detail, seconds), None
        return Planned(key), None if cached else encoding.Job(index, key, seconds)

    def max_frames(self) -> int | None:
        """The most audio frames a row of sequence_len can hold: with the shortest prompt, BOS and one text token.
        A clip with more (after duplicate frames are dropped) cannot fit, whatever its text."""
        if not self.sequence_len:
            return None
        framing = len(layout.PROMPT_PREFIX) + 2 + len(layout.PROMPT_SUFFIX) + len(layout.SPEECH_SUFFIX)
        return max(0, self.sequence_len - framing) // layout.TOKENS_PER_FRAME

    def reject(self, index: int, source: Any, reason: str, detail: str, seconds: float = 0.0) -> Rejected:
        """A bad row, to count in the report; with orpheus_on_bad_row: raise, an error naming the row and fix."""
        if self.settings.orpheus_on_bad_row == "raise":
            raise RowError(
                f"Orpheus dataset {self.dataset_path}, row {index} ({audio.describe_source(source)}): "
                f"{detail.rstrip('.')}. "
                f"To fix: {DROP_REASONS[reason]}; or set orpheus_on_bad_row: skip to drop such rows and count "
                "them in orpheus_report.json."
            )
        return Rejected(reason, seconds)

    def encode(
        self, plan: list[Planned | Rejected], jobs: list[encoding.Job], column: encoding.AudioColumn, cache: CodesCache
    ) -> None:
        """Encode the clips the cache lacks; a row whose clip SNAC cannot encode becomes Rejected in `plan`."""
        on_ray = self.settings.orpheus_encode_cluster == "ray"  # the cluster's devices: cluster.Placement
        devices = [] if on_ray else pick_devices(self.settings.orpheus_device, self.settings.orpheus_encode_devices)
        seconds = sum(job.seconds for job in jobs)
        keys = [entry.key for entry in plan if isinstance(entry, Planned)]
        repeated = len(keys) - len(set(keys))
        kept = cache.root if self.settings.orpheus_codes_cache is not False else "off (kept for this run only)"
        LOG.info(
            f"Orpheus: {len(plan)} rows, {len(jobs)} clips ({seconds / 60:.1f} min) to encode with SNAC "
            f"{self.settings.orpheus_snac_model} on {'a Ray cluster' if on_ray else ', '.join(map(str, devices))}"
            + (f"; {repeated} rows repeat another row's audio, encoded once" if repeated else "")
            + f"; codes cache {kept}"
        )
        started = time.perf_counter()
        if on_ray:
            failed, self.report.encode_retries = cluster.encode_missing(
                jobs,
                column,
                cache,
                self.encode_settings,
                self.settings.orpheus_device,
                self.settings.orpheus_ray_address,
            )
        else:
            failed = encoding.encode_missing(jobs, column, cache, self.encode_settings(devices[0]), devices)
        if jobs:
            spent = time.perf_counter() - started
            LOG.info(f"Orpheus: encoded {len(jobs)} clips in {spent:.1f} s, {seconds / spent:.0f}x real time")
        # Rows that share a clip share its fate.
        failed_keys = {job.key: failed[job.row] for job in jobs if job.row in failed}
        for row, entry in enumerate(plan):
            if isinstance(entry, Planned) and entry.key in failed_keys:
                error = failed_keys[entry.key]
                plan[row] = self.reject(row, column.sources([row])[0], error.reason, str(error), error.seconds)
        self.report.codes_repaired = cache.damaged
        if cache.damaged:
            LOG.warning(f"Orpheus: {cache.damaged} damaged entries in the codes cache {cache.root} were encoded again")

    def screen(
        self, plan: list[Planned | Rejected], jobs: list[encoding.Job], column: encoding.AudioColumn, root
    ) -> list[encoding.Job]:
        """Score the planned rows' clips with DNSMOS (prepare/screening.py); a row under orpheus_min_dnsmos becomes
        Rejected in `plan` and its clip is not encoded. The jobs left to encode."""
        from axolotl_orpheus.prepare import screening

        keys = {row: entry.key for row, entry in enumerate(plan) if isinstance(entry, Planned)}
        self.dnsmos, _ = screening.score_rows(keys, column, root, self.settings.orpheus_device)
        least = self.settings.orpheus_min_dnsmos
        for row, quality in self.dnsmos.items():
            if least is not None and quality.ovrl < least:
                detail = f"its DNSMOS OVRL is {quality.ovrl:.2f}, under orpheus_min_dnsmos {least:g}"
                plan[row] = self.reject(row, column.sources([row])[0], "low_quality", detail, quality.seconds)
        return [job for job in jobs if isinstance(plan[job.row], Planned)]

    def encode_settings(self, device: torch.device) -> encoding.EncodeSettings:
        return encoding.EncodeSettings(
            self.settings.orpheus_snac_model,
            self.settings.orpheus_encode_batch_size or encoding.default_batch_size(device),
            self.settings.orpheus_compile,
            self.settings.orpheus_cpu_kernels,
            stop_at_failure=self.settings.orpheus_on_bad_row == "raise",
            # With duplicate frames dropped only codes tell a row's length: a long clip's first frames are
            # encoded to learn whether it can fit (without, the header did; check_row).
            max_kept_frames=self.max_frames() if self.settings.orpheus_remove_duplicate_frames else None,
        )

    def frame(
        self,
        dataset: Dataset,
        columns: Columns,
        plan: list[Planned | Rejected],
        cache: CodesCache,
        fingerprint: str,
        keep_in_memory: bool,
    ) -> Dataset:
        """The training rows, framed from the cached codes in one process: framing is cheap, and the report counts
        rows in order."""
        return dataset.select_columns(columns.read()).map(
            partial(self.frame_rows, plan=plan, cache=cache, columns=columns),
            batched=True,
            batch_size=MAP_BATCH_SIZE,
            with_indices=True,
            remove_columns=columns.read(),
            features=ROW_FEATURES,
            keep_in_memory=keep_in_memory,
            # Audio files named by path can change while the table does not: never reuse a map cache.
            load_from_cache_file=False,
            new_fingerprint=fingerprint,
            desc="Orpheus: framing rows",
        )

    def frame_rows(self, batch: dict[str, list], indices: list[int], plan: list, cache: CodesCache, columns: Columns):
        """Training rows from the cached codes of a batch of rows; every rejected row counted, in order."""
        speakers = batch[columns.speaker] if columns.speaker else [None] * len(indices)
        self.report.rows_in += len(indices)
        kept = []
        for index, source, text, speaker in zip(indices, batch[columns.audio], batch[columns.text], speakers):
            entry = plan[index]
            if index in self.dnsmos:
                self.report.scored(
                    columns.voice if columns.speaker is None else speaker_text(speaker), self.dnsmos[index].ovrl
                )
            if isinstance(entry, Rejected):
                self.report.drop(entry.reason, index, entry.seconds)
                continue
            cached = cache.get(entry.key)
            if cached is None:
                raise RuntimeError(
                    f"Orpheus dataset {self.dataset_path}, row {index}: its codes vanished from the codes cache "
                    f"{cache.root} while preprocessing; run preprocess again and leave the cache folder alone "
                    "meanwhile."
                )
            voice = columns.voice if columns.speaker is None else speaker_text(speaker)
            kept.append((index, source, text, voice, cached))
        if not kept:  # tokenizers reject an empty batch
            return {name: [] for name in ROW_FEATURES}
        prompts = [layout.prompt_text(text, speaker) for _, _, text, speaker, _ in kept]
        prompt_ids = layout.prompt_token_ids(self.tokenizer, prompts)
        rows = []
        for (index, source, _, speaker, cached), ids in zip(kept, prompt_ids):
            frames = audio_frames(cached.codes, self.settings)
            training = training_row(ids, frames, self.settings)
            n_tokens = len(training["input_ids"])
            if self.sequence_len and n_tokens > self.sequence_len:
                detail = f"the row has {n_tokens} tokens, sequence_len is {self.sequence_len}"
                rejected = self.reject(index, source, "longer_than_sequence_len", detail, cached.seconds)
                self.report.drop(rejected.reason, index, rejected.seconds)
                continue
            for warning in cached.warnings:
                self.report.warn(warning, index)
            clip_frames = len(cached.codes[0])
            self.report.keep(cached.seconds, n_tokens, clip_frames - len(frames), speaker, frames=clip_frames)
            rows.append(training)
        return {name: [row[name] for row in rows] for name in ROW_FEATURES}

    def fingerprint(self, dataset: Dataset, plan: list[Planned | Rejected], snac_digest: str) -> str:
        """The prepared rows' fingerprint: the settings, the table, and every row's audio content (its codes'
        key) or reason to be dropped, so that no datasets cache of rows made from other clips is ever reused."""
        digest = hashlib.md5()
        for part in (
            dataset._fingerprint,
            self.settings.fingerprint(),
            repr(sorted(self.dataset_keys.items())),
            str(self.sequence_len),
            snac_digest,
            self.tokenizer.name_or_path,
        ):
            digest.update(f"{part}|".encode())
        digest.update("\n".join(entry.key if isinstance(entry, Planned) else entry.reason for entry in plan).encode())
        return digest.hexdigest()


def load(tokenizer, cfg, ds_cfg: dict[str, Any] | None = None) -> OrpheusTTSStrategy:
    ds_cfg = ds_cfg or {}
    if FINGERPRINT_KEY not in (ds_cfg.get("message_property_mappings") or {}):
        raise ValueError(
            "`type: axolotl_orpheus.tts` needs the Orpheus plugin. Add it to your config:\n"
            "plugins:\n  - axolotl_orpheus.OrpheusPlugin"
        )
    reports = cfg[REPORTS_KEY] if REPORTS_KEY in cfg else []
    return OrpheusTTSStrategy(tokenizer, OrpheusArgs.from_cfg(cfg), ds_cfg, cfg.get("sequence_len"), reports)
