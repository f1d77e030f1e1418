"""The tiny default model: a Qwen3-architecture causal LM with random weights, built from a config.

Nothing can be downloaded here, so the CPU default builds its model instead: a byte-level BPE
tokenizer shipped in ``nous_ray/assets/tiny_tokenizer`` (trained on the toy problems by
:func:`train_tiny_tokenizer`) and random weights from ``ModelConfig``. :func:`build_tiny_model_dir`
writes an ordinary Hugging Face folder, so the learners (transformers) and the rollout engines (vLLM)
load it exactly as they would load Qwen3-14B.
"""

from __future__ import annotations

import json
from pathlib import Path

from nous_ray.config import ModelConfig

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TOKENIZER_DIR = ASSETS / "tiny_tokenizer"
TOY_PROBLEMS = ASSETS / "toy_problems.jsonl"

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen's chat markup, without the system/tool/thinking machinery the tiny model never sees.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _toy_corpus() -> list[str]:
    texts = []
    for line in TOY_PROBLEMS.read_text().splitlines():
        p = json.loads(line)
        texts.append(p["prompt"])
        for sol in p["solutions"]:
            texts.append(f"```python\n{sol}```")
        for t in p["tests"]:
            texts.append(t["input"] + t["output"])
    return texts


def train_tiny_tokenizer(out_dir: Path = TOKENIZER_DIR, vocab_size: int = 400):
    """Train the byte-level BPE on the toy problems and save it as a transformers tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_toy_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def load_tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


def tiny_qwen3_config(cfg: ModelConfig, vocab_size: int, eos_token_id: int, pad_token_id: int):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=cfg.tiny_hidden_size,
        intermediate_size=cfg.tiny_intermediate_size,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=cfg.tiny_heads,
        num_key_value_heads=cfg.tiny_kv_heads,
        head_dim=cfg.tiny_head_dim,
        max_position_embeddings=4096,
        tie_word_embeddings=cfg.tie_word_embeddings,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
        torch_dtype=cfg.dtype,
    )


def build_tiny_model_dir(cfg: ModelConfig, out_dir: str | Path) -> Path:
    """Write config, random weights (seeded) and tokenizer to ``out_dir``; reuse it if complete."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    tok = load_tiny_tokenizer()
    # Round the vocabulary up so vLLM's and the learner's embedding shapes are friendly.
    vocab = ((len(tok) + 63) // 64) * 64
    hf_cfg = tiny_qwen3_config(cfg, vocab, tok.eos_token_id, tok.pad_token_id)
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(hf_cfg, dtype=getattr(torch, cfg.dtype))
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    gen = {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    (tmp / "generation_config.json").write_text(json.dumps(gen))
    tmp.rename(out)  # whole folder or nothing: a crash mid-write leaves no half model behind
    return out


def tokenizer_path(cfg: ModelConfig) -> str:
    """Where this config's tokenizer loads from, without building the tiny model's weights."""
    return str(TOKENIZER_DIR) if cfg.path == "tiny" else cfg.path


def resolve_model_path(cfg: ModelConfig, run_dir: str | Path) -> str:
    """The folder or hub name the learners and rollout engines load for this config."""
    if cfg.path == "tiny":
        return str(build_tiny_model_dir(cfg, Path(run_dir) / "tiny_model"))
    return cfg.path


if __name__ == "__main__":  # regenerate the shipped tokenizer: python -m nous_ray.models.tiny
    t = train_tiny_tokenizer()
    print(f"tokenizer with {len(t)} tokens written to {TOKENIZER_DIR}")
