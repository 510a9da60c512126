"""The plugin's YAML keys: top-level `orpheus_*` options, validated by axolotl when the plugin is listed."""

from typing import Literal

from pydantic import BaseModel, Field, field_validator

# The reference recipe's models and sequence length (axolotl's examples/orpheus).
DEFAULT_BASE_MODEL = "canopylabs/orpheus-3b-0.1-pretrained"
DEFAULT_SNAC_MODEL = "hubertsiuzdak/snac_24khz"
DEFAULT_SEQUENCE_LEN = 8192
# Keys that never change a prepared row (training-time samples, where codes are cached), so changing them
# does not re-prepare data.
NOT_IN_ROWS = {"orpheus_sample_prompts", "orpheus_sample_max_new_tokens", "orpheus_codes_cache"}


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
            "description": "Clips of equal padded length SNAC encodes together (default: 1 on cpu, where "
            "batching is slower; on a GPU as many as make up 320 s of audio, about 7 GB of activations, halved "
            "when the GPU runs out of memory); clips are sorted by length first, and batching never changes a code."
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
            "description": "torch.compile SNAC's encoder (one-time compilation of about 25 s, cached by torch): "
            "about 0.02% of codes differ from eager SNAC's, and on CPU it is slower than the default path's "
            "C kernels. Unmeasured on GPUs."
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

    orpheus_sample_prompts: list[SamplePrompt] = Field(
        default_factory=list,
        json_schema_extra={
            "description": "Spoken at each evaluation and at the end of training into "
            "output_dir/orpheus_samples/step-N/*.wav (and to wandb / tensorboard when on); empty: off."
        },
    )
    orpheus_sample_max_new_tokens: int = Field(
        default=1200, ge=7, json_schema_extra={"description": "Token budget per sample sentence (7 per frame)."}
    )

    @classmethod
    def from_cfg(cls, cfg) -> "OrpheusArgs":
        """The options set in an axolotl config (raw or validated), defaults for the rest."""
        return cls.model_validate({name: cfg[name] for name in cls.model_fields if cfg.get(name) is not None})

    def row_settings(self) -> dict:
        """The settings that shape the prepared rows (all but NOT_IN_ROWS)."""
        return self.model_dump(mode="json", exclude=NOT_IN_ROWS)
