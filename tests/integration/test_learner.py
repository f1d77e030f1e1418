"""Learner ranks as Ray actors (2 ranks, FSDP2 over gloo) against independent references.

One local Ray cluster and one learner group per module. The reference is a plain single-process
transformers model trained with the same pure functions (``nous_ray.algo``) on the whole minibatch
at once, one sequence per forward: no packing, no sharding, no micro-batches, no ranks.
"""

import asyncio
import math
import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ray = pytest.importorskip("ray")

from actors.learner import Learner  # noqa: E402
from nous_ray.algo import DEFAULT_CLIP, token_logprobs  # noqa: E402
from nous_ray.config import AlgoConfig, LearnerConfig, ModelConfig, OptimConfig  # noqa: E402
from nous_ray.models.tiny import build_tiny_model_dir  # noqa: E402
from nous_ray.samples import Sample  # noqa: E402

pytestmark = pytest.mark.slow

run = asyncio.run  # the learner's calls are coroutines
OPTIM = OptimConfig(lr=1e-3, warmup_steps=2, grad_clip=1.0, weight_decay=0.01, betas=[0.9, 0.99])


def learner_cfg(**kw):
    base = dict(num_ranks=2, cpus_per_rank=0.25, backend="gloo", optim=OPTIM, minibatches=2,
                micro_batch_tokens=32, logprob_chunk_size=16)
    base.update(kw)
    return LearnerConfig(**base)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model_dir(ModelConfig(), tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def group(ray_cluster, model_dir):
    g = Learner(model_dir, learner_cfg(), AlgoConfig(loss="dapo"))
    yield g
    g.shutdown()


def hf_model(path_or_weights, model_dir, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model_dir if isinstance(path_or_weights, dict) else path_or_weights,
                                              dtype=dtype, attn_implementation="sdpa")
    if isinstance(path_or_weights, dict):
        missing, unexpected = lm.load_state_dict({k: v.to(dtype) for k, v in path_or_weights.items()}, strict=False)
        assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
        lm.tie_weights()
    return lm


def seq_logprobs(lm, s):
    """One sequence alone; log-probs of its response tokens via the chunked pure function."""
    ids = torch.tensor([s.prompt_ids + s.response_ids])
    h = lm.model(input_ids=ids, use_cache=False).last_hidden_state[0]
    P, R = len(s.prompt_ids), len(s.response_ids)
    return token_logprobs(h[P - 1 : P - 1 + R], lm.lm_head.weight, torch.tensor(s.response_ids), chunk_size=5)


def make_batch(lm, n, seed, noise=0.3):
    """Random prompts/responses; behaviour log-probs = the model's own plus noise, so ratios are
    near 1 and some tokens clip."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p = [rng.randrange(400) for _ in range(rng.randint(1, 10))]
        r = [rng.randrange(400) for _ in range(rng.randint(1, 20))]
        s = Sample(f"p{i // 4}", i // 4, p, r, [], "stop", 0, advantage=rng.uniform(-1.5, 1.5))
        with torch.no_grad():
            lp = seq_logprobs(lm, s)
        s.logprobs = [float(x) + rng.uniform(-noise, noise) for x in lp]
        out.append(s)
    return out


def pad(rows, L):
    return torch.stack([torch.nn.functional.pad(r, (0, L - r.shape[0])) for r in rows])


def reference_loss(name, lps, olds, behs, advs, algo):
    """The objective as a per-token loop over torch scalars (so gradients flow), independent of
    ``nous_ray.algo.losses``. ``olds``: the old policy (the engine's log-probs ``behs`` in the coupled
    form, pi_prox in the decoupled form, ``algo.tis_cap > 0``). Returns (loss, clipped units, units)."""
    cl, ch = DEFAULT_CLIP[name]
    c, L, cap = algo.clip_ratio_c, algo.log_ratio_clamp, algo.tis_cap
    n_tok, n_seq = sum(len(x) for x in lps), len(lps)
    total, clipped, units = 0.0, 0, 0

    def surrogate(x, a):
        ppo = torch.maximum(-x * a, -x.clamp(1 - cl, 1 + ch) * a)
        if c is not None and a < 0:
            ppo = torch.minimum(ppo, torch.tensor(-c * a, dtype=ppo.dtype))
        return ppo, bool((a > 0 and x > 1 + ch) or (a < 0 and x < 1 - cl))

    for lp, old, beh, a in zip(lps, olds, behs, advs):
        dl = [(lp[t] - float(old[t])).clamp(-L, L) for t in range(len(lp))]
        bl = [min(max(float(old[t]) - float(beh[t]), -L), L) for t in range(len(lp))]
        if name == "dapo":
            for t in range(len(lp)):
                w = min(math.exp(bl[t]), cap) if cap > 0 else 1.0
                val, cut = surrogate(torch.exp(dl[t]), a)
                total = total + w * val / n_tok
                clipped, units = clipped + cut, units + 1
        else:
            n = len(lp)
            w = min(math.exp(sum(bl) / n), cap) if cap > 0 else 1.0
            val, cut = surrogate(torch.exp(sum(dl) / n), a)
            total = total + w * val * (1 / n_seq if name == "gspo" else n / n_tok)
            clipped, units = clipped + cut, units + 1
    return total, clipped, units


def reference_train_step(lm, samples, algo, minibatches, optim_cfg, policy_version=0):
    """Full-minibatch loss, one plain AdamW step per minibatch.

    Returns (losses, grad norms, (clipped, units) over staleness-0 samples)."""
    opt = torch.optim.AdamW(lm.parameters(), lr=optim_cfg.lr, betas=tuple(optim_cfg.betas),
                            weight_decay=optim_cfg.weight_decay)
    n = len(samples)
    size = n // minibatches
    behs = [torch.tensor(s.logprobs, dtype=torch.float64) for s in samples]
    olds = behs
    if algo.tis_cap > 0:  # pi_prox: every sample under the weights before the first step
        with torch.no_grad():
            olds = [seq_logprobs(lm, s) for s in samples]
    losses, norms, fresh = [], [], [0, 0]
    for k in range(minibatches):
        idx = list(range(k * size, (k + 1) * size))
        lps = [seq_logprobs(lm, samples[i]) for i in idx]
        loss, _, _ = reference_loss(algo.loss, lps, [olds[i] for i in idx], [behs[i] for i in idx],
                                    [samples[i].advantage for i in idx], algo)
        for i, lp in zip(idx, lps):
            if samples[i].version == policy_version:
                _, cut, units = reference_loss(algo.loss, [lp.detach()], [olds[i]], [behs[i]],
                                               [samples[i].advantage], algo)
                fresh[0], fresh[1] = fresh[0] + cut, fresh[1] + units
        opt.zero_grad()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(lm.parameters(), optim_cfg.grad_clip)))
        for g in opt.param_groups:  # linear warm-up, by hand
            g["lr"] = optim_cfg.lr * min(1.0, (k + 1) / optim_cfg.warmup_steps)
        opt.step()
        losses.append(float(loss.detach()))
    return losses, norms, fresh


def assert_same_weights(got, ref_lm, tol):
    ref = {k: v for k, v in ref_lm.state_dict().items()}
    assert set(got) == set(ref) - {"lm_head.weight"}
    worst = max(float((got[k].double() - ref[k].double()).abs().max()) for k in got)
    assert worst < tol, worst


def run_against_reference(group, model_dir, algo, seed, dtype=torch.float32):
    run(group.configure_optimizer(OPTIM))
    start, _ = run(group.full_state())
    ref = hf_model(start, model_dir, dtype)
    samples = make_batch(ref, 12, seed)
    for i, s in enumerate(samples):  # every third sample is one version old
        s.version = 6 if i % 3 else 5
    # A forward without backward first: FSDP must not train on a stale gathered copy afterwards.
    run(group.compute_logprobs(samples[:3]))
    metrics = run(group.train_step(samples, 1.0, 6))
    losses, norms, (fresh_clipped, fresh_units) = reference_train_step(ref, samples, algo, 2, OPTIM,
                                                                       policy_version=6)
    assert metrics["minibatches"] == 2 and metrics["tokens"] == sum(len(s.response_ids) for s in samples)
    assert metrics["micro_batches"] > 2  # the 32-token budget forced several micro-batches per rank
    assert metrics["optimizer_step"] == 2
    for a, b in zip(metrics["losses"], losses):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6), (metrics["losses"], losses)
    for a, b in zip(metrics["grad_norms"], norms):
        assert math.isclose(a, b, rel_tol=1e-5), (metrics["grad_norms"], norms)
    assert metrics["lr"] == OPTIM.lr  # second step of a 2-step warm-up
    assert metrics["fresh_units"] == fresh_units
    assert metrics.get("clip_fraction_fresh", 0.0) == pytest.approx(fresh_clipped / max(fresh_units, 1))
    got, _ = run(group.full_state())
    assert_same_weights(got, ref, 1e-5)
    return metrics, samples


def test_train_step_matches_single_process_full_batch_reference(group, model_dir):
    metrics, samples = run_against_reference(group, model_dir, AlgoConfig(loss="dapo"), seed=1)
    assert 0 < metrics["clip_fraction"] < 1 and 0 < metrics["clip_fraction_fresh"] < 1
    assert metrics["entropy"] > 0 and metrics["approx_kl"] > 0
    assert "tis_weight_mean" not in metrics  # coupled form
    # Behaviour = learner + U(-0.3, 0.3): the mismatch metric sees that noise on the first minibatch.
    assert 0.05 < metrics["logprob_diff_mean"] < 0.3 and metrics["logprob_diff_max"] <= 0.3 + 1e-5


@pytest.mark.parametrize("loss", ["dapo", "gspo_plus"])
def test_decoupled_form_matches_reference(ray_cluster, model_dir, loss):
    """Issue 13 item 1: the old policy is the learner's own pre-update log-probs (pi_prox), weighted
    once by min(pi_prox / pi_engine, C), against a reference that computes pi_prox itself. float64 on
    both sides: GSPO's narrow clip leaves some gradient entries near Adam's eps (1e-8), where float32
    rounding alone moves a first Adam step by up to ~lr/10 on a handful of weights."""
    algo = AlgoConfig(loss=loss, tis_cap=1.2)
    g = Learner(model_dir, learner_cfg(micro_batch_tokens=24), algo, dtype="float64")
    try:
        metrics, _ = run_against_reference(g, model_dir, algo, seed=2, dtype=torch.float64)
        # The mismatch is measured over the whole batch before any update.
        assert 0.05 < metrics["logprob_diff_mean"] < 0.3
        # Behaviour = learner + U(-0.3, 0.3): weights spread around 1 and the cap 1.2 = e^0.18 cuts some.
        assert 0 < metrics["tis_capped_fraction"] < 1 and 0.9 < metrics["tis_weight_mean"] < 1.2
    finally:
        g.shutdown()


def test_compute_logprobs_matches_unpacked(group, model_dir):
    weights, _ = run(group.full_state())
    lm = hf_model(weights, model_dir)
    samples = make_batch(lm, 7, seed=3)
    got = run(group.compute_logprobs(samples))
    for s, lp in zip(samples, got):
        with torch.no_grad():
            ref = seq_logprobs(lm, s)
        assert torch.allclose(torch.tensor(lp), ref, atol=1e-5)


def toy_sft_sample(model_dir):
    import json

    from transformers import AutoTokenizer

    from nous_ray.models.tiny import TOY_PROBLEMS

    tok = AutoTokenizer.from_pretrained(model_dir)
    p = json.loads(TOY_PROBLEMS.read_text().splitlines()[0])
    prompt = tok.apply_chat_template([{"role": "user", "content": p["prompt"]}], add_generation_prompt=True,
                                     tokenize=False)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tok(f"```python\n{p['solutions'][0]}```", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return Sample(p["id"], 0, prompt_ids, response_ids, [], "stop", 0)


def test_sft_drives_the_loss_of_a_toy_solution_down(group, model_dir):
    s = toy_sft_sample(model_dir)
    # A forward without backward right before a fresh optimizer: the optimizer must still get the
    # sharded parameters (not the gathered copy FSDP keeps of the root after such a forward).
    run(group.compute_logprobs([s]))
    run(group.configure_optimizer(OptimConfig(lr=2e-3, warmup_steps=3, grad_clip=1.0)))
    losses = [run(group.sft_step([s, s, s]))["loss"] for _ in range(30)]
    assert losses[0] > 4.0  # random init: about log(vocab)
    assert losses[-1] < 0.3 * losses[0], losses
    assert all(b < a for a, b in zip(losses[:10], losses[1:10]))  # steady descent early on
    assert all(math.isfinite(x) for x in losses)


def test_checkpoint_roundtrip_and_hf_export(group, ray_cluster, model_dir, tmp_path):
    run(group.configure_optimizer(OPTIM))
    weights0, _ = run(group.full_state())
    samples = make_batch(hf_model(weights0, model_dir), 8, seed=4)
    run(group.train_step(samples))  # optimizer moments exist now
    ckpt = run(group.save_checkpoint(str(tmp_path / "ckpt"), extra={"step": 7}))
    assert os.path.isdir(ckpt) and not os.path.exists(str(tmp_path / "ckpt.tmp"))
    w_a, o_a = run(group.full_state(with_optimizer=True))

    other = Learner(model_dir, learner_cfg(), AlgoConfig(loss="dapo"))
    try:
        w_fresh, _ = run(other.full_state())
        assert any(not torch.equal(w_fresh[k], w_a[k]) for k in w_a)
        with pytest.raises(FileNotFoundError, match="not a complete learner checkpoint"):
            run(other.load_checkpoint(str(tmp_path / "ckpt.tmp")))
        assert run(other.load_checkpoint(ckpt)) == {"step": 7}
        w_b, o_b = run(other.full_state(with_optimizer=True))
        assert set(w_a) == set(w_b) and all(torch.equal(w_a[k], w_b[k]) for k in w_a)
        assert o_a["param_groups"] == o_b["param_groups"]
        assert set(o_a["state"]) == set(o_b["state"]) and len(o_a["state"]) > 0
        for name, st in o_a["state"].items():
            for key, val in st.items():
                assert torch.equal(torch.as_tensor(val), torch.as_tensor(o_b["state"][name][key])), (name, key)
        # Same weights and moments -> the same next step on both groups.
        more = make_batch(hf_model(w_a, model_dir), 8, seed=5)
        m_a, m_b = run(group.train_step(more)), run(other.train_step(more))
        assert m_a["losses"] == m_b["losses"] and m_a["grad_norms"] == m_b["grad_norms"]
    finally:
        other.shutdown()

    out = run(group.export_hf(str(tmp_path / "hf")))
    from safetensors import safe_open

    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f, \
            safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as g0:
        assert set(f.keys()) == set(g0.keys())  # HF names; tied lm_head left out as HF does
    lm = hf_model(out, model_dir)
    probe = make_batch(lm, 5, seed=6)
    learner_lp = run(group.compute_logprobs(probe))
    for s, lp in zip(probe, learner_lp):
        with torch.no_grad():
            logits = lm(torch.tensor([s.prompt_ids + s.response_ids])).logits[0]
        P = len(s.prompt_ids)
        ref = logits[P - 1 : P - 1 + len(s.response_ids)].log_softmax(-1).gather(
            1, torch.tensor(s.response_ids)[:, None]).squeeze(1)
        assert torch.allclose(torch.tensor(lp), ref, atol=1e-5)


def test_weight_buckets_carry_hf_names_and_current_weights(group, model_dir):
    from safetensors import safe_open

    from nous_ray.weight_sync import unpack_bucket

    refs = run(group.export_weight_buckets(0.25))  # 256 KiB buckets: several for the ~2 MB model
    assert len(refs) > 1 and all(isinstance(r, ray.ObjectRef) for r in refs)
    tensors = {n: t for b in ray.get(refs) for n, t in unpack_bucket(b, copy=True)}
    weights, _ = run(group.full_state())
    with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as f:
        assert set(tensors) == set(f.keys())
    assert all(torch.equal(tensors[k], weights[k]) for k in weights)


# ---- start-up and publishing: what each rank holds (item 3 of issue 10) ---------------------------

@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """As on the cluster: a bf16 checkpoint and fp32 master weights. Large enough (~83M parameters)
    that the model dwarfs the resident memory the runtime moves by itself (code pages, allocator
    arenas: ~20 MB either way), 24 layers so a tensor or a bucket is a small part of it, an odd MLP
    width so shards are uneven."""
    cfg = ModelConfig(tie_word_embeddings=False, tiny_layers=24, tiny_hidden_size=512, tiny_heads=8, tiny_kv_heads=8,
                      tiny_intermediate_size=1537, dtype="bfloat16")
    path = build_tiny_model_dir(cfg, tmp_path_factory.mktemp("wide") / "model")
    from safetensors.torch import load_file

    ref = load_file(os.path.join(path, "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in ref.values())
    return str(path), ref


@pytest.fixture(scope="module")
def ranks(ray_cluster, wide_model):
    from learner_ranks import start_ranks

    actors, peaks = start_ranks(wide_model[0])  # learner dtype float32
    yield actors, peaks
    for a in actors:
        ray.kill(a)


def nbytes(tensors, itemsize=None):
    return [t.numel() * (itemsize or t.element_size()) for t in tensors]


def test_start_up_reads_once_and_other_ranks_hold_only_their_shards(ranks, wide_model):
    """Rank 1, built on the meta device, takes its fp32 shards and one tensor at a time as rank 0
    broadcasts the checkpoint: its resident memory never grows by the model (today every rank loaded
    the whole model, in fp32)."""
    actors, peaks = ranks
    _, ref = wide_model
    full32 = sum(nbytes(ref.values(), 4))
    shards = ray.get(actors[1].shard_bytes.remote())
    assert abs(shards - full32 / 2) < 0.01 * full32  # half the fp32 model
    assert shards <= peaks[1] < 0.7 * full32, (peaks, shards, full32)
    # The meter sees a full copy where there is one: rank 0 read the checkpoint (bf16), and
    # gathering every weight onto rank 0 (a collective) holds them all there in bf16.
    full16 = sum(nbytes(ref.values()))
    assert peaks[0] >= shards + full16, (peaks, shards, full16)
    gathered = ray.get([a.rss_peak_of.remote("full_weights") for a in actors], timeout=600)
    assert gathered[0] >= full16 > 4 * gathered[1], gathered
    # And the shards hold exactly the checkpoint's weights.
    weights = dict(ray.get([a.call.remote("full_weights") for a in actors], timeout=600)[0])
    assert set(weights) == set(ref) and all(torch.equal(weights[k], ref[k]) for k in ref)


def test_publish_gathers_into_two_buckets_and_only_rank0_holds_full_tensors(ranks, wide_model, tmp_path):
    """A NCCL publish (communicator recorded): rank 0 gathers each bucket, in the engines' dtype
    (bf16, from fp32 masters), into one of two reused buffers; the other ranks only send their
    shards; the bytes sent are the weights, in buckets that end at layer boundaries."""
    from nous_ray.weight_sync.buckets import Bucket, bucket_nbytes, layer_key, unpack_bucket

    actors, _ = ranks
    _, ref = wide_model
    r0, r1 = ray.get([a.broadcast.remote(8 * 2**20, str(tmp_path)) for a in actors], timeout=600)
    plan = r0["plan"]
    sent = [np.fromfile(f, dtype=np.uint8) for f in r0["sent"]]
    biggest = max(bucket_nbytes(t) for t in plan)
    largest = max(nbytes(ref.values()))
    assert len(plan) >= 8 and [len(s) for s in sent] == [bucket_nbytes(t) for t in plan]
    # A layer never straddles two buckets (the receivers' reload completes whole layers).
    homes: dict = {}
    for i, t in enumerate(plan):
        for n in t.names:
            if layer_key(n) is not None:
                assert homes.setdefault(layer_key(n), i) == i, n
    got = {}
    for t, data in zip(plan, sent):
        got.update(unpack_bucket(Bucket(t.names, t.shapes, t.dtypes, t.offsets, data), copy=True))
    assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    # Memory: rank 0 adds two bucket buffers (counted exactly above) and tensors in flight (its
    # shard cast, gloo's gather buffer); the other rank shard-sized pieces. Neither comes near the
    # model (today rank 0 held the fp32 state dict and its bf16 copy: 3x the bf16 model).
    full = sum(nbytes(ref.values()))
    assert r0["buffers"] == 2 and r0["stats"]["buffer_bytes"] == 2 * biggest
    assert r0["peak"] < 2 * biggest + full / 4, (r0["peak"], biggest, largest, full)
    assert r1["peak"] < full / 4, (r1["peak"], largest, full)
