"""Small offline stand-ins for the models the Orpheus recipe uses.

The real models are canopylabs/orpheus-3b-0.1-pretrained (a Llama-3.2-3B with
the Orpheus audio tokens) and hubertsiuzdak/snac_24khz (the SNAC codec whose
codes those tokens carry). The tests and the CPU demo must run without a model
hub and in seconds, so this module builds local folders with the same layout:

* a tokenizer with the exact Orpheus id layout (Llama-3 BPE, Llama-3 special
  tokens, then ``<custom_token_N>`` at 128256 + N), so the ids the code computes
  are the ids the real model would see;
* a SNAC 24 kHz codec with the real architecture and random weights, so the
  code shapes and frame rates are real even though the audio is noise;
* a tiny Llama with the Orpheus vocabulary, usable as ``base_model:`` in an
  axolotl config;
* a tiny Whisper (with its processor: a byte-level tokenizer holding Whisper's
  special, language and timestamp tokens) and a tiny WavLM x-vector speaker
  model (with its feature extractor), in place of openai/whisper-large-v3-turbo
  and microsoft/wavlm-base-plus-sv for the scoring and segmenting code. Their
  transcripts and embeddings are noise; they keep the real loading and calling
  paths.

Everything is built from packages already installed (the Llama-3 BPE ships
inside ``llama_models``) and is seeded, so every build gives the same weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
import snac
import torch
from llama_models.llama3.tokenizer import Tokenizer as Llama3Tokenizer
from tokenizers import AddedToken, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from axolotl_orpheus.reproducible import seeded

# Bump whenever what the builders write changes, so old caches get rebuilt.
STANDINS_VERSION = "orpheus-standins-3"

BOS_TOKEN = "<|begin_of_text|>"
BOS_ID = 128000
EOS_TOKEN = "<|eot_id|>"
EOS_ID = 128009
FIRST_CUSTOM_ID = 128256
# Orpheus appends 10 control tokens, 7 SNAC positions x 4096 codes and one
# spare after Llama-3's 128256 ids: 28683 tokens, the last at id 156938.
NUM_CUSTOM_TOKENS = 7 * 4096 + 10 + 1
# The real checkpoint's embedding has one row more than the tokenizer has ids.
VOCAB_SIZE = 156940

SNAC_24KHZ_CONFIG: dict[str, object] = {
    "sampling_rate": 24000,
    "encoder_dim": 48,
    "encoder_rates": [2, 4, 8, 8],
    "decoder_dim": 1024,
    "decoder_rates": [8, 8, 4, 2],
    "attn_window_size": None,
    "codebook_size": 4096,
    "codebook_dim": 8,
    "vq_strides": [4, 2, 1],
    "noise": True,
    "depthwise": True,
}

_MARKER = ".complete"


def build_tokenizer(out_dir: Path) -> Path:
    """Write a fast tokenizer with the Orpheus id layout to ``out_dir``."""
    out_dir = Path(out_dir)
    with resources.as_file(resources.files("llama_models.llama3") / "tokenizer.model") as bpe_path:
        # llama_models defines Llama-3's special tokens and regex; take them from
        # it rather than copying a list that could drift from the BPE file.
        special_ids = Llama3Tokenizer(bpe_path).special_tokens
        specials = sorted(special_ids, key=special_ids.__getitem__)
        backend = TikTokenConverter(
            vocab_file=str(bpe_path),
            pattern=Llama3Tokenizer.pat_str,
            extra_special_tokens=specials,
        ).converted()
    assert all(backend.token_to_id(name) == special_ids[name] for name in specials)
    assert backend.token_to_id(BOS_TOKEN) == BOS_ID and backend.token_to_id(EOS_TOKEN) == EOS_ID

    # As in Llama-3's tokenizer.json: BOS comes from the post-processor, so it is
    # added exactly when add_special_tokens=True.
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS_TOKEN} $A",
                pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B:1",
                special_tokens=[(BOS_TOKEN, BOS_ID)],
            ),
        ]
    )

    # Added to the tokenizers object so they live only in tokenizer.json; added
    # through transformers they would also be listed one by one in
    # tokenizer_config.json, which every load would then read and add again.
    custom = [AddedToken(f"<custom_token_{n}>", special=True, normalized=False) for n in range(NUM_CUSTOM_TOKENS)]
    assert backend.add_special_tokens(custom) == NUM_CUSTOM_TOKENS
    assert backend.token_to_id("<custom_token_0>") == FIRST_CUSTOM_ID
    last = NUM_CUSTOM_TOKENS - 1
    assert backend.token_to_id(f"<custom_token_{last}>") == FIRST_CUSTOM_ID + last

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@torch.inference_mode()
def _calibrate_quantizers(model: snac.SNAC, audio: torch.Tensor) -> None:
    """Make a random SNAC's codes follow the audio, as a trained one's do.

    With random weights the encoder's latents all point one way, so a clip of seconds gets a handful of distinct
    coarse codes: duplicate-frame removal then drops nearly every frame and hides layout bugs. Centring
    each level's projection on real speech and drawing its codebook from those projected latents gives
    varied codes that change with the audio.
    """
    generator = torch.Generator().manual_seed(0)
    residual = model.encoder(model.preprocess(audio))
    for quantizer in model.quantizer.quantizers:
        pooled = torch.nn.functional.avg_pool1d(residual, quantizer.stride, quantizer.stride)
        projected = quantizer.in_proj(pooled)
        quantizer.in_proj.bias -= projected.mean(dim=(0, 2))
        latents = quantizer.in_proj(pooled).transpose(1, 2).reshape(-1, quantizer.codebook_dim)
        picks = torch.randint(len(latents), (quantizer.codebook_size,), generator=generator)
        jitter = 0.1 * latents.std() * torch.randn(quantizer.codebook_size, quantizer.codebook_dim, generator=generator)
        quantizer.codebook.weight.copy_(latents[picks] + jitter)
        residual = residual - quantizer(residual)[0]


def build_snac(out_dir: Path) -> Path:
    """Write a SNAC 24 kHz codec with random weights, calibrated on the bundled clips, in the hub layout."""
    from axolotl_orpheus.audio import load_clip

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clips = sorted((resources.files("axolotl_orpheus") / "data" / "clips").glob("*.wav"))
    speech = torch.from_numpy(np.concatenate([load_clip(str(clip)) for clip in clips]))[None, None]
    with seeded(0):
        model = snac.SNAC(**SNAC_24KHZ_CONFIG).eval()
    _calibrate_quantizers(model, speech)
    (out_dir / "config.json").write_text(json.dumps(SNAC_24KHZ_CONFIG, indent=2) + "\n")
    torch.save(model.state_dict(), out_dir / "pytorch_model.bin")
    return out_dir


def build_llama(out_dir: Path, tokenizer_dir: Path) -> Path:
    """Write a tiny Llama with the Orpheus vocabulary plus its tokenizer."""
    out_dir = Path(out_dir)
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    with seeded(0):
        model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out_dir)
    # axolotl loads the tokenizer from base_model unless told otherwise.
    for path in Path(tokenizer_dir).iterdir():
        if path.is_file():
            shutil.copy2(path, out_dir / path.name)
    return out_dir


def build_whisper(out_dir: Path) -> Path:
    """Write a tiny random Whisper and its processor, loadable as `openai/whisper-*` is: by folder or hub id.

    The vocabulary is the 256 byte-level symbols, then Whisper's special tokens in Whisper's order (end of text,
    start of transcript, the languages, the tasks, ..., no timestamps) and its 1501 timestamps, so language
    detection, forced language and word timestamps run the real code.
    """
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    out_dir = Path(out_dir)
    languages = [f"<|{code}|>" for code in LANGUAGES]
    specials = [
        "<|startoftranscript|>",
        *languages,
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    tokenizer = WhisperTokenizer(vocab={symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}, merges=[])
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    # Not special: Whisper reads the first id after the last special one as timestamp 0.00.
    tokenizer.add_tokens([AddedToken(f"<|{i * 0.02:.2f}|>", normalized=False) for i in range(1501)])
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ["<|endoftext|>", *specials]}
    end = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_target_positions=448,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    with seeded(0):
        model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=end,
        eos_token_id=end,
        pad_token_id=end,
        is_multilingual=True,
        lang_to_id={token: ids[token] for token in languages},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50,
        begin_suppress_tokens=[end],
        suppress_tokens=[],
        # Whisper allows 448 tokens; a random model says noise until the limit, so the stand-in stops sooner.
        alignment_heads=[[1, 0], [1, 1]],
        max_length=48,
    )
    model.save_pretrained(out_dir)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(
        out_dir
    )
    return out_dir


def build_speaker_encoder(out_dir: Path) -> Path:
    """Write a tiny random WavLM x-vector model and its feature extractor, laid out as microsoft/wavlm-base-plus-sv."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    out_dir = Path(out_dir)
    config = WavLMConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        tdnn_dim=(32, 32, 32, 32, 64),
        xvector_output_dim=32,
        num_buckets=32,
        max_bucket_distance=100,
    )
    with seeded(0):
        model = WavLMForXVector(config)
    model.save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True).save_pretrained(
        out_dir
    )
    return out_dir


def _is_complete(root: Path) -> bool:
    marker = root / _MARKER
    return marker.is_file() and marker.read_text() == STANDINS_VERSION


def build_standins(root: Path) -> dict[str, Path]:
    """Build (or reuse) the tokenizer, SNAC, tiny Llama, Whisper and speaker model under ``root``."""
    root = Path(root)
    paths = {
        "tokenizer": root / "tokenizer",
        "snac": root / "snac_24khz",
        "model": root / "orpheus-tiny",
        "asr": root / "whisper-tiny",
        "speaker": root / "wavlm-xvector-tiny",
    }
    if _is_complete(root):
        return paths

    # Build beside root and rename into place, so root is either absent, stale
    # or complete: a crash mid-build never leaves a cache that looks usable.
    root.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    # A plain subfolder, because mkdtemp's own folder is private (mode 0700).
    staging = scratch / root.name
    try:
        build_tokenizer(staging / "tokenizer")
        build_snac(staging / "snac_24khz")
        build_llama(staging / "orpheus-tiny", staging / "tokenizer")
        build_whisper(staging / "whisper-tiny")
        build_speaker_encoder(staging / "wavlm-xvector-tiny")
        (staging / _MARKER).write_text(STANDINS_VERSION)
        if root.exists():
            shutil.rmtree(root)  # a cache an older version left
        try:
            staging.rename(root)
        except OSError:
            # Another process may have finished the same build first.
            if not _is_complete(root):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return paths
