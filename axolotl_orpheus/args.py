"""The plugin's YAML keys: top-level `orpheus_*` options, validated by axolotl when the plugin is listed, and
the keys the plugin writes under each Orpheus dataset entry for the strategy."""

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from axolotl_orpheus import __version__

# The reference recipe's models and sequence length (axolotl's examples/orpheus).
DEFAULT_BASE_MODEL = "canopylabs/orpheus-3b-0.1-pretrained"
DEFAULT_SNAC_MODEL = "hubertsiuzdak/snac_24khz"
DEFAULT_SEQUENCE_LEN = 8192
# The models that hear the samples: Whisper for the words, a WavLM x-vector for the voice.
DEFAULT_ASR_MODEL = "openai/whisper-large-v3-turbo"
DEFAULT_SPEAKER_MODEL = "microsoft/wavlm-base-plus-sv"
# A transcript further than this character error rate from what Whisper hears disagrees with its audio
# (check-transcripts, segment --transcript): Whisper large-v3 stays under about 0.05 on clean read speech.
DEFAULT_MAX_CER = 0.2
# Orpheus' sampling, as canopy's engine and README set it (a repetition penalty of at least 1.1 keeps generations
# stable); DEFAULT_MAX_NEW_TOKENS is about 15 s of audio, 7 tokens a frame.
DEFAULT_MAX_NEW_TOKENS = 1200
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.95
DEFAULT_REPETITION_PENALTY = 1.1
# Keys that never change a prepared row (training-time samples and scores, where codes are cached, how and where
# SNAC runs),
# so changing them does not re-prepare data.
NOT_IN_ROWS = {
    "orpheus_sample_prompts",
    "orpheus_sample_max_new_tokens",
    "orpheus_codes_cache",
    "orpheus_cpu_kernels",
    "orpheus_eval_samples",
    "orpheus_asr_model",
    "orpheus_eval_language",
    "orpheus_speaker_model",
    "orpheus_encode_cluster",
    "orpheus_ray_address",
}

# Keys that score the clips' quality: in the rows' fingerprint (a threshold drops rows; the scores go in the report
# saved with them) only when set.
QUALITY_KEYS = ("orpheus_dnsmos", "orpheus_min_dnsmos")

# Under each Orpheus dataset entry's `message_property_mappings`, the one dict of an entry that survives axolotl's
# validation and is part of its prepared-dataset hash, the plugin writes for the strategy:
FINGERPRINT_KEY = "orpheus_settings"  # the settings' fingerprint: rows prepared under other settings are not reused
SOURCE_KEY = "orpheus_source"  # the user's data files, where the entry reads a copy of them
SPLIT_KEY = "orpheus_split"  # "test" for test_datasets entries
# In the config while `axolotl preprocess` loads datasets: the plugin's list that each strategy adds its report to.
REPORTS_KEY = "orpheus_reports"


class SamplePrompt(BaseModel):
    """One sample to speak during training: the text, and the voice name it was trained with (if any)."""

    text: str
    voice: str | None = None

    @field_validator("text")
    @classmethod
    def text_is_not_empty(cls, text: str) -> str:
        if not text.strip():
            raise ValueError(
                "orpheus_sample_prompts: a prompt's text is empty; give it a sentence to speak, or remove it"
            )
        return text

    @field_validator("voice")
    @classmethod
    def voice_is_not_empty(cls, voice: str | None) -> str | None:
        if voice is not None and not voice.strip():
            raise ValueError(
                "orpheus_sample_prompts: a prompt's voice is empty; give the speaker name the data uses, or leave "
                "voice out for a prompt without one"
            )
        return voice


class OrpheusArgs(BaseModel):
    """Options for turning raw audio + text into Orpheus training rows (`type: axolotl_orpheus.tts`)."""

    orpheus_snac_model: str = Field(
        default=DEFAULT_SNAC_MODEL,
        json_schema_extra={
            "description": "SNAC 24 kHz codec: a hub id or a local folder with config.json + pytorch_model.bin."
        },
    )
    orpheus_audio_column: str = Field(
        default="audio",
        json_schema_extra={
            "description": "Column holding the audio (an Audio column, or file paths relative to the data). "
            "An audiofolder's `file_name` is used when the dataset has no `audio` column."
        },
    )
    orpheus_text_column: str = Field(
        default="text", json_schema_extra={"description": "Column holding the transcript."}
    )
    orpheus_speaker_column: str = Field(
        default="speaker",
        json_schema_extra={
            "description": 'Column naming the voice; when present the prompt is "{speaker}: {text}". '
            '"" for text-only prompts even when the dataset has a speaker column.'
        },
    )
    orpheus_remove_duplicate_frames: bool = Field(
        default=True,
        json_schema_extra={
            "description": "Drop a SNAC frame whose first code repeats the previous one, as the reference recipe does."
        },
    )
    orpheus_train_on_text: bool = Field(
        default=True,
        json_schema_extra={
            "description": "Labels equal input_ids (the reference); false ignores every label up to start_of_speech."
        },
    )
    orpheus_device: str | None = Field(
        default=None,
        json_schema_extra={"description": "Device for SNAC encoding (default: cuda, then mps, then cpu)."},
    )
    orpheus_encode_batch_size: int | None = Field(
        default=None,
        ge=1,
        json_schema_extra={
            "description": "Clips of equal padded length SNAC encodes together (default: 1 on cpu; on a GPU a "
            "fixed amount of audio per batch, halved when the GPU runs out of memory); batching never changes a code."
        },
    )
    orpheus_encode_devices: list[str] | None = Field(
        default=None,
        json_schema_extra={
            "description": "Devices to encode on, one SNAC replica each in its own process, e.g. [cuda:0, cuda:1] "
            "(default: orpheus_device; `cuda` there means every visible GPU)."
        },
    )
    orpheus_compile: bool = Field(
        default=False,
        json_schema_extra={
            "description": "torch.compile SNAC's encoder (compiled once, cached by torch); a few codes differ "
            "from eager SNAC's."
        },
    )
    orpheus_cpu_kernels: bool = Field(
        default=True,
        json_schema_extra={
            "description": "On CPU, run SNAC's Snake and depthwise and 1x1 convolutions as C kernels built at load, "
            "each only where it gives torch's values; false: torch's own kernels. The codes are the same."
        },
    )
    orpheus_codes_cache: bool | str = Field(
        default=True,
        json_schema_extra={
            "description": "Cache SNAC codes by audio content, SNAC weights and resampling, so a re-run after changing "
            "text, prompt or label options skips encoding. true: under the datasets cache (HF_DATASETS_CACHE/"
            "orpheus_codes); a folder (e.g. one shared by nodes); false: keep codes for this run only."
        },
    )
    orpheus_encode_cluster: Literal["local", "ray"] = Field(
        default="local",
        json_schema_extra={
            "description": "local: encode on this machine's devices; ray: encode the clips the codes cache lacks on "
            "a Ray cluster, one SNAC per GPU (or per CPU node), with the same codes (pip install "
            "'axolotl-orpheus[ray]')."
        },
    )
    orpheus_ray_address: str | None = Field(
        default=None,
        json_schema_extra={
            "description": "The Ray cluster to join with orpheus_encode_cluster: ray, e.g. 10.0.0.1:6379 (default: "
            "RAY_ADDRESS, else the cluster `ray start` began on this machine, else a Ray started for the run)."
        },
    )

    orpheus_on_bad_row: Literal["skip", "raise"] = Field(
        default="skip",
        json_schema_extra={
            "description": "skip: drop a row that cannot be used and count it in orpheus_report.json; "
            "raise: stop with an error naming the dataset, row and file."
        },
    )
    orpheus_max_seconds: float | None = Field(
        default=None, gt=0, json_schema_extra={"description": "Drop clips longer than this (default: no limit)."}
    )
    orpheus_min_seconds: float | None = Field(
        default=None, ge=0, json_schema_extra={"description": "Drop clips shorter than this (default: no limit)."}
    )
    orpheus_dnsmos: bool = Field(
        default=False,
        json_schema_extra={
            "description": "Score each clip's audio quality with DNSMOS (cached by audio content) and record the "
            "OVRL distribution per dataset and speaker in orpheus_report.json (pip install "
            "'axolotl-orpheus[quality]')."
        },
    )
    orpheus_min_dnsmos: float | None = Field(
        default=None,
        ge=1,
        le=5,
        json_schema_extra={
            "description": "Drop rows whose clip's DNSMOS OVRL (1-5) is under this, counted as low_quality; "
            "implies orpheus_dnsmos (default: keep every clip)."
        },
    )

    orpheus_sample_prompts: list[SamplePrompt] = Field(
        default_factory=list,
        json_schema_extra={
            "description": "Spoken at each evaluation and at the end of training into "
            "output_dir/orpheus_samples/step-N/*.wav (and to wandb / tensorboard when on); empty: off."
        },
    )
    orpheus_sample_max_new_tokens: int = Field(
        default=DEFAULT_MAX_NEW_TOKENS,
        ge=7,
        json_schema_extra={"description": "Token budget per sample sentence (7 per frame)."},
    )
    orpheus_eval_samples: int = Field(
        default=0,
        ge=0,
        json_schema_extra={
            "description": "At each evaluation, speak the eval split's first N rows and log eval_orpheus_cer, _wer, "
            "_speaker_similarity, _stop_rate, _duration_ratio and _loop_rate; samples and metrics.json go to "
            "output_dir/orpheus_samples/step-N/. 0: off."
        },
    )
    orpheus_asr_model: str = Field(
        default=DEFAULT_ASR_MODEL,
        json_schema_extra={"description": "Whisper model that transcribes the samples: a hub id or a local folder."},
    )
    orpheus_eval_language: str | None = Field(
        default=None,
        json_schema_extra={"description": "The samples' language for Whisper, e.g. en (default: detected per sample)."},
    )
    orpheus_speaker_model: str = Field(
        default=DEFAULT_SPEAKER_MODEL,
        json_schema_extra={
            "description": "x-vector model that compares each sample's voice with its row's audio: a hub id or a "
            "local folder."
        },
    )

    @model_validator(mode="after")
    def keys_agree(self):
        """Rules that span keys, checked when the config loads."""
        low, high = self.orpheus_min_seconds, self.orpheus_max_seconds
        if low is not None and high is not None and low > high:
            raise ValueError(
                f"orpheus_min_seconds ({low:g}) is more than orpheus_max_seconds ({high:g}), which would drop every "
                "clip; lower orpheus_min_seconds or raise orpheus_max_seconds"
            )
        kinds = {name.split(":")[0] for name in self.orpheus_encode_devices or []}
        if len(kinds) > 1:
            raise ValueError(
                f"orpheus_encode_devices {self.orpheus_encode_devices} mixes device kinds {sorted(kinds)}; list "
                "devices of one kind, e.g. [cuda:0, cuda:1]"
            )
        return self

    @classmethod
    def from_cfg(cls, cfg) -> "OrpheusArgs":
        """The options set in an axolotl config (raw or validated), defaults for the rest."""
        return cls.model_validate({name: cfg[name] for name in cls.model_fields if cfg.get(name) is not None})

    @property
    def dnsmos(self) -> bool:
        """Whether preprocessing scores the clips' quality."""
        return self.orpheus_dnsmos or self.orpheus_min_dnsmos is not None

    def fingerprint(self) -> str:
        """A digest of the settings that shape the prepared rows (all but NOT_IN_ROWS) and of this package's version."""
        # Unset, the quality keys leave the digest as it was before they existed: no data is prepared again for them.
        unset = {name for name in QUALITY_KEYS if getattr(self, name) == type(self).model_fields[name].default}
        settings = json.dumps(self.model_dump(mode="json", exclude=NOT_IN_ROWS | unset), sort_keys=True)
        return hashlib.md5(f"{__version__}|{settings}".encode()).hexdigest()
