"""The training config as a shared voice publishes it, and the config that continues from a shared voice.

Published: every `orpheus_*` key written out (defaults included, so the rows are rebuilt the same when a default
changes), secrets never copied, paths that exist only on the trainer's machine marked and listed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from axolotl_orpheus.args import OrpheusArgs
from axolotl_orpheus.errors import UserError

CONFIG_FILE = "finetune.yml"
LOCAL_NOTE = "# local to the trainer's machine: replace"

# A key is a secret when its name says so: a token, a password, a key to an API, a secret, a credential...
SECRET_NAME = re.compile(r"(^|_)(token|password|passwd|secret|credentials?|api_?key|access_?key|private_?key|auth)$")
# ...except the tokenizer's own tokens, which are text the model reads.
TOKENIZER_TOKENS = {"bos_token", "eos_token", "pad_token", "unk_token", "sep_token", "cls_token", "mask_token"}
# A value is a secret whatever its key when it looks like a hub or OpenAI-style key.
SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,})$")
# What a path on the trainer's machine looks like, existing here or not.
PATH_LIKE = re.compile(r"^(/|\./|\.\./|~|[A-Za-z]:\\)")


def is_secret(key: str, value) -> bool:
    name = key.lower()
    if isinstance(value, str) and SECRET_VALUE.match(value.strip()):
        return True
    if name in TOKENIZER_TOKENS or isinstance(value, bool) or value is None:
        return False
    return bool(SECRET_NAME.search(name))


def without_secrets(value, path: str = "") -> tuple[object, list[str]]:
    """`value` (a config, or part of one) with every secret left out, and where each was."""
    removed: list[str] = []
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if is_secret(str(key), item):
                removed.append(where)
                continue
            kept[key], found = without_secrets(item, where)
            removed += found
        return kept, removed
    if isinstance(value, list):
        kept_items = []
        for index, item in enumerate(value):
            if isinstance(item, str) and is_secret("", item):
                removed.append(f"{path}[{index}]")
                continue
            kept_item, found = without_secrets(item, f"{path}[{index}]")
            kept_items.append(kept_item)
            removed += found
        return kept_items, removed
    return value, removed


def is_local_path(value, config_dir: Path) -> bool:
    """Whether a config value names a file or folder on this machine (or looks like a path to one)."""
    if not isinstance(value, str) or not value or "\n" in value or len(value) > 1024:
        return False
    if PATH_LIKE.match(value):
        return True
    try:
        return (config_dir / value).exists() or Path(value).exists()
    except OSError:
        return False


def local_paths(value, config_dir: Path, path: str = "") -> list[tuple[str, str]]:
    """(where, value) of each value in a config that names a path on the trainer's machine."""
    if isinstance(value, dict):
        return [
            found
            for key, item in value.items()
            for found in local_paths(item, config_dir, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(value, list):
        return [
            found for index, item in enumerate(value) for found in local_paths(item, config_dir, f"{path}[{index}]")
        ]
    return [(path, value)] if is_local_path(value, config_dir) else []


def dump_yaml(value) -> str:
    """YAML with every scalar on one line (so a line can be marked), keys in their order."""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=math.inf, default_flow_style=False)


def mark_lines(text: str, values: set[str]) -> str:
    """`text` with LOCAL_NOTE after each line whose scalar value is one of `values`."""
    marked = []
    for line in text.splitlines():
        match = re.match(r"^\s*(?:- )*(?:[^\s:#'\"][^:#]*: )?(.+)$", line)
        scalar = None
        if match:
            try:
                scalar = yaml.safe_load(match.group(1))
            except yaml.YAMLError:
                scalar = None
        marked.append(f"{line}  {LOCAL_NOTE}" if isinstance(scalar, str) and scalar in values else line)
    return "\n".join(marked) + "\n"


@dataclass
class PublishedConfig:
    text: str  # the YAML to publish
    removed: list[str] = field(default_factory=list)  # where secrets were
    local: list[tuple[str, str]] = field(default_factory=list)  # (where, value) of paths on the trainer's machine


def read_config(path: Path) -> dict:
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise UserError(
            f"cannot read the config {path} ({error}). To fix: give the finetune.yml it trained on"
        ) from error
    if not isinstance(config, dict):
        raise UserError(
            f"{path} is not an axolotl config (a YAML mapping). To fix: give the finetune.yml it trained on"
        )
    return config


def published_config(path: Path) -> PublishedConfig:
    """The config at `path` as a shared voice publishes it (module docstring)."""
    config, removed = without_secrets(read_config(path))
    local = local_paths(config, Path(path).resolve().parent)
    unset = {name: value for name, value in defaults().items() if name not in config}
    text = "# The config this voice was trained on, as `axolotl-orpheus share` published it; secrets are left out.\n"
    if local:
        text += f"# Lines marked '{LOCAL_NOTE[2:]}' name paths on the trainer's machine.\n"
    text += "#   axolotl preprocess finetune.yml && axolotl train finetune.yml\n"
    text += dump_yaml(config)
    if unset:
        text += (
            "\n# The orpheus_* keys the config left at their defaults, written out so the rows are rebuilt the same:\n"
        )
        text += dump_yaml(unset)
    return PublishedConfig(mark_lines(text, {value for _, value in local}), removed, local)


def defaults() -> dict:
    """Every orpheus_* key with its default, as YAML holds it."""
    return OrpheusArgs().model_dump(mode="json")


# The orpheus_* keys a voice built on a shared one does not take from it: the data's own columns (init reads
# yours), the first voice's sample prompts (its voice names), where and how the trainer's machine encoded, and
# the keys init writes itself.
NOT_CARRIED = {
    "orpheus_audio_column",
    "orpheus_text_column",
    "orpheus_speaker_column",
    "orpheus_sample_prompts",
    "orpheus_device",
    "orpheus_encode_devices",
    "orpheus_encode_batch_size",
    "orpheus_codes_cache",
    "orpheus_encode_cluster",
    "orpheus_ray_address",
    "orpheus_snac_model",
    "orpheus_on_bad_row",
}
LORA_KEYS = re.compile(r"^(lora_|peft_)")


@dataclass
class Continuation:
    """What `init --from` writes to continue from a shared voice."""

    base_model: str
    snac_model: str
    settings: str  # YAML lines appended to the config, with their comment


def continue_from(voice: str) -> Continuation:
    """The start of a config that continues from `voice`: a shared voice folder or its hub id.

    A full (or merged) model becomes base_model; a LoRA adapter is trained on from its own weights (lora_model_dir)
    on its base. The shared config's orpheus_* settings come along, but for NOT_CARRIED.
    """
    from axolotl_orpheus.listen.voice import ADAPTER_CONFIG, VOICE_FILE, VoiceInfo

    folder = voice_files(voice, [VOICE_FILE, CONFIG_FILE, ADAPTER_CONFIG])
    info = VoiceInfo.read(folder)
    if info is None:
        raise UserError(
            f"{voice} is not a shared voice: it has no {VOICE_FILE}. To fix: give a folder `axolotl-orpheus share` "
            "wrote, or its hub id"
        )
    shared = read_config(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else {}
    carried = {key: value for key, value in shared.items() if key.startswith("orpheus_") and key not in NOT_CARRIED}
    source = str(Path(voice).resolve()) if Path(voice).is_dir() else voice
    base_model = source
    adapter = folder / ADAPTER_CONFIG
    if adapter.is_file():
        base_model = json.loads(adapter.read_text())["base_model_name_or_path"]
        lora = {key: value for key, value in shared.items() if LORA_KEYS.match(key) and key != "lora_model_dir"}
        carried = {"adapter": shared.get("adapter", "lora"), "lora_model_dir": source, **lora, **carried}
    settings = f"\n# Continues from the shared voice {voice}"
    settings += " (its LoRA adapter, on its base model):\n" if adapter.is_file() else " (base_model above):\n"
    return Continuation(base_model, info.snac_model, settings + dump_yaml(carried) if carried else settings)


def voice_files(voice: str, names: list[str]) -> Path:
    """The folder holding a shared voice's small files: the voice folder itself, or their download from the hub."""
    if Path(voice).is_dir():
        return Path(voice)
    if Path(voice).exists() or voice.count("/") != 1:
        raise UserError(
            f"{voice} is neither a shared voice folder nor a hub id (OWNER/NAME). To fix: give one of those"
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    folder = None
    for name in names:
        try:
            folder = Path(hf_hub_download(voice, name)).parent
        except EntryNotFoundError:
            continue
        except Exception as error:  # noqa: BLE001 - offline, unknown repo, no access: all say the same to the user
            raise UserError(
                f"cannot read {name} of {voice} from the hub ({type(error).__name__}). To fix: check the id and that "
                "this machine is online (or has it cached), or download the voice folder and give its path"
            ) from error
    if folder is None:
        raise UserError(f"{voice} on the hub holds none of {names}. To fix: give a voice `axolotl-orpheus share` wrote")
    return folder
