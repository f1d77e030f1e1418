"""A Hugging Face folder of the learner's weights that vLLM and transformers load."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from torch import Tensor

__all__ = ["write_hf_folder", "WEIGHT_SUFFIXES"]

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".safetensors.index.json", ".bin.index.json")
SHARD_BYTES = 5 * 2**30  # transformers' default max_shard_size


def _copy_side_files(src: str, out: Path, config) -> None:
    if os.path.isdir(src):
        for f in Path(src).iterdir():
            if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES):
                shutil.copy2(f, out / f.name)
        return
    # A hub name: config and tokenizer come from the local cache (HF_HUB_OFFLINE) via transformers.
    from transformers import AutoTokenizer

    config.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)


def _shards(named: list[tuple[str, Tensor]], limit: int) -> list[list[tuple[str, Tensor]]]:
    shards: list[list[tuple[str, Tensor]]] = [[]]
    size = 0
    for name, t in named:
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > limit:
            shards.append([])
            size = 0
        shards[-1].append((name, t))
        size += n
    return shards


def write_hf_folder(named: Iterable[tuple[str, Tensor]], src: str, out_dir: str | Path, config) -> Path:
    """Write weights (safetensors, sharded past 5 GiB) plus ``src``'s config and tokenizer files.

    Atomic: written to ``<out_dir>.tmp`` and renamed, replacing an existing ``out_dir``.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _copy_side_files(src, tmp, config)
    shards = _shards(list(named), SHARD_BYTES)
    if len(shards) == 1:
        save_file(dict(shards[0]), tmp / "model.safetensors", metadata={"format": "pt"})
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(dict(shard), tmp / fname, metadata={"format": "pt"})
            for name, t in shard:
                weight_map[name] = fname
                total += t.numel() * t.element_size()
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    if out.exists():
        old = out.with_name(out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    return out
