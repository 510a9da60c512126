"""The dataset survey behind `axolotl-orpheus init`: look at a raw audio dataset, write a finetune.yml that fits it.

The dataset is loaded exactly as `axolotl preprocess` will load it (the plugin's audiofolder rewrite, then
axolotl's own loader), and only the audio headers are read, so inspecting even a large dataset is quick.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import yaml
from datasets import Audio, Dataset
from tqdm import tqdm

from axolotl_orpheus import audio
from axolotl_orpheus.args import DEFAULT_BASE_MODEL, DEFAULT_SEQUENCE_LEN, DEFAULT_SNAC_MODEL
from axolotl_orpheus.errors import UserError
from axolotl_orpheus.layout import SAMPLES_PER_FRAME, TOKENS_PER_FRAME, whole_frames

# Column names seen in public speech datasets, most common first.
AUDIO_COLUMNS = ("audio", "file_name", "path", "audio_path", "file", "filename", "wav")
TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "normalized_text", "raw_text")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "speaker_name", "source", "client_id")
# From Orpheus users: about 50 clips to start, 300 per speaker for best results.
MIN_CLIPS, GOOD_CLIPS_PER_SPEAKER = 50, 300
PROMPT_TOKENS = 40  # a generous allowance for the framing and the transcript, to estimate row lengths


@dataclass
class DatasetSurvey:
    """What `init` learned about a dataset."""

    path: str
    columns: list[str]
    audio_column: str
    text_column: str
    speaker_column: str | None
    durations: list[float] = field(default_factory=list)
    sample_rates: Counter = field(default_factory=Counter)
    speakers: Counter = field(default_factory=Counter)
    unreadable: list[int] = field(default_factory=list)
    dnsmos: list[float] = field(default_factory=list)  # the OVRL column `segment --min-dnsmos` writes, if there

    def estimated_tokens(self, seconds: float) -> int:
        return TOKENS_PER_FRAME * whole_frames(seconds * audio.SAMPLE_RATE) + PROMPT_TOKENS

    def warnings(self, sequence_len: int) -> list[str]:
        found = []
        if len(self.durations) < MIN_CLIPS:
            found.append(f"only {len(self.durations)} readable clips: about {MIN_CLIPS} are needed to start")
        for name, count in sorted(self.speakers.items()):
            if count < GOOD_CLIPS_PER_SPEAKER:
                who = f"speaker {name!r}" if name else "the voice"
                found.append(
                    f"{who} has {count} clips; about {GOOD_CLIPS_PER_SPEAKER} per speaker give the best results"
                )
        too_long = sum(self.estimated_tokens(s) > sequence_len for s in self.durations)
        if too_long:
            limit = (sequence_len - PROMPT_TOKENS) / TOKENS_PER_FRAME * SAMPLES_PER_FRAME / audio.SAMPLE_RATE
            found.append(
                f"{too_long} clips are longer than about {limit:.0f} s and will not fit sequence_len {sequence_len}: "
                "split them, or raise sequence_len"
            )
        if self.unreadable:
            found.append(
                f"{len(self.unreadable)} clips cannot be read (rows {self.unreadable[:5]}): preprocess will skip them"
            )
        return found

    def summary(self) -> str:
        durations = self.durations or [0.0]
        rates = ", ".join(f"{rate} Hz x {count}" for rate, count in sorted(self.sample_rates.items()))
        speakers = ", ".join(f"{name or '(one voice)'}: {count}" for name, count in self.speakers.most_common(10))
        return (
            f"{self.path}: {len(self.durations)} clips, {sum(self.durations) / 3600:.2f} hours\n"
            f"  columns: audio={self.audio_column!r} text={self.text_column!r} speaker={self.speaker_column!r} "
            f"(of {self.columns})\n"
            f"  sample rates: {rates} (each clip is resampled from its own rate to 24 kHz)\n"
            f"  clip seconds: min {min(durations):.1f}, median {statistics.median(durations):.1f}, "
            f"max {max(durations):.1f}\n"
            f"  clips per speaker: {speakers}"
        ) + self.dnsmos_summary()

    def dnsmos_summary(self) -> str:
        from axolotl_orpheus.listen.quality import OVRL_COLUMN, THRESHOLDS

        if not self.dnsmos:
            return ""
        under = ", ".join(f"{sum(s < t for s in self.dnsmos)} under {t:g}" for t in THRESHOLDS)
        return (
            f"\n  DNSMOS OVRL ({OVRL_COLUMN}): min {min(self.dnsmos):.2f}, "
            f"median {statistics.median(self.dnsmos):.2f}, max {max(self.dnsmos):.2f}; {under}"
        )


def pick(columns: list[str], candidates: tuple[str, ...], what: str, required: bool = True) -> str | None:
    found = next((name for name in candidates if name in columns), None)
    if found is None and required:
        raise UserError(
            f"cannot tell which column holds the {what}: the dataset has {columns}; expected one of {candidates}"
        )
    return found


class RawDataset(NamedTuple):
    """A raw audio dataset as `axolotl preprocess` loads it, audio left undecoded, and its columns."""

    dataset: Dataset
    base_dir: str | None  # what relative audio paths are relative to
    audio_column: str
    text_column: str
    speaker_column: str | None


def open_dataset(path: str) -> RawDataset:
    """Load the dataset as axolotl will (the plugin's rewrite, then axolotl's loader) and find its columns."""
    from axolotl.utils.data.shared import load_dataset_with_config
    from axolotl.utils.dict import DictDefault

    from axolotl_orpheus.prepare.sources import point_at_rows
    from axolotl_orpheus.tts import data_folder

    entry = DictDefault({"path": path, "type": "axolotl_orpheus.tts", "split": "train"})
    point_at_rows(entry, "train")
    try:
        dataset = load_dataset_with_config(entry, use_auth_token=False)
    except ValueError as error:  # axolotl's, for a path that is neither here nor on the hub
        raise UserError(f"cannot load the dataset {path}: {error}") from error
    if not len(dataset):
        raise UserError(f"{path} has no rows. To fix: give it a row per clip")
    columns = dataset.column_names
    audio_features = [name for name, feature in dataset.features.items() if isinstance(feature, Audio)]
    audio_column = audio_features[0] if audio_features else pick(columns, AUDIO_COLUMNS, "audio")
    if audio_column in audio_features:
        dataset = dataset.cast_column(audio_column, Audio(decode=False))
    return RawDataset(
        dataset,
        data_folder(entry.path),
        audio_column,
        pick(columns, TEXT_COLUMNS, "transcripts"),
        pick(columns, SPEAKER_COLUMNS, "speaker", required=False),
    )


def survey(path: str) -> DatasetSurvey:
    """Load the dataset as axolotl will and read every clip's header."""
    from axolotl_orpheus.tts import speaker_text

    dataset, base_dir, audio_column, text_column, speaker_column = open_dataset(path)
    found = DatasetSurvey(path, dataset.column_names, audio_column, text_column, speaker_column)
    speakers = dataset[found.speaker_column] if found.speaker_column else [None] * len(dataset)
    for index, (source, speaker) in enumerate(
        tqdm(zip(dataset[found.audio_column], speakers), total=len(dataset), desc="Reading audio headers")
    ):
        try:
            header = audio.audio_header(source, base_dir)
        except audio.AudioError:
            found.unreadable.append(index)
            continue
        found.durations.append(header.seconds)
        found.sample_rates[header.rate] += 1
        found.speakers["" if speaker is None else speaker_text(speaker)] += 1
    from axolotl_orpheus.listen.quality import OVRL_COLUMN

    if OVRL_COLUMN in dataset.column_names:
        found.dnsmos = [float(value) for value in dataset[OVRL_COLUMN] if value not in (None, "")]
    return found


CONFIG_TEMPLATE = """\
# Fine-tune Orpheus TTS on {path}
# Written by `axolotl-orpheus init`: {n_clips} clips, {hours:.2f} hours{speaker_note}.
#   axolotl preprocess {out} && axolotl train {out}
# A full fine-tune as in axolotl's examples/orpheus (about 45 GB of GPU memory); examples/lora.yml fits 24 GB.
base_model: {base_model}

plugins:
  - axolotl_orpheus.OrpheusPlugin

datasets:
  - path: {path_value}
    type: axolotl_orpheus.tts
{mappings}
orpheus_snac_model: {snac_model}
orpheus_on_bad_row: skip             # unusable clips are dropped and counted in orpheus_report.json

dataset_prepared_path: ./prepared
val_set_size: {val_set_size}
output_dir: {output_dir}

special_tokens:
  pad_token: <custom_token_7>

sequence_len: {sequence_len}                  # about 82 tokens per second of audio
sample_packing: true
pad_to_sequence_len: true

gradient_accumulation_steps: 8
micro_batch_size: 4
num_epochs: 3
optimizer: adamw_torch_fused
lr_scheduler: cosine
learning_rate: 2e-5
warmup_ratio: 0.1
weight_decay: 0.05

bf16: auto
tf32: false
gradient_checkpointing: true
gradient_checkpointing_kwargs:
  use_reentrant: false
attn_implementation: flash_attention_2

logging_steps: 1
saves_per_epoch: 1
"""


def yaml_scalar(value: str) -> str:
    """`value` written so that YAML reads back this very string, quoted where it would read as something
    else (yes, 123, null) or hold a comment (#) or a key (: )."""
    return yaml.safe_dump(value, allow_unicode=True, width=math.inf).removesuffix("...\n").strip()


def write_config(
    found: DatasetSurvey,
    out: str,
    voice: str | None,
    base_model: str = DEFAULT_BASE_MODEL,
    snac_model: str = DEFAULT_SNAC_MODEL,
    sequence_len: int = DEFAULT_SEQUENCE_LEN,
) -> str:
    """The finetune.yml text for a surveyed dataset. `voice` names the voice of a dataset without a speaker column,
    or of one whose speaker column holds one name (which it replaces); a column of several speakers is refused."""
    if voice and found.speaker_column and len(found.speakers) > 1:
        raise UserError(
            f"--voice {voice}: {found.path} names {len(found.speakers)} speakers in its column "
            f"{found.speaker_column!r}, which the prompts use. To fix: leave out --voice"
        )
    renamed = next(iter(found.speakers), "") if voice and found.speaker_column else None
    mappings = {}
    if found.audio_column != "audio" and not (found.audio_column == "file_name" and "audio" not in found.columns):
        mappings["audio"] = found.audio_column
    if found.text_column != "text":
        mappings["text"] = found.text_column
    if found.speaker_column and found.speaker_column != "speaker":
        mappings["speaker"] = found.speaker_column
    if renamed is not None:
        mappings["speaker"] = ""  # the column's one name gives way to the voice's
    if voice:
        mappings["voice"] = voice
    lines = "".join(f"      {key}: {yaml_scalar(value)}\n" for key, value in mappings.items())
    if renamed is not None:
        speaker_note = f", one voice named {voice!r} (column {found.speaker_column!r} says {renamed!r})"
    elif found.speaker_column:
        speaker_note = f", {len(found.speakers)} speakers from column {found.speaker_column!r}"
    else:
        speaker_note = f", one voice named {voice!r}" if voice else ", one voice, text-only prompts"
    return CONFIG_TEMPLATE.format(
        path=found.path,
        path_value=yaml_scalar(found.path),
        n_clips=len(found.durations),
        hours=sum(found.durations) / 3600,
        speaker_note=speaker_note,
        out=out,
        base_model=yaml_scalar(base_model),
        mappings=f"    message_property_mappings:   # this dataset's columns and voice\n{lines}" if lines else "",
        snac_model=yaml_scalar(snac_model),
        # A validation split needs enough rows to hold one; small datasets train on everything.
        val_set_size=0.01 if len(found.durations) >= 200 else 0,
        output_dir=yaml_scalar(f"./outputs/{voice or 'orpheus-voice'}"),
        sequence_len=sequence_len,
    )
