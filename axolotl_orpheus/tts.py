"""`type: axolotl_orpheus.tts`: raw audio + text rows -> Orpheus training rows, inside `axolotl preprocess`.

Each output row has exactly input_ids, attention_mask and labels in the layout of `layout.py`.
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from typing import Any

import numpy as np
from axolotl.prompt_tokenizers import DatasetWrappingStrategy
from axolotl.utils.logging import get_logger
from datasets import Audio, Dataset, Features, Sequence, Value

from axolotl_orpheus import __version__, layout
from axolotl_orpheus.args import OrpheusArgs
from axolotl_orpheus.plugin import FINGERPRINT_KEY

try:
    from axolotl_orpheus import audio, codec
except ModuleNotFoundError as exc:
    # axolotl turns a ModuleNotFoundError raised while importing a strategy into "unhandled prompt
    # tokenization strategy", which hides the real cause: say it instead.
    raise RuntimeError(
        f"axolotl_orpheus.tts needs the package `{exc.name}`, which is not installed. "
        "Install axolotl-orpheus with its dependencies: pip install axolotl-orpheus "
        "(or pip install snac soundfile soxr)."
    ) from exc

LOG = get_logger(__name__)

ROW_FEATURES = Features(
    {
        "input_ids": Sequence(Value("int64")),
        "attention_mask": Sequence(Value("int8")),
        "labels": Sequence(Value("int64")),
    }
)
MAP_BATCH_SIZE = 64  # rows decoded and encoded per step: bounds memory, gives the encoder batches
AUDIOFOLDER_FILE_COLUMN = "file_name"


class RowError(ValueError):
    """A row that cannot become a training row; the message names the dataset, row and fix."""


def data_folder(path: str | None) -> str | None:
    """The folder relative audio paths are resolved against: the data file's folder, or the folder."""
    if not path or not os.path.exists(path):
        return None
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def build_row(prompt_ids: list[int], codes: codec.Codes, settings: OrpheusArgs) -> dict[str, np.ndarray]:
    """One training row from a tokenized prompt (with BOS) and one clip's SNAC codes."""
    frames = layout.interleave(*codes)
    if settings.orpheus_remove_duplicate_frames:
        frames = frames[layout.duplicate_frame_mask(frames)]
    input_ids = layout.frame_row(np.asarray(prompt_ids), frames)
    labels = input_ids if settings.orpheus_train_on_text else layout.speech_labels(input_ids, len(prompt_ids))
    return {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids, np.int8), "labels": labels}


class OrpheusTTSStrategy(DatasetWrappingStrategy):
    """Decodes, resamples and SNAC-encodes each row's audio, then frames it with its tokenized prompt."""

    def __init__(self, tokenizer, settings: OrpheusArgs, dataset_path: str | None):
        self.tokenizer = tokenizer
        self.settings = settings
        self.dataset_path = dataset_path
        self.base_dir = data_folder(dataset_path)

    def columns(self, dataset: Dataset) -> tuple[str, str, str | None]:
        """The audio, text and (optional) speaker columns, or an error listing the columns there are."""
        names = dataset.column_names
        audio_column = self.settings.orpheus_audio_column
        if audio_column not in names and audio_column == "audio" and AUDIOFOLDER_FILE_COLUMN in names:
            audio_column = AUDIOFOLDER_FILE_COLUMN
        speaker_column: str | None = self.settings.orpheus_speaker_column
        missing = [
            f"{key}={column!r}"
            for key, column in (
                ("orpheus_audio_column", audio_column),
                ("orpheus_text_column", self.settings.orpheus_text_column),
            )
            if column not in names
        ]
        if speaker_column not in names:
            if speaker_column != OrpheusArgs.model_fields["orpheus_speaker_column"].default:
                missing.append(f"orpheus_speaker_column={speaker_column!r}")
            speaker_column = None
        if missing:
            raise ValueError(
                f"Orpheus dataset {self.dataset_path}: no column {', '.join(missing)}. The dataset has "
                f"columns {names}; set the orpheus_*_column keys to the right names."
            )
        return audio_column, self.settings.orpheus_text_column, speaker_column

    def wrap_dataset(self, dataset, process_count: int | None = None, keep_in_memory: bool | None = False, **kwargs):
        if not isinstance(dataset, Dataset):
            raise ValueError(
                f"Orpheus dataset {self.dataset_path}: streaming datasets are not supported; "
                "remove `streaming: true` so the audio can be encoded during `axolotl preprocess`."
            )
        audio_column, text_column, speaker_column = self.columns(dataset)
        if isinstance(dataset.features[audio_column], Audio):
            # Rows become {bytes, path}: we decode them ourselves, without torchcodec.
            dataset = dataset.cast_column(audio_column, Audio(decode=False))
        device = codec.pick_device(self.settings.orpheus_device)
        LOG.info(f"Orpheus: SNAC {self.settings.orpheus_snac_model} on {device}, {len(dataset)} rows")
        model = codec.load_snac(self.settings.orpheus_snac_model, device)
        batch_size = self.settings.orpheus_encode_batch_size or (1 if device.type == "cpu" else 16)
        fingerprint = hashlib.md5(
            "|".join(
                [
                    dataset._fingerprint,
                    __version__,
                    self.settings.model_dump_json(),
                    codec.weights_digest(self.settings.orpheus_snac_model),
                    self.tokenizer.name_or_path,
                ]
            ).encode()
        ).hexdigest()
        # One process: SNAC already uses every core through torch, and on a GPU one process owns it.
        return dataset.map(
            partial(
                self.encode_rows,
                model=model,
                encode_batch_size=batch_size,
                audio_column=audio_column,
                text_column=text_column,
                speaker_column=speaker_column,
            ),
            batched=True,
            batch_size=MAP_BATCH_SIZE,
            with_indices=True,
            remove_columns=dataset.column_names,
            features=ROW_FEATURES,
            keep_in_memory=bool(keep_in_memory),
            # Audio files named by path can change while the table does not: never reuse a map cache.
            load_from_cache_file=False,
            new_fingerprint=fingerprint,
            desc="Orpheus: encoding audio with SNAC",
        )

    def row_error(self, index: int, source: Any, reason: str) -> RowError:
        return RowError(
            f"Orpheus dataset {self.dataset_path}, row {index} ({audio.describe_source(source)}): {reason}. "
            "Fix or remove that row."
        )

    def encode_rows(
        self,
        batch: dict[str, list],
        indices: list[int],
        model,
        encode_batch_size: int,
        audio_column: str,
        text_column: str,
        speaker_column: str | None,
    ) -> dict[str, list]:
        sources = batch[audio_column]
        clips, prompts = [], []
        for index, source, text, speaker in zip(
            indices, sources, batch[text_column], batch[speaker_column] if speaker_column else [None] * len(indices)
        ):
            if not isinstance(text, str) or not text.strip():
                raise self.row_error(index, source, f"text column {text_column!r} holds {text!r}, not text")
            try:
                clip = audio.load_clip(source, self.base_dir)
            except audio.AudioError as exc:
                raise self.row_error(index, source, str(exc)) from exc
            if len(clip) == 0:
                raise self.row_error(index, source, "the audio has no samples")
            clips.append(clip)
            prompts.append(layout.prompt_text(text, None if speaker is None else str(speaker)))
        prompt_ids = self.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        codes = codec.encode(model, clips, encode_batch_size)
        rows = [build_row(ids, clip_codes, self.settings) for ids, clip_codes in zip(prompt_ids, codes)]
        return {name: [row[name] for row in rows] for name in ROW_FEATURES}


def load(tokenizer, cfg, ds_cfg: dict[str, Any] | None = None) -> OrpheusTTSStrategy:
    ds_cfg = ds_cfg or {}
    if FINGERPRINT_KEY not in (ds_cfg.get("message_property_mappings") or {}):
        raise ValueError(
            "`type: axolotl_orpheus.tts` needs the Orpheus plugin. Add it to your config:\n"
            "plugins:\n  - axolotl_orpheus.OrpheusPlugin"
        )
    return OrpheusTTSStrategy(tokenizer, OrpheusArgs.from_cfg(cfg), ds_cfg.get("path"))
