"""A voice to speak with: a checkpoint, a LoRA adapter or a shared voice folder, with what it says about itself.

A folder that training or `share` wrote holds `orpheus_voice.json` (VOICE_FILE): the voices it knows, its prompt
form, the SNAC model and the package version that trained it. A folder without one still loads; it then knows
no voices and any voice name is used as written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from axolotl_orpheus import devices, layout
from axolotl_orpheus.args import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_REPETITION_PENALTY,
    DEFAULT_SNAC_MODEL,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
)
from axolotl_orpheus.audio import SAMPLE_RATE
from axolotl_orpheus.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

VOICE_FILE = "orpheus_voice.json"
ADAPTER_CONFIG = "adapter_config.json"
# The prompt forms a voice was trained on (layout.prompt_text).
SPEAKER_PROMPT = "{voice}: {text}"
TEXT_PROMPT = "{text}"


@dataclass(frozen=True)
class VoiceInfo:
    """What a loader needs to speak with a trained voice, and nothing else."""

    voices: dict[str, dict] = field(default_factory=dict)  # name -> {"clips": N, "hours": H}
    prompt: str = TEXT_PROMPT
    snac_model: str = DEFAULT_SNAC_MODEL
    sample_rate: int = SAMPLE_RATE
    package_version: str = ""

    def write(self, folder: Path) -> Path:
        path = Path(folder) / VOICE_FILE
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, folder: Path) -> VoiceInfo | None:
        """The folder's voice file, or None when it has none."""
        path = Path(folder) / VOICE_FILE
        if not path.is_file():
            return None
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{key: found[key] for key in found if key in cls.__dataclass_fields__})
        except (ValueError, TypeError) as exc:
            raise UserError(
                f"{path} is not a voice file ({exc}). To fix: delete it, or write it again with share"
            ) from exc

    def check_voice(self, voice: str | None) -> str | None:
        """`voice` if this model knows it, or it knows none; a model trained on text-only prompts ignores it."""
        if self.prompt == TEXT_PROMPT and not self.voices:
            return None
        if self.voices and voice not in self.voices:
            raise UserError(f"unknown voice {voice!r}. To fix: use one of {sorted(self.voices)}")
        return voice


@dataclass(frozen=True)
class Sampling:
    """How a voice samples unless asked otherwise: its generation_config.json's values where it sets them, else
    the package's defaults. The stop is always end_of_speech: the frame constraint allows no other."""

    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    @classmethod
    def of(cls, generation_config) -> Sampling:
        """From a transformers GenerationConfig, whose unset values are None."""
        found = {name: getattr(generation_config, name, None) for name in cls.__dataclass_fields__}
        return cls(**{name: value for name, value in found.items() if value is not None})


@dataclass
class Voice:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: VoiceInfo | None  # None: the folder does not say what it was trained on
    sampling: Sampling = field(default_factory=Sampling)

    @property
    def voices(self) -> list[str]:
        """The voice names it was trained with; none when it was trained on text-only prompts or does not say."""
        return sorted(self.info.voices) if self.info else []

    def prompt_voice(self, voice: str | None) -> str | None:
        """The name a prompt carries for `voice`: a known one (UserError otherwise), none for a text-only model,
        and as written when the folder does not say (as canopy's engine does)."""
        return self.info.check_voice(voice) if self.info else voice


MODEL_KINDS = "a checkpoint or output folder, a LoRA adapter folder, a shared voice folder, or a hub id"


def _on_the_hub(repo_id: str) -> Exception | None:
    """None when the hub serves `repo_id`'s config.json or adapter_config.json (or this machine's hub cache holds
    one, offline), else the first error met."""
    from huggingface_hub import hf_hub_download

    first = None
    for name in ("config.json", ADAPTER_CONFIG):
        try:
            hf_hub_download(repo_id, name)
            return None
        except Exception as error:  # noqa: BLE001 - any failure to fetch it means: not a model here
            first = first or error
    return first


def check_model(name_or_path: str) -> None:
    """Refuse, before anything loads, what is neither a model folder (config.json), a LoRA adapter folder whose base
    model is one of these, nor a hub id the hub serves: a UserError naming it and the fix."""
    path = Path(name_or_path)
    adapter_config = path / ADAPTER_CONFIG
    if adapter_config.is_file():
        base = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError(
                f"{adapter_config} names no base_model_name_or_path. To fix: set it to the base model's folder or "
                "hub id"
            )
        try:
            check_model(base)
        except UserError as error:
            raise UserError(
                f"the LoRA adapter {name_or_path} is for the base model {base!r}, which cannot be found ({error}). To "
                f"fix: set base_model_name_or_path in {adapter_config} to the base model's folder or hub id"
            ) from None
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"{name_or_path} is a folder with no config.json or {ADAPTER_CONFIG}, so no model. To fix: give "
                f"{MODEL_KINDS}"
            )
    elif path.exists():
        raise UserError(f"{name_or_path} is a file, not a model. To fix: give {MODEL_KINDS}")
    else:
        error = _on_the_hub(name_or_path)
        if error is not None:
            raise UserError(
                f"no model {name_or_path!r}: no such folder, nor a model the hub serves ({type(error).__name__}). "
                f"To fix: give {MODEL_KINDS}"
            )


def load_model(name_or_path: str, device: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) in eval mode on `device`, from a model folder, a hub id or a LoRA adapter folder.

    An adapter folder (one with adapter_config.json, as axolotl writes for `adapter: lora`) is applied to
    its base_model_name_or_path and merged; its tokenizer is used when it saved one, else the base's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model(name_or_path)
    adapter_config = Path(name_or_path) / ADAPTER_CONFIG
    if adapter_config.is_file():
        from peft import PeftModel

        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype="auto"), name_or_path)
        model = model.merge_and_unload()
        has_tokenizer = (Path(name_or_path) / "tokenizer_config.json").is_file()
        tokenizer = AutoTokenizer.from_pretrained(name_or_path if has_tokenizer else base)
    else:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype="auto")
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    layout.check_tokenizer(tokenizer)
    return model.to(devices.pick_device(device)).eval(), tokenizer


def load_voice(name_or_path: str, device: str | None = None) -> Voice:
    """The model, its tokenizer and its voice file (a local folder's; a hub id's is not read)."""
    model, tokenizer = load_model(name_or_path, device)
    info = VoiceInfo.read(Path(name_or_path)) if Path(name_or_path).is_dir() else None
    return Voice(model, tokenizer, info, Sampling.of(model.generation_config))
