"""As fast as the bare libraries? The rollout worker against bare vLLM, the learner against bare torch.

Both sides run the same work on the tiny default model in one run, interleaved (bare, ours, bare,
ours, ...), and each figure is the median over ``--repeats``:

- rollout: ``--prompts`` prompts x ``--samples`` samples x ``--tokens`` tokens (every response
  forced to that length). Bare = ``vllm.LLM.generate`` in this process; ours = the rollout worker
  (Ray actor, in-process vLLM engine) called through ``RolloutPool`` exactly as the driver calls it.
  Both engines run with one OpenMP thread (as the default run's worker does). Figure: tokens/s.
- learner: one RL batch of 128 sequences (the default run's prompts, responses of 20-64 tokens,
  ~12k tokens), DAPO, ``learner.minibatches`` optimizer steps. Bare = a plain transformers model in
  this process with as many torch threads as the learner group has in total: each minibatch padded
  to its longest sequence, one forward, the same loss, backward, clip, AdamW. Ours = the learner
  group of the default run (configs/tiny.yaml: FSDP2 ranks over gloo, one thread each) through
  ``AsyncLearner.train_step``. Figure: seconds per batch.

The last line is ``overhead: rollout/bare X, learner/bare Y`` (speed ratios, 1.0 = as fast as bare;
goal X >= 0.95, Y >= 0.9).

    .venv/bin/python benchmarks/overhead.py [--repeats 3] [--only rollout|learner] [key=value ...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from nous_ray.env import apply_stack_env, start_ray  # noqa: E402

apply_stack_env()
os.environ["OMP_NUM_THREADS"] = "1"  # the rollout worker's setting; the bare learner sets its own below


def bench_rollout(cfg, model_path: str, placement, args) -> tuple[float, float]:
    """Tokens/s of bare ``vllm.LLM`` and of the rollout worker on the same requests."""
    from vllm import LLM

    from actors.pools import make_rollout_pool
    from launch.train import prepare_inputs
    from nous_ray.rollout.engine import engine_kwargs
    from nous_ray.rollout.sampling import make_sampling_params

    problems, prompt_ids, _ = prepare_inputs(cfg, model_path)
    prompts = [prompt_ids[i % len(prompt_ids)] for i in range(args.prompts)]
    s = cfg.rollout.sampling
    sampling = {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k,
                "min_tokens": args.tokens, "max_tokens": args.tokens}
    r = cfg.rollout
    # Bare vLLM with the same model, memory and sampling, and nothing else set: its own defaults.
    bare = LLM(model=model_path, dtype=cfg.model.dtype, seed=cfg.model.seed, max_model_len=r.max_model_len,
               enforce_eager=r.enforce_eager, kv_cache_memory_bytes=r.kv_cache_memory_bytes,
               logprobs_mode=engine_kwargs(model_path, r, cpu=True)["logprobs_mode"])
    params = make_sampling_params(sampling, args.samples)
    pool = make_rollout_pool(cfg, model_path, placement)
    requests = [{"group_id": i, "problem_id": problems[i % len(problems)].id, "prompt_ids": p}
                for i, p in enumerate(prompts)]

    def run_bare():
        from vllm.inputs import TokensPrompt

        outs = bare.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs)

    async def per_group():
        # As the driver calls it: one call per group, all in flight at once (the engine batches them).
        groups = await asyncio.gather(*(pool.generate(0, [q], args.samples, sampling, args.tokens) for q in requests))
        return [s for g in groups for s in g]

    def run_ours():
        samples = asyncio.run(per_group())
        return sum(len(x.response_ids) for x in samples)

    run_bare()  # warm-up: kernels compile on the first generation
    run_ours()
    rates_bare, rates_ours = [], []
    for k in range(args.repeats):
        for fn, acc in ((run_bare, rates_bare), (run_ours, rates_ours)):
            t0 = time.perf_counter()
            n = fn()
            acc.append(n / (time.perf_counter() - t0))
        print(f"  rollout repeat {k + 1}: bare {rates_bare[-1]:.0f} tok/s, ours {rates_ours[-1]:.0f} tok/s",
              file=sys.stderr)
    pool.shutdown()
    b, o = statistics.median(rates_bare), statistics.median(rates_ours)
    print(f"rollout: {args.prompts} prompts x {args.samples} samples x {args.tokens} tokens; bare vllm.LLM "
          f"{b:.0f} tok/s; rollout worker through RolloutPool {o:.0f} tok/s")
    return b, o


def learner_batch(cfg, model_path: str, n: int = 128, seed: int = 0):
    """``n`` samples on the default run's prompts with random responses, behaviour log-probs, advantages."""
    from launch.train import prepare_inputs
    from nous_ray.samples import Sample

    problems, prompt_ids, _ = prepare_inputs(cfg, model_path)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = i // cfg.rollout.group_size % len(problems)
        resp = [rng.randrange(3, 400) for _ in range(rng.randint(20, 64))]
        out.append(Sample(problem_id=problems[k].id, group_id=i // cfg.rollout.group_size, prompt_ids=prompt_ids[k],
                          response_ids=resp, logprobs=[-rng.uniform(4.0, 8.0) for _ in resp], finish_reason="stop",
                          version=0, advantage=rng.choice([-1.0, 1.0])))
    return out


class BareLearner:
    """The same model, loss and optimizer in plain torch: padded minibatches, no FSDP, no Ray."""

    def __init__(self, cfg, model_path: str, threads: int):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.cfg = cfg
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
        self.model.train()
        o = cfg.learner.optim
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)

    def train_step(self, samples, temperature: float = 1.0) -> None:
        import torch

        from nous_ray.algo import policy_loss
        from nous_ray.train.packing import split_minibatches

        for mb in split_minibatches(len(samples), self.cfg.learner.minibatches):
            ss = [samples[i] for i in mb]
            T = max(s.num_tokens for s in ss)
            L = max(len(s.response_ids) for s in ss)
            ids = torch.zeros(len(ss), T, dtype=torch.long)
            attn = torch.zeros(len(ss), T, dtype=torch.long)
            beh = torch.zeros(len(ss), L)
            mask = torch.zeros(len(ss), L, dtype=torch.bool)
            tgt = torch.zeros(len(ss), L, dtype=torch.long)
            for b, s in enumerate(ss):
                seq = s.prompt_ids + s.response_ids
                ids[b, :len(seq)] = torch.tensor(seq)
                attn[b, :len(seq)] = 1
                n = len(s.response_ids)
                tgt[b, :n] = torch.tensor(s.response_ids)
                beh[b, :n] = torch.tensor(s.logprobs)
                mask[b, :n] = True
            logits = self.model(input_ids=ids, attention_mask=attn, use_cache=False).logits
            # Response token k of sample b is predicted at position P_b - 1 + k.
            pos = torch.stack([torch.arange(L) + len(s.prompt_ids) - 1 for s in ss]).clamp(max=T - 1)
            picked = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1])) / temperature
            lp = picked.log_softmax(-1).gather(2, tgt[..., None]).squeeze(-1) * mask
            adv = torch.tensor([s.advantage for s in ss])
            n_tok = int(mask.sum())
            loss, _ = policy_loss("dapo", lp, beh, adv, mask, num_tokens=n_tok,
                                  num_sequences=len(ss))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.learner.optim.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)


def bench_learner(cfg, model_path: str, placement, repeats: int) -> tuple[float, float]:
    from actors.pools import make_learner_group

    samples = learner_batch(cfg, model_path)
    threads = cfg.learner.num_ranks * max(1, int(cfg.learner.cpus_per_rank))
    bare = BareLearner(cfg, model_path, threads)
    ours = make_learner_group(cfg, model_path, placement)
    run_ours = lambda: asyncio.run(ours.train_step(samples, cfg.rollout.sampling.temperature))  # noqa: E731
    run_bare = lambda: bare.train_step(samples, cfg.rollout.sampling.temperature)  # noqa: E731
    run_ours()  # warm-up: first-call allocations, gloo connections
    run_bare()
    t_bare, t_ours = [], []
    for r in range(repeats):
        for fn, acc in ((run_bare, t_bare), (run_ours, t_ours)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
        print(f"  learner repeat {r + 1}: bare {t_bare[-1]:.3f} s, ours {t_ours[-1]:.3f} s", file=sys.stderr)
    ours.shutdown()
    tokens = sum(s.num_tokens for s in samples)
    b, o = statistics.median(t_bare), statistics.median(t_ours)
    print(f"learner: {len(samples)} sequences, {tokens} tokens, {cfg.learner.minibatches} minibatches; bare torch "
          f"({threads} threads, padded) {b:.3f} s; learner group ({cfg.learner.num_ranks} ranks x "
          f"{max(1, int(cfg.learner.cpus_per_rank))} thread, {cfg.learner.attn_implementation}, "
          f"micro_batch_tokens {cfg.learner.micro_batch_tokens}) {o:.3f} s")
    return b, o


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["rollout", "learner"], default=None)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("overrides", nargs="*", help="config key=value (the default run's config otherwise)")
    args = ap.parse_args()

    from actors.placement import Placement
    from nous_ray.config import load_config
    from nous_ray.models.tiny import resolve_model_path

    cfg = load_config(None, args.overrides)
    tmp = Path(tempfile.mkdtemp(prefix="nous-overhead-"))
    model_path = resolve_model_path(cfg.model, tmp)
    ray = start_ray(dashboard=False)
    placement = Placement(cfg)
    x = y = float("nan")
    try:
        if args.only in (None, "rollout"):
            b, o = bench_rollout(cfg, model_path, placement, args)
            x = o / b
        if args.only in (None, "learner"):
            b, o = bench_learner(cfg, model_path, placement, args.repeats)
            y = b / o
    finally:
        placement.remove()
        ray.shutdown()
    print(f"overhead: rollout/bare {x:.3f}, learner/bare {y:.3f}")


if __name__ == "__main__":
    main()
