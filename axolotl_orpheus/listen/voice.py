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
from axolotl_orpheus.args import DEFAULT_SNAC_MODEL
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


@dataclass
class Voice:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: VoiceInfo | None  # None: the folder does not say what it was trained on


def load_model(name_or_path: str, device: str | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) in eval mode on `device`, from a model folder, a hub id or a LoRA adapter folder.

    An adapter folder (one with adapter_config.json, as axolotl writes for `adapter: lora`) is applied to
    its base_model_name_or_path and merged; its tokenizer is used when it saved one, else the base's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

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
    return Voice(model, tokenizer, VoiceInfo.read(Path(name_or_path)) if Path(name_or_path).is_dir() else None)
