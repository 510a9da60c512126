"""`axolotl-orpheus share`: a checkpoint made into a voice folder that anyone can load, judge, reproduce and build on.

The folder: the model (full, the LoRA adapter as is, or merged into its base) and its tokenizer, the stamp
(generation_config.json, orpheus_voice.json, orpheus_report.json: share/stamp.py), finetune.yml without secrets,
scores.json, samples/NN-voice.wav with samples/samples.json, and README.md, the card (share/card.py).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from axolotl_orpheus.args import DEFAULT_MAX_NEW_TOKENS
from axolotl_orpheus.errors import UserError
from axolotl_orpheus.listen.voice import ADAPTER_CONFIG, Sampling, VoiceInfo
from axolotl_orpheus.share import DEFAULT_SAMPLES, card
from axolotl_orpheus.share.config import CONFIG_FILE, PublishedConfig, published_config
from axolotl_orpheus.share.scores import checkpoint_step, evaluate_scores, training_scores
from axolotl_orpheus.share.stamp import Stamp, prepared_report, voice_info

LOG = logging.getLogger(__name__)

SAMPLES_FOLDER = "samples"
SAMPLES_FILE = "samples.json"
# What the samples say when the config has no orpheus_sample_prompts.
SAMPLE_TEXTS = (
    "Hello there, this is my voice, and I am glad you could listen to it.",
    "The quick brown fox jumps over the lazy dog, then naps in the afternoon sun.",
    "Could you read that number back to me? It was four, seven, two, nine.",
    "Well, that was unexpected <laugh>, but it turned out fine in the end.",
)
# A model's weights, as save_pretrained writes them (sharded or not).
MODEL_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "*.bin.index.json")
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors", "adapter_model.bin")


@dataclass
class ShareOptions:
    source: Path
    out: Path
    config: Path | None = None
    merge: bool = False
    scores: Path | None = None
    prepared: Path | None = None  # for a checkpoint without orpheus_report.json
    samples: int = DEFAULT_SAMPLES
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int = 0
    snac_model: str | None = None  # the voice file's SNAC model, for the samples and loaders; default: as trained
    device: str | None = None
    license: str | None = None
    consent: str | None = None
    language: list[str] = field(default_factory=list)
    push_to_hub: str | None = None
    private: bool = False
    overwrite: bool = False


@dataclass
class Shared:
    """What `share` did, for the CLI to tell."""

    folder: Path
    checkpoint: Path  # the folder the model came from
    kind: str  # full, adapter, merged
    warnings: list[str] = field(default_factory=list)
    url: str | None = None  # where it was pushed


def has_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        any(folder.glob(pattern)) for pattern in MODEL_FILES if pattern != "config.json"
    )


def find_checkpoint(path: Path) -> Path:
    """The folder holding the model to share: `path` itself, or for an output_dir with only checkpoints, the best
    one trainer_state names, else the newest."""
    if not path.is_dir():
        raise UserError(f"{path} is not a folder. To fix: give axolotl's output_dir or one of its checkpoint-N folders")
    if (path / ADAPTER_CONFIG).is_file() or has_model(path):
        return path
    checkpoints = sorted(
        (folder for folder in path.glob("checkpoint-*") if (folder / ADAPTER_CONFIG).is_file() or has_model(folder)),
        key=checkpoint_step,
    )
    if not checkpoints:
        raise UserError(
            f"{path} is no checkpoint: it holds neither a model (config.json with its weights) nor a LoRA adapter "
            f"({ADAPTER_CONFIG}). To fix: give axolotl's output_dir after training, or one of its checkpoint-N folders"
        )
    state = checkpoints[-1] / "trainer_state.json"
    best = json.loads(state.read_text()).get("best_model_checkpoint") if state.is_file() else None
    named = [folder for folder in checkpoints if best and folder.name == Path(best).name]
    return (named or checkpoints)[-1]


def adapter_base(checkpoint: Path) -> str:
    """The base model a LoRA adapter applies to, refused unless this machine can load it."""
    from transformers import AutoConfig

    base = json.loads((checkpoint / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    try:
        AutoConfig.from_pretrained(base)
    except Exception as error:  # noqa: BLE001 - missing folder, unknown id, offline without a cached copy
        raise UserError(
            f"the adapter's base model {base!r} cannot be found ({type(error).__name__}). To fix: make it loadable "
            f"here (download it, or be online), or edit base_model_name_or_path in {checkpoint / ADAPTER_CONFIG}"
        ) from error
    return base


def prepare_out(out: Path, source: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise UserError(f"{out} exists and is not empty. To fix: give another --out, or --overwrite to replace it")
        if not out.is_dir() or source.resolve().is_relative_to(out.resolve()):
            raise UserError(f"--overwrite would delete {out}, which holds the checkpoint. To fix: give another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def copy_files(source: Path, out: Path, patterns: tuple[str, ...]) -> None:
    for pattern in patterns:
        for path in source.glob(pattern):
            shutil.copy2(path, out / path.name)


def write_model(checkpoint: Path, out: Path, kind: str, base: str | None) -> None:
    """The weights and the tokenizer: copied as they are, or for `merged` the adapter merged into its base."""
    from transformers import AutoTokenizer

    if kind == "merged":
        from axolotl_orpheus.listen.voice import load_model

        model, tokenizer = load_model(str(checkpoint), "cpu")  # the one loader that merges adapters
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return
    copy_files(checkpoint, out, ADAPTER_FILES if kind == "adapter" else MODEL_FILES)
    has_tokenizer = (checkpoint / "tokenizer_config.json").is_file()
    AutoTokenizer.from_pretrained(str(checkpoint) if has_tokenizer else base).save_pretrained(out)


def find_stamp(checkpoint: Path, options: ShareOptions, config: dict | None, warnings: list[str]) -> Stamp:
    """What training stamped into the checkpoint, else the stamp of --prepared's report."""
    stamp = Stamp.read(checkpoint) or Stamp.read(checkpoint.parent)
    if stamp is not None and options.prepared is None:
        return stamp
    snac = (config or {}).get("orpheus_snac_model") or (stamp.info.snac_model if stamp else VoiceInfo().snac_model)
    report = prepared_report(options.prepared) if options.prepared else None
    if report is None:
        warnings.append(
            f"{checkpoint} does not say which voices it knows (no orpheus_voice.json) and no --prepared report was "
            "given: the card lists none. To fix: --prepared DIR, the dataset it was trained on"
        )
    return Stamp(voice_info(report, snac), report)


def speak_samples(out: Path, info: VoiceInfo, options: ShareOptions, prompts: list[dict]) -> list[card.Sample]:
    """samples/NN-voice.wav spoken with the shared folder's model, loaded as anyone would load it."""
    from axolotl_orpheus import codec
    from axolotl_orpheus.audio import SAMPLE_RATE, write_wav
    from axolotl_orpheus.listen import speak
    from axolotl_orpheus.listen.voice import load_voice

    voice = load_voice(str(out), options.device)
    snac = codec.load_snac(info.snac_model, options.device)
    voices = list(info.voices) or [None]
    if not prompts:
        prompts = [{"text": text, "voice": voices[i % len(voices)]} for i, text in enumerate(SAMPLE_TEXTS)]
    (out / SAMPLES_FOLDER).mkdir(exist_ok=True)
    samples = []
    for index in range(options.samples):
        prompt = prompts[index % len(prompts)]
        seed = options.seed + index
        said_as = info.check_voice(prompt.get("voice"))
        name = f"{SAMPLES_FOLDER}/{index:02d}-{said_as or 'text'}.wav"
        audio = speak.speak(voice.model, voice.tokenizer, snac, prompt["text"], said_as, seed=seed, **sampling(options))
        write_wav(out / name, audio, SAMPLE_RATE)
        samples.append(card.Sample(name, said_as, prompt["text"], seed))
    (out / SAMPLES_FOLDER / SAMPLES_FILE).write_text(
        json.dumps({"settings": sampling(options), "samples": [asdict(s) for s in samples]}, indent=2) + "\n"
    )
    return samples


def sampling(options: ShareOptions) -> dict:
    """How the samples are spoken: a voice's defaults, with the samples' own token budget."""
    return asdict(Sampling(max_new_tokens=options.max_new_tokens))


def share_voice(options: ShareOptions) -> Shared:
    """Write the voice folder (module docstring); push it with --push-to-hub."""
    from axolotl_orpheus.share.config import read_config

    checkpoint = find_checkpoint(Path(options.source))
    adapter = (checkpoint / ADAPTER_CONFIG).is_file()
    if options.merge and not adapter:
        raise UserError(
            f"{checkpoint} is a full model, not a LoRA adapter: there is nothing to merge. To fix: drop --merge"
        )
    kind = ("merged" if options.merge else "adapter") if adapter else "full"
    base = adapter_base(checkpoint) if adapter else None
    if options.push_to_hub:
        check_repo_id(options.push_to_hub)
    scores = evaluate_scores(options.scores, checkpoint) if options.scores else None  # refused before any writing
    raw_config = read_config(options.config) if options.config else None
    out = Path(options.out)
    prepare_out(out, checkpoint, options.overwrite)
    shared = Shared(out, checkpoint, kind)

    write_model(checkpoint, out, kind, base)
    stamp = find_stamp(checkpoint, options, raw_config, shared.warnings)
    if options.snac_model:
        stamp = Stamp(replace(stamp.info, snac_model=options.snac_model), stamp.report)
    if not card.is_hub_id(stamp.info.snac_model):
        shared.warnings.append(
            f"orpheus_voice.json names the SNAC model {stamp.info.snac_model}, a path on this machine. To fix: "
            "--snac-model HUB_ID (hubertsiuzdak/snac_24khz)"
        )
    stamp.write(out)
    config: PublishedConfig | None = None
    if options.config:
        config = published_config(options.config)
        (out / CONFIG_FILE).write_text(config.text, encoding="utf-8")
        if config.local:
            shared.warnings.append(
                f"{CONFIG_FILE} names paths on this machine, marked in it for others to replace: "
                + ", ".join(where for where, _ in config.local)
            )
    else:
        shared.warnings.append(f"no --config: the folder has no {CONFIG_FILE}, so nobody can reproduce the voice")
    scores = scores or training_scores(checkpoint, raw_config)
    if scores is not None:
        scores.write(out)
    samples = []
    if options.samples:
        prompts = [dict(p) for p in (raw_config or {}).get("orpheus_sample_prompts") or []]
        samples = speak_samples(out, stamp.info, options, prompts)

    base_model = base or (raw_config or {}).get("base_model")
    if adapter and not card.is_hub_id(base):
        shared.warnings.append(
            f"the adapter's base {base} is a path on this machine: "
            + ("the merged model stands alone" if options.merge else "others cannot apply it. To fix: --merge")
        )
    if not options.consent:
        shared.warnings.append("no --consent: the card says the speakers' consent was not stated")
    if not options.license:
        shared.warnings.append("no --license: the card says the licence was not stated")
    facts = card.CardFacts(
        name=(options.push_to_hub or out.resolve().name).rpartition("/")[2],
        model_id=options.push_to_hub or str(out),
        kind=kind,
        base_model=base_model,
        info=stamp.info,
        report=stamp.report,
        config=config,
        datasets=hub_datasets(raw_config),
        scores=scores,
        samples=samples,
        sampling=sampling(options),
        language=options.language or language_of(raw_config),
        license=options.license,
        consent=options.consent,
    )
    (out / "README.md").write_text(card.card_text(facts), encoding="utf-8")
    if options.push_to_hub:
        shared.url = push(out, options.push_to_hub, options.private)
    return shared


def hub_datasets(config: dict | None) -> list[str]:
    entries = [*((config or {}).get("datasets") or []), *((config or {}).get("test_datasets") or [])]
    paths = [str(entry.get("path", "")) for entry in entries if isinstance(entry, dict)]
    return sorted({path for path in paths if card.is_hub_id(path)})


def language_of(config: dict | None) -> list[str]:
    language = (config or {}).get("orpheus_eval_language")
    return [language] if language else []


def check_repo_id(repo_id: str) -> None:
    if not card.HUB_ID.match(repo_id):
        raise UserError(f"--push-to-hub {repo_id!r} is not a hub id. To fix: give OWNER/NAME, e.g. me/my-voice")


def push(folder: Path, repo_id: str, private: bool) -> str:
    """create_repo + upload_folder; a clear error, with the folder kept, when the hub cannot take it."""
    from huggingface_hub import HfApi, constants, get_token

    later = f"the voice folder {folder} is kept: upload it later with `hf upload {repo_id} {folder} --repo-type model`"
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"cannot push to the hub: HF_HUB_OFFLINE is set. To fix: unset it on a machine online; {later}")
    if get_token() is None:
        raise UserError(f"cannot push to the hub: no token. To fix: `hf auth login` (or set HF_TOKEN); {later}")
    api = HfApi()
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            commit_message="Share a voice (axolotl-orpheus)",
        )
    except Exception as error:  # noqa: BLE001 - offline, no rights, a refused upload: each says the same to the user
        raise UserError(
            f"cannot push to {repo_id} ({type(error).__name__}: {error}). To fix: check the id, your token's write "
            f"access and the connection; {later}"
        ) from error
    return str(url)
