"""Speaking from a checkpoint: the training prompt, frame-constrained sampling, the CLI, LoRA adapters."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile
import torch

from axolotl_orpheus import layout
from axolotl_orpheus.cli.main import main as cli_main
from axolotl_orpheus.listen.sentences import split_sentences
from axolotl_orpheus.listen.speak import (
    FrameConstraint,
    generate_speech,
    speak,
    speech_prompt_ids,
)
from axolotl_orpheus.listen.voice import load_model

VOCAB_SIZE = 156940


def tiny_settings(standins) -> list[str]:
    """CLI flags for the stand-ins: random SNAC, CPU, 10 frames at most."""
    return ["--snac-model", str(standins["snac"]), "--max-new-tokens", "70", "--device", "cpu"]


@pytest.fixture(scope="module")
def model(standins):
    return load_model(str(standins["model"]), "cpu")[0]


def test_prompt_is_the_training_row_up_to_start_of_speech(tokenizer):
    """The model must be asked exactly what it was trained to continue."""
    prompt = speech_prompt_ids(tokenizer, "Hello", "tara")
    # "tara: Hello" -> 128000, 83, 5169, 25, 22691 with the Orpheus tokenizer (Llama-3's BPE).
    assert prompt == [128259, 128000, 83, 5169, 25, 22691, 128009, 128260, 128261, 128257]
    frames = layout.interleave(np.arange(3), np.arange(6), np.arange(12))
    text_ids = tokenizer(layout.prompt_text("Hello", "tara"), add_special_tokens=True).input_ids
    row = layout.frame_row(np.array(text_ids), frames)
    assert row[: len(prompt)].tolist() == prompt and row[len(prompt) - 1] == layout.START_OF_SPEECH
    assert speech_prompt_ids(tokenizer, "Hello")[1:-4] == tokenizer("Hello").input_ids  # no voice: text only


def test_prompt_text_that_looks_like_a_control_token_stays_text(tokenizer):
    """A transcript quoting `<|eot_id|>` or an audio token must not end the prompt early or inject a code."""
    text = "Type <|eot_id|> then <custom_token_5> and <laugh> now."
    prompt = speech_prompt_ids(tokenizer, text, "tara")
    text_ids = prompt[2:-4]
    assert prompt[:2] == [layout.START_OF_HUMAN, layout.START_OF_TEXT]
    assert prompt[-4:] == layout.PROMPT_SUFFIX.tolist()
    assert max(text_ids) < layout.START_OF_TEXT  # no Llama-3 special, no Orpheus control or audio id
    assert tokenizer.decode(text_ids) == f"tara: {text}"  # `<laugh>` included, spelled as written


def test_constraint_allows_only_the_codebook_of_each_position():
    prompt_length = 5
    constraint = FrameConstraint(prompt_length, VOCAB_SIZE)
    for generated in range(3 * layout.TOKENS_PER_FRAME + 1):
        scores = torch.randn(2, VOCAB_SIZE)  # a batch of two rows, both constrained
        out = constraint(torch.zeros(2, prompt_length + generated, dtype=torch.long), scores)
        k = generated % layout.TOKENS_PER_FRAME
        expected = np.zeros(VOCAB_SIZE, dtype=bool)
        expected[layout.FRAME_OFFSETS[k] : layout.FRAME_OFFSETS[k] + layout.CODEBOOK_SIZE] = True
        expected[layout.END_OF_SPEECH] = k == 0 and generated > 0
        for row in range(2):
            np.testing.assert_array_equal(torch.isfinite(out[row]).numpy(), expected, err_msg=f"position {generated}")
        assert torch.equal(out[torch.isfinite(out)], scores[torch.isfinite(out)])  # allowed scores untouched


def test_random_model_speaks_only_well_formed_frames(model, tokenizer, caplog):
    """A random model picks any of 156940 ids; the constraint alone makes every token a code of its position."""
    with caplog.at_level(logging.WARNING, logger="axolotl_orpheus.listen.speak"):
        frames = generate_speech(model, tokenizer, "Hi there.", "tara", max_new_tokens=75)
    assert frames.shape == (10, 7)  # 75 rounds down to 10 whole frames; no end_of_speech from a random model
    assert ((frames >= layout.FRAME_OFFSETS) & (frames < layout.FRAME_OFFSETS + layout.CODEBOOK_SIZE)).all()
    assert "No end_of_speech within 70 new tokens" in caplog.text


def test_generation_stops_at_the_first_frame_boundary_it_may(standins, tokenizer):
    """A model that always prefers end_of_speech still speaks one whole frame, then stops."""
    stopper, _ = load_model(str(standins["model"]), "cpu")
    with torch.no_grad():
        # Tied embeddings: one large shared column dominates every hidden state, so the logits follow that
        # column, where end_of_speech gets twice everyone else's value.
        embeddings = stopper.get_input_embeddings().weight
        embeddings[:, 0] = 10.0
        embeddings[layout.END_OF_SPEECH, 0] = 20.0
        logits = stopper(torch.tensor([speech_prompt_ids(tokenizer, "Hi")])).logits[0, -1]
    assert logits.argmax() == layout.END_OF_SPEECH
    stopper.train()  # as a training callback would call it
    frames = generate_speech(stopper, tokenizer, "Hi", max_new_tokens=140)
    assert frames.shape == (1, 7)
    assert stopper.training


def test_speak_command_writes_a_24khz_wav(tmp_path, standins, capsys):
    out = tmp_path / "hello.wav"
    cli_main(
        ["speak", "--model", str(standins["model"]), "--voice", "tara", "--text", "Hello there.", "--out", str(out)]
        + tiny_settings(standins)
    )
    info = soundfile.info(out)
    assert info.samplerate == 24000 and 0 < info.frames <= 10 * 2048 and info.frames % 2048 == 0
    assert f"wrote {out} ({info.frames / 24000:.2f} s at 24 kHz)" in capsys.readouterr().out


def test_a_lora_adapter_folder_speaks(tmp_path, standins, tokenizer, model):
    """axolotl's `adapter: lora` output is a folder with adapter_config.json naming the base model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(standins["model"])
    # Random B (not zeros), so the adapter changes the model and applying it is observable.
    lora = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, lora).eval()
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(standins["model"])

    loaded, _ = load_model(str(adapter), "cpu")
    prompt = torch.tensor([speech_prompt_ids(tokenizer, "Hi", "tara")])
    with torch.no_grad():
        logits = loaded(prompt).logits
        torch.testing.assert_close(logits, peft_model(prompt).logits, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(logits, model(prompt).logits, atol=1e-3)

    out = tmp_path / "lora.wav"
    cli_main(["speak", "--model", str(adapter), "--text", "Hi.", "--out", str(out)] + tiny_settings(standins))
    info = soundfile.info(out)
    assert info.samplerate == 24000 and info.frames > 0 and info.frames % 2048 == 0


def test_split_sentences_cuts_long_text_at_sentence_ends_then_clauses():
    text = "The first sentence is here. Is this the second one? Yes!  A long one; it has clauses: three of them."
    assert split_sentences(text, max_chars=40) == [
        "The first sentence is here.",
        "Is this the second one? Yes!",
        "A long one; it has clauses:",
        "three of them.",
    ]
    assert split_sentences("Short. Two sentences.", max_chars=40) == ["Short. Two sentences."]
    assert split_sentences("one two three four", max_chars=9) == ["one two", "three", "four"]  # no punctuation
    assert split_sentences("  Short   text ") == ["Short text"]


def test_the_seed_alone_decides_the_audio(model, tokenizer, snac_model):
    """Reproducible whatever the caller's random state, which is left as it was (a training callback's RNG)."""
    text, settings = "First part. Second part.", {"max_chars": 12, "max_new_tokens": 70, "seed": 3}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        before = torch.get_rng_state()
        first = speak(model, tokenizer, snac_model, text, "tara", **settings)
        assert torch.equal(torch.get_rng_state(), before)
        torch.manual_seed(2)
        np.testing.assert_array_equal(speak(model, tokenizer, snac_model, text, "tara", **settings), first)
    assert first.dtype == np.float32 and (len(first) - int(0.1 * 24000)) % 2048 == 0  # two pieces, one pause
    frames = [generate_speech(model, tokenizer, "Hi.", max_new_tokens=70, seed=seed) for seed in (3, 4)]
    assert not np.array_equal(*frames)


def test_split_sentences_keeps_titles_initials_abbreviations_and_decimals_whole():
    text = (
        "Mr. Smith met Dr. Jones on Baker St. at noon. They spoke of J. R. R. Tolkien for 3.5 hours. "
        "Bring fruit, e.g. apples or pears. Bring bread, milk, eggs, cheese, etc. Then come home with all of it."
    )
    assert split_sentences(text, max_chars=50) == [
        "Mr. Smith met Dr. Jones on Baker St. at noon.",
        "They spoke of J. R. R. Tolkien for 3.5 hours.",
        "Bring fruit, e.g. apples or pears.",
        "Bring bread, milk, eggs, cheese, etc.",
        "Then come home with all of it.",
    ]
    # A quoted sentence end goes on when a lowercase word follows, and ends the sentence otherwise.
    assert split_sentences('"Why?" he asked. "Because." She left.', max_chars=16) == [
        '"Why?" he asked.',
        '"Because."',
        "She left.",
    ]


def test_split_sentences_cuts_chinese_and_japanese_at_their_punctuation():
    assert split_sentences("今天天气很好。我们去公园散步吧！你觉得怎么样？好的，我们走吧。", max_chars=20) == [
        "今天天气很好。",
        "我们去公园散步吧！",
        "你觉得怎么样？",
        "好的，我们走吧。",
    ]
    assert split_sentences("今日はいい天気ですね。公園に行きましょう！どう思いますか？", max_chars=40) == [
        "今日はいい天気ですね。",
        "公園に行きましょう！",
        "どう思いますか？",
    ]
    # Clauses and commas next: fullwidth ；：，and the ideographic comma 、.
    assert split_sentences("首先，准备材料；其次，开始工作：最后、检查结果。", max_chars=15) == [
        "首先，",
        "准备材料；",
        "其次，",
        "开始工作：",
        "最后、",
        "检查结果。",
    ]
    # Neighbouring pieces are joined as they were written, without a space.
    assert split_sentences("你好。你好。今天天气很好，我们去公园散步吧。", max_chars=24) == [
        "你好。你好。",
        "今天天气很好，",
        "我们去公园散步吧。",
    ]


def test_a_cjk_character_counts_for_several_latin_ones():
    """Chinese says in a few characters what takes many Latin letters: a budget Latin text fits, Chinese exceeds."""
    assert split_sentences("今天天气很好。我们去公园散步吧！", max_chars=40) == ["今天天气很好。", "我们去公园散步吧！"]
    assert split_sentences("今天天气很好。我们去公园散步吧！", max_chars=50) == ["今天天气很好。我们去公园散步吧！"]


def test_split_sentences_in_spanish_french_and_german():
    assert split_sentences("¿Qué hora es? Son las tres y media. ¡Qué tarde es ya!", max_chars=30) == [
        "¿Qué hora es?",
        "Son las tres y media.",
        "¡Qué tarde es ya!",
    ]
    # French spaces its guillemets: the closing » stays with the sentence it closes; M. (Monsieur) is no end.
    french = "M. Dupont m'a dit : « Je reviens demain. » Puis il est parti sans un mot."
    assert split_sentences(french, max_chars=45) == [
        "M. Dupont m'a dit : « Je reviens demain. »",
        "Puis il est parti sans un mot.",
    ]
    assert split_sentences("Dr. Müller kommt um 3.5 Uhr an. Das ist z. B. gut so. Wir warten hier.", max_chars=32) == [
        "Dr. Müller kommt um 3.5 Uhr an.",
        "Das ist z. B. gut so.",
        "Wir warten hier.",
    ]
