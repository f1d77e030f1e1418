"""Public specifications the cost model starts from: GPUs and model architectures.

Figures are vendors' specifications (the ``source`` of each entry); what a system achieves of them
(efficiencies, overheads) is in :class:`nous_ray.config.SimConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class GpuSpec:
    name: str
    hbm_gb: float  # memory per GPU, 1e9 bytes
    hbm_tb_s: float  # memory bandwidth, 1e12 bytes/s
    peak_tflops: float  # dense bf16, 1e12 FLOP/s
    instance: str  # the AWS instance type with 8 of them (cluster.yaml)
    # vLLM 0.32's default max_num_seqs for an offline engine on this GPU (EngineArgs: >= 160 GB -> 1024,
    # H100/H200 -> 1024, CPU -> 256).
    max_num_seqs: int = 1024
    source: str = ""


GPUS = {
    "h100": GpuSpec("h100", 80.0, 3.35, 989.0, "p5.48xlarge",
                    source="NVIDIA H100 SXM datasheet: 80 GB HBM3, 3.35 TB/s, 989 TFLOP/s dense bf16"),
    "h200": GpuSpec("h200", 141.0, 4.8, 989.0, "p5en.48xlarge",
                    source="NVIDIA H200 SXM datasheet: 141 GB HBM3e, 4.8 TB/s, 989 TFLOP/s dense bf16"),
    "b200": GpuSpec("b200", 180.0, 8.0, 2200.0, "p6-b200.48xlarge",
                    source="NVIDIA HGX B200 / AWS p6-b200: 8 x ~180 GB HBM3e, ~8 TB/s, ~2.2 PFLOP/s dense bf16"),
    # The CPU default's machine: no fixed figures; benchmarks/plan_validation.py measures and overrides them.
    "cpu": GpuSpec("cpu", 24.0, 0.02, 0.05, "-", max_num_seqs=256, source="placeholder; measured per machine"),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    params: float  # total parameters
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = False
    source: str = ""

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> float:
        """K and V of every layer for one token (the engine's KV cache)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    @property
    def embedding_params(self) -> float:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def attention_flops_per_token(self, seq_len: float) -> float:
        """Forward + backward attention FLOPs of one token in a sequence of ``seq_len`` tokens:
        12 * L * H * Q * T, the term PaLM (Chowdhery et al. 2022, app. B) and torchtitan add to 6N."""
        return 12.0 * self.layers * self.heads * self.head_dim * seq_len


MODELS = {
    "Qwen/Qwen3-14B": ModelSpec(
        "Qwen/Qwen3-14B", 14.8e9, 40, 5120, 40, 8, 128, 151936,
        source="Qwen3-14B config.json: 40 layers, hidden 5120, 40 q / 8 kv heads, head_dim 128, vocab 151936; "
               "14.8B parameters"),
}


def dtype_bytes(dtype: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2}.get(dtype, 2)


def gpu_spec(name: str, hbm_gb=None, hbm_tb_s=None, peak_tflops=None) -> GpuSpec:
    """The profile ``name`` with the given figures overridden (None keeps the profile's)."""
    if name not in GPUS:
        raise ValueError(f"key 'sim.gpu': unknown GPU {name!r}; known: {', '.join(GPUS)}")
    g = GPUS[name]
    over = {k: v for k, v in (("hbm_gb", hbm_gb), ("hbm_tb_s", hbm_tb_s), ("peak_tflops", peak_tflops))
            if v is not None}
    return replace(g, **over) if over else g


def _tiny_vocab() -> int:
    """The bundled tokenizer's size, rounded up to 64 as ``build_tiny_model_dir`` does."""
    import json

    from nous_ray.models.tiny import TOKENIZER_DIR

    tok = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())
    n = len(set(tok["model"]["vocab"].values()) | {t["id"] for t in tok.get("added_tokens", [])})
    return ((n + 63) // 64) * 64


def model_spec(model_cfg) -> ModelSpec:
    """The architecture of the model: the bundled tiny one from its config keys, or a known model by
    ``model.hub_id`` (or ``model.path`` when that is a hub name)."""
    m = model_cfg
    if m.path == "tiny":
        h, L, inter = m.tiny_hidden_size, m.tiny_layers, m.tiny_intermediate_size
        attn = h * m.tiny_heads * m.tiny_head_dim * 2 + h * m.tiny_kv_heads * m.tiny_head_dim * 2
        per_layer = attn + 3 * h * inter
        vocab = _tiny_vocab()
        emb = vocab * h * (1 if m.tie_word_embeddings else 2)
        return ModelSpec("tiny", L * per_layer + emb, L, h, m.tiny_heads, m.tiny_kv_heads, m.tiny_head_dim,
                         vocab, tied=m.tie_word_embeddings, source="configs/tiny.yaml")
    for name in (m.hub_id, m.path):  # the hub name says which model a local folder holds
        if name in MODELS:
            return MODELS[name]
    raise ValueError(f"keys 'model.hub_id' / 'model.path': no architecture known for {m.hub_id or m.path!r} in "
                     f"nous_ray/sim/specs.py (known: tiny, {', '.join(MODELS)}); add its ModelSpec there to plan it")
