"""Weight sync, object-store transport: seconds and GB/s per sync of a ~100M-parameter Qwen3.

A sync = pack the learner's state dict into buckets and ``ray.put`` each (``BucketPublisher``:
one reused staging buffer) + one ``update_weights`` call on a real rollout worker (vLLM engine,
in-place reload as the buckets are fetched, tied head re-packed, prefix cache reset). Baseline,
measured in the same run on the same bytes: ``ray.put`` of the buckets + ``ray.get`` of them in a
bare actor (the cost of moving the bytes alone). A third figure sends one object per parameter (no
bucketing) to the same worker, the pattern that makes today's syncs slow. The worker reports the
bucket bytes it held at once during a load (``peak_held``; two buckets at most).

``--learner``: the learner's side as well, a 2-rank FSDP2 group (gloo) of the same model publishing
its weights (``export_weight_buckets``: gather + put), the path every training step takes.
Timings are medians over ``--repeats`` syncs after one warm-up.

    .venv/bin/python benchmarks/weight_sync.py                  # ~96M parameters, float32
    .venv/bin/python benchmarks/weight_sync.py --bucket-mb 64 --repeats 5 --learner
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from asyncio import run
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
for k, v in {
    "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0", "VLLM_CACHE_ROOT": str(ROOT / ".cache" / "vllm"),
    "TORCHINDUCTOR_CACHE_DIR": str(ROOT / ".cache" / "inductor"),
}.items():
    os.environ.setdefault(k, v)


def build_model_dir(out: Path, hidden: int, layers: int, inter: int, vocab: int, tied: bool):
    """A Qwen3 of the given size with random weights, plus the tiny tokenizer, in ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    from nous_ray.models.tiny import load_tiny_tokenizer

    tok = load_tiny_tokenizer()
    cfg = Qwen3Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, head_dim=64,
        max_position_embeddings=2048, tie_word_embeddings=tied, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=None,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--intermediate", type=int, default=2048)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--bucket-mb", type=float, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-per-param", action="store_true")
    ap.add_argument("--learner", action="store_true", help="also time a 2-rank learner group's publish")
    args = ap.parse_args()

    import ray
    import torch

    from actors.rollout import RolloutWorker, rollout_actor_options
    from nous_ray.config import RolloutConfig
    from nous_ray.weight_sync.buckets import bucket_bytes_from_mb, pack_buckets
    from nous_ray.weight_sync.object_store import BucketPublisher

    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}})

    @ray.remote(num_cpus=0.5)
    class Sink:
        """The baseline receiver: fetches the buckets and does nothing else."""

        def take(self, refs):
            return sum(b.nbytes for b in ray.get(refs))

    tied = not args.untied
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
        model = build_model_dir(Path(tmp) / "model", args.hidden, args.layers, args.intermediate,
                                args.vocab, tied)
        n_params = sum(p.numel() for p in model.parameters())
        cfg = RolloutConfig(max_model_len=256, kv_cache_memory_bytes=64 * 2**20)
        worker = RolloutWorker.options(**rollout_actor_options(cfg)).remote(
            str(Path(tmp) / "model"), cfg, dtype="float32")
        ray.get(worker.ready.remote())
        sink = Sink.remote()

        def state():
            sd = model.state_dict()
            return [(k, v) for k, v in sd.items() if not (tied and k == "lm_head.weight")]

        nbytes = sum(v.numel() * v.element_size() for _, v in state())
        bucket_bytes = bucket_bytes_from_mb(args.bucket_mb)
        publisher = BucketPublisher(bucket_bytes)
        rows: dict[str, list[float]] = {k: [] for k in
                                        ("publish", "load", "sync", "baseline", "per_param", "learner")}
        held: list[int] = []
        learner = None
        if args.learner:
            from actors.learner import LearnerGroup
            from nous_ray.config import AlgoConfig, LearnerConfig

            learner = LearnerGroup(str(Path(tmp) / "model"), LearnerConfig(num_ranks=2, cpus_per_rank=0.5),
                                   AlgoConfig())
        version = 0
        for rep in range(args.repeats + 1):
            with torch.no_grad():  # a "training step", so every sync carries new values
                for p in model.parameters():
                    p.mul_(1.0001)
            t0 = time.perf_counter()
            refs = publisher.publish(state())
            t2 = time.perf_counter()
            version += 1
            out = ray.get(worker.update_weights.remote(version, refs))
            t3 = time.perf_counter()
            n_buckets = len(refs)
            if isinstance(out, dict) and "peak_held_bytes" in out:
                held.append(out["peak_held_bytes"])
                largest = out["largest_bucket_bytes"]
            del refs
            buckets = pack_buckets(state(), bucket_bytes)
            # Baseline: the same bytes, put and fetched by a bare actor.
            t4 = time.perf_counter()
            refs = [ray.put(b) for b in buckets]
            got = ray.get(sink.take.remote(refs))
            t5 = time.perf_counter()
            assert got == sum(b.nbytes for b in buckets)
            del refs, buckets
            per_param = float("nan")
            if not args.skip_per_param:
                # One object per parameter, each a one-tensor bucket: no bucketing.
                t6 = time.perf_counter()
                refs = [ray.put(pack_buckets([(k, v)], 1)[0]) for k, v in state()]
                version += 1
                ray.get(worker.update_weights.remote(version, refs))
                per_param = time.perf_counter() - t6
                del refs
            learner_s = float("nan")
            if learner is not None:
                t7 = time.perf_counter()
                refs = run(learner.export_weight_buckets(args.bucket_mb))
                learner_s = time.perf_counter() - t7
                del refs
            if rep == 0:
                continue  # warm-up
            for k, v in (("publish", t2 - t0), ("load", t3 - t2), ("sync", t3 - t0),
                         ("baseline", t5 - t4), ("per_param", per_param), ("learner", learner_s)):
                rows[k].append(v)

        med = {k: statistics.median(v) for k, v in rows.items()}
        gb = nbytes / 1e9
        result = {
            "params_M": round(n_params / 1e6, 1), "bytes_GB": round(gb, 3), "tied": tied,
            "bucket_mb": args.bucket_mb, "buckets": n_buckets,
            "sync_s": round(med["sync"], 3), "sync_GBps": round(gb / med["sync"], 3),
            "publish_s": round(med["publish"], 3), "load_s": round(med["load"], 3),
            "baseline_put_get_s": round(med["baseline"], 3), "baseline_GBps": round(gb / med["baseline"], 3),
            "sync_over_baseline": round(med["sync"] / med["baseline"], 2),
            "per_param_sync_s": round(med["per_param"], 3),
            "per_param_over_bucketed": round(med["per_param"] / med["sync"], 2),
            "repeats": args.repeats,
            "peak_held_MB": round(max(held) / 2**20, 1) if held else None,
            "peak_held_over_largest_bucket": round(max(held) / largest, 2) if held else None,
            "learner_publish_s": round(med["learner"], 3) if learner is not None else None,
        }
        print(f"{n_params / 1e6:.1f}M params, {gb:.3f} GB float32, buckets of {args.bucket_mb:g} MB "
              f"(median of {args.repeats})")
        print(f"  bucketed sync    {med['sync']:.3f} s  {gb / med['sync']:.2f} GB/s  "
              f"(pack+put {med['publish']:.3f} + load in the engine {med['load']:.3f})")
        print(f"  bare put + get   {med['baseline']:.3f} s  {gb / med['baseline']:.2f} GB/s")
        print(f"  ratio sync / bare put+get: {med['sync'] / med['baseline']:.2f}x")
        if not args.skip_per_param:
            print(f"  one object per parameter: {med['per_param']:.3f} s "
                  f"({med['per_param'] / med['sync']:.2f}x the bucketed sync)")
        if held:
            print(f"  worker held at most {max(held) / 2**20:.1f} MB of buckets at once = "
                  f"{max(held) / largest:.2f}x the largest bucket ({largest / 2**20:.1f} MB; a layer is never split); "
                  f"the version is {nbytes / 2**20:.0f} MB in {n_buckets} buckets")
        if learner is not None:
            print(f"  2-rank learner publish (gather + put) {med['learner']:.3f} s  {gb / med['learner']:.2f} GB/s")
            learner.shutdown()
        print(json.dumps(result))
        ray.kill(worker)
    ray.shutdown()


if __name__ == "__main__":
    main()
