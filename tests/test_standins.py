"""The offline stand-ins (axolotl_orpheus.cli.standins), as the session's fixture built them (tests/conftest.py)."""

import json
import time
from pathlib import Path

import snac
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from axolotl_orpheus.cli.standins import build_snac, build_standins


def test_tokenizer_has_orpheus_layout(standins: dict[str, Path]) -> None:
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(standins["tokenizer"])
    # Guards against the slow path (transformers re-adding 28683 tokens one by one).
    assert time.perf_counter() - start < 30

    assert tok("tara: Hello").input_ids == [128000, 83, 5169, 25, 22691]
    assert tok("tara: Hello", add_special_tokens=False).input_ids == [83, 5169, 25, 22691]
    assert tok.convert_tokens_to_ids("<custom_token_7>") == 128263
    assert tok.convert_tokens_to_ids("<custom_token_28682>") == 156938
    assert len(tok) == 156939
    assert (tok.bos_token, tok.bos_token_id) == ("<|begin_of_text|>", 128000)
    assert (tok.eos_token, tok.eos_token_id) == ("<|eot_id|>", 128009)
    assert tok.convert_ids_to_tokens([128001, 128004, 128006, 128007, 128255]) == [
        "<|end_of_text|>",
        "<|finetune_right_pad_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|reserved_special_token_245|>",
    ]


def test_snac_loads_and_encodes(standins: dict[str, Path]) -> None:
    folder = standins["snac"]
    model = snac.SNAC(**json.loads((folder / "config.json").read_text()))
    model.load_state_dict(torch.load(folder / "pytorch_model.bin", weights_only=True))
    model.eval()
    with torch.inference_mode():
        codes = model.encode(torch.randn(1, 1, 4096))
    assert [c.shape[-1] for c in codes] == [2, 4, 8]
    assert all(0 <= int(c.min()) and int(c.max()) < 4096 for c in codes)


def test_snac_build_is_deterministic(standins: dict[str, Path], tmp_path: Path) -> None:
    weights = build_snac(tmp_path / "snac") / "pytorch_model.bin"
    assert weights.read_bytes() == (standins["snac"] / "pytorch_model.bin").read_bytes()


def test_llama_loads_with_tied_orpheus_vocab(standins: dict[str, Path]) -> None:
    model = LlamaForCausalLM.from_pretrained(standins["model"])
    assert model.config.vocab_size == 156940
    assert model.dtype == torch.float32
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    # The model folder doubles as axolotl's base_model, so it carries the tokenizer.
    assert len(AutoTokenizer.from_pretrained(standins["model"])) == 156939


def test_build_is_cached(standins: dict[str, Path]) -> None:
    root = standins["model"].parent
    marker = root / ".complete"
    before = marker.stat().st_mtime_ns
    assert build_standins(root) == standins
    assert marker.stat().st_mtime_ns == before
