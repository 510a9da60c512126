"""The shared voice's model card (README.md): metadata the hub reads, then what the voice is, its data, scores,
samples, how to use, reproduce and build on it, and its speakers' consent and licence."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from axolotl_orpheus import __version__, layout
from axolotl_orpheus.listen.evaluation import METRICS
from axolotl_orpheus.listen.voice import TEXT_PROMPT, VoiceInfo
from axolotl_orpheus.prepare.report import DROP_REASONS
from axolotl_orpheus.share.config import CONFIG_FILE, PATH_LIKE, PublishedConfig
from axolotl_orpheus.share.scores import MEANINGS, SCORES_FILE, Scores

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
NO_CONSENT = (
    "No consent statement was given when this voice was shared. Do not use it to imitate a real person who did not "
    "agree to it, and ask the publisher before any use that needs the speakers' consent."
)


def is_hub_id(value: str | None) -> bool:
    """Whether `value` reads as a hub repository id rather than a path on some machine."""
    return bool(value) and bool(HUB_ID.match(value)) and not PATH_LIKE.match(value) and not Path(value).exists()


@dataclass
class Sample:
    file: str  # relative to the voice folder
    voice: str | None
    text: str
    seed: int


@dataclass
class CardFacts:
    """What the card says, gathered by `share`."""

    name: str
    model_id: str  # how the commands on the card name the voice: its hub id, else its folder
    kind: str  # "full", "adapter" or "merged"
    base_model: str | None
    info: VoiceInfo
    report: dict | None = None
    config: PublishedConfig | None = None
    datasets: list[str] = field(default_factory=list)  # the hub datasets it was trained on
    scores: Scores | None = None
    samples: list[Sample] = field(default_factory=list)
    sampling: dict = field(default_factory=dict)  # the samples' settings
    language: list[str] = field(default_factory=list)
    license: str | None = None
    consent: str | None = None


def metadata(facts: CardFacts):
    """The card's YAML header, as huggingface_hub writes and the hub reads it."""
    from huggingface_hub import ModelCardData

    tags = ["orpheus", "axolotl", "axolotl-orpheus", "snac", "text-to-speech"]
    return ModelCardData(
        base_model=facts.base_model if is_hub_id(facts.base_model) else None,
        base_model_relation="adapter" if facts.kind == "adapter" else "finetune",
        library_name="peft" if facts.kind == "adapter" else "transformers",
        pipeline_tag="text-to-speech",
        tags=[*tags, "lora"] if facts.kind != "full" else tags,
        language=facts.language or None,
        license=facts.license,
        datasets=facts.datasets or None,
    )


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def about(facts: CardFacts) -> str:
    base = f"`{facts.base_model}`" if facts.base_model else "an Orpheus model"
    what = {
        "full": "the full model",
        "adapter": f"a LoRA adapter on {base} (engines that cannot apply adapters need it merged: `share --merge`)",
        "merged": f"a LoRA adapter merged into {base}, saved in the base's dtype",
    }[facts.kind]
    stops = (
        ": an engine that applies this adapter reads its base's generation config, so give it that stop token"
        if facts.kind == "adapter"
        else ", so `generate`, the transformers pipeline and vLLM stop where Orpheus stops"
    )
    info = facts.info
    if info.voices:
        prompt = (
            f'prompts read `"{{voice}}: {{text}}"` with the voice one of {", ".join(f"`{v}`" for v in info.voices)}'
        )
    elif info.prompt == TEXT_PROMPT:
        prompt = "prompts are the text alone (no voice name)"
    else:
        prompt = 'prompts read `"{voice}: {text}"`; the voices it was trained on were not recorded'
    return (
        f"# {facts.name}\n\n"
        f"An [Orpheus TTS](https://github.com/canopyai/Orpheus-TTS) voice fine-tuned from {base} with "
        f"[axolotl](https://github.com/axolotl-ai-cloud/axolotl) and axolotl-orpheus {info.package_version or '?'}: "
        f"a Llama that speaks SNAC audio codes ({info.snac_model}, {info.sample_rate // 1000} kHz) as tokens. "
        f"This folder holds {what}; {prompt}.\n\n"
        f"Generation stops at end_of_speech ({layout.END_OF_SPEECH}), which `generation_config.json` records with "
        f"Orpheus' sampling{stops}. "
        "`orpheus_voice.json` holds what a loader needs: the voices, the prompt form, the SNAC model.\n"
    )


def data_section(facts: CardFacts) -> str:
    text = "\n## Data\n\n"
    where = ", ".join(f"[{d}](https://huggingface.co/datasets/{d})" for d in facts.datasets)
    text += f"Trained on {where}.\n\n" if where else "The training data is not published with the voice.\n\n"
    if facts.report is None:
        return text + "No report of the training rows was found (`orpheus_report.json`, from `axolotl preprocess`).\n"
    total = facts.report["total"]
    text += (
        f"From `orpheus_report.json`: {total['rows_out']} of {total['rows_in']} clips kept, "
        f"{total['audio_hours_out']:.3f} of {total['audio_hours_in']:.3f} hours of audio.\n\n"
    )
    text += table(
        ["speaker", "clips", "hours"],
        [[name or "(no speaker)", e["rows"], f"{e['hours']:.3f}"] for name, e in total["speakers"].items()],
    )
    dropped = [[reason, e["count"], DROP_REASONS.get(reason, "")] for reason, e in total["dropped"].items()]
    if total.get("dropped_by_axolotl"):
        dropped.append(
            ["axolotl's own steps", total["dropped_by_axolotl"]["count"], total["dropped_by_axolotl"]["why"]]
        )
    if dropped:
        text += "\nRows dropped, and why:\n\n" + table(["reason", "clips", "what it means"], dropped)
    else:
        text += "\nNo row was dropped.\n"
    return text


def scores_section(facts: CardFacts) -> str:
    text = "\n## Scores\n\n"
    scores = facts.scores
    if scores is None:
        return text + (
            "Not scored. `axolotl-orpheus evaluate --model VOICE --out OUT` scores it; `share --scores OUT` puts the "
            "scores here.\n"
        )
    better = {True: "higher", False: "lower", None: "near 1"}
    rows = [
        [f"`{name}`", f"{value:.3f}", better[METRICS.get(name)], MEANINGS.get(name, "")]
        for name, value in scores.means.items()
    ]
    count = f" on {scores.samples} sample{'s' if scores.samples != 1 else ''}" if scores.samples else ""
    text += f"From {scores.source}{count}:\n\n" + table(["score", "value", "better", "what it says"], rows)
    text += (
        f"\nHeard by the ASR model `{scores.asr_model or 'not recorded'}` and compared by the speaker model "
        f"`{scores.speaker_model or 'not recorded'}`. The figures are also in `{SCORES_FILE}`.\n"
    )
    return text


def samples_section(facts: CardFacts) -> str:
    text = "\n## Samples\n\n"
    if not facts.samples:
        return text + "None were spoken when this voice was shared.\n"
    settings = ", ".join(f"{key} {value}" for key, value in facts.sampling.items())
    text += f"Spoken with this folder's model, each with its seed; sampling: {settings}.\n\n"
    rows = [[f"[{s.file}]({s.file})", s.voice or "", s.text, s.seed] for s in facts.samples]
    text += table(["sample", "voice", "text", "seed"], rows)
    first = facts.samples[0]
    voice = f" --voice {first.voice}" if first.voice else ""
    text += (
        f'\nAgain: `axolotl-orpheus speak --model {facts.model_id}{voice} --text "{first.text}" '
        f"--seed {first.seed} --max-new-tokens {facts.sampling.get('max_new_tokens')}`.\n"
    )
    return text


def use_section(facts: CardFacts) -> str:
    voice = next(iter(facts.info.voices), None)
    voice_flag = f" --voice {voice}" if voice else ""
    prompt = f"{voice}: Hello there." if voice else "Hello there."
    # transformers applies an adapter (with peft installed) but keeps its base's generation config.
    stop = f", eos_token_id={layout.END_OF_SPEECH}" if facts.kind == "adapter" else ""
    return f"""
## Use

```bash
pip install axolotl-orpheus
axolotl-orpheus speak --model {facts.model_id}{voice_flag} --text "Hello there." --out hello.wav
axolotl-orpheus serve --model {facts.model_id}
```

With transformers alone (the prompt is the training row's start; generation stops at end_of_speech through
`generation_config.json`; the codes between start_of_speech and end_of_speech are SNAC frames of 7):

```python
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{facts.model_id}")
tokenizer = AutoTokenizer.from_pretrained("{facts.model_id}")
text_ids = tokenizer("{prompt}", add_special_tokens=True).input_ids
prompt = [{layout.START_OF_HUMAN}, *text_ids, {", ".join(map(str, layout.PROMPT_SUFFIX.tolist()))}]
codes = model.generate(torch.tensor([prompt]){stop})[0, len(prompt):]  # ends with {layout.END_OF_SPEECH}
```
"""


def reproduce_section(facts: CardFacts) -> str:
    text = "\n## Reproduce, or build on it\n\n"
    if facts.config is None:
        text += "The training config was not shared with this voice.\n"
    else:
        text += (
            f"`{CONFIG_FILE}` is the config it was trained on, every `orpheus_*` key written out:\n\n"
            "```bash\npip install axolotl-orpheus\n"
            f"axolotl preprocess {CONFIG_FILE} && axolotl train {CONFIG_FILE}\n```\n"
        )
        if facts.config.local:
            places = ", ".join(f"`{where}`" for where, _ in facts.config.local)
            text += f"\nReplace the paths on the trainer's machine first (marked in the file): {places}.\n"
        if facts.config.removed:
            text += f"\nLeft out as secrets: {', '.join(f'`{where}`' for where in facts.config.removed)}.\n"
    text += (
        "\nA new voice built on this one: `axolotl-orpheus init ./my-data --from "
        f"{facts.model_id}` writes a config that continues from this model with its `orpheus_*` settings.\n"
    )
    return text


def consent_section(facts: CardFacts) -> str:
    licence = f"`{facts.license}`" if facts.license else "not stated by the publisher"
    return (
        "\n## Consent and licence\n\n"
        f"**The speakers' consent:** {facts.consent or NO_CONSENT}\n\n"
        f"**Licence:** {licence}. The base model's licence applies too.\n"
    )


def card_text(facts: CardFacts) -> str:
    """README.md of the shared voice."""
    body = "".join(
        section(facts)
        for section in (about, data_section, scores_section, samples_section, use_section, reproduce_section)
    )
    footer = f"\nShared with `axolotl-orpheus share` ({__version__}).\n"
    return f"---\n{metadata(facts).to_yaml()}\n---\n\n{body}{consent_section(facts)}{footer}"
