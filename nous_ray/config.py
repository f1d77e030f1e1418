"""The one typed configuration schema, with every default in one place.

Layers, later wins: these dataclass defaults -> a YAML file (``--config``) -> ``key=value`` on the
command line. OmegaConf's structured mode makes an unknown key or a value of the wrong type an error
that names the key; :func:`load_config` re-raises it as :class:`ConfigError` with the source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf  # noqa: F401  (MISSING re-exported for configs)
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A broken configuration: names the key and where it came from."""


@dataclass
class ModelConfig:
    # A local Hugging Face folder on storage every node sees, or "tiny" (the bundled tiny Qwen3, random
    # weights). The job never downloads: `launch/prefetch.py` fetches hub_id into path once, before it.
    path: str = "tiny"
    hub_id: Optional[str] = None  # e.g. Qwen/Qwen3-14B
    hub_revision: Optional[str] = None  # a branch, tag or commit of hub_id; None = main
    # Only for path=tiny: the architecture of the model built from a config.
    tiny_hidden_size: int = 128
    tiny_layers: int = 2
    tiny_heads: int = 2
    tiny_kv_heads: int = 2
    tiny_head_dim: int = 64  # vLLM-CPU needs 32, 64, 80, ...
    tiny_intermediate_size: int = 384
    tie_word_embeddings: bool = True
    dtype: str = "float32"  # "bfloat16" on GPU
    seed: int = 0


@dataclass
class DataConfig:
    # "tiny" is the bundled toy problem set; otherwise a loader name: deepcoder, rlvr, lcb, jsonl.
    train: str = "tiny"
    # Local parquet/jsonl files or a local copy of the hub dataset's layout (a training job reads local
    # files only); `launch/prefetch.py` fetches train_hub_id (None: the loader's hub dataset) into it.
    train_path: Optional[str] = None
    train_hub_id: Optional[str] = None
    train_subsets: list[str] = field(default_factory=list)  # e.g. DeepCoder's primeintellect, taco, lcbv5
    max_problems: Optional[int] = None
    # "lcb": LiveCodeBench's code-generation prompt through the chat template; "plain": statement only.
    prompt_format: str = "lcb"
    shuffle: bool = True
    seed: int = 0
    # A malformed row (not JSON, a missing or broken field, no tests) stops the job at start-up naming
    # the file, row and field; true leaves such rows out and counts them instead.
    skip_malformed: bool = False


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off (true temperature sampling)


@dataclass
class RolloutConfig:
    num_workers: int = 1
    tensor_parallel_size: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 0.5
    group_size: int = 8
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # vLLM engine settings.
    kv_cache_memory_bytes: int = 256 * 2**20
    gpu_memory_utilization: float = 0.85
    max_model_len: int = 1024
    enforce_eager: bool = True
    # Scheduler: sequences and tokens per engine step, chunked prefill. None takes vLLM's own offline
    # (``vllm.LLM``) defaults for the hardware (vllm/engine/arg_utils.py ``get_batch_defaults``):
    # CPU 256 sequences / 4,096 tokens per TP rank; H100/H200 and B200 1,024 / 16,384.
    max_num_seqs: Optional[int] = None
    max_num_batched_tokens: Optional[int] = None
    enable_chunked_prefill: Optional[bool] = None
    # Prompts (groups) in flight on one worker at once. The driver sends one call per group and
    # spreads the open slots of the staleness window over the workers, fewest in flight first; the
    # engine batches the concurrent calls (continuous batching), so this caps one engine's batch at
    # this many groups x rollout.group_size sequences.
    max_prompts_per_worker: int = 16
    # How an engine takes new weights (nous_ray/rollout/stream.py). "inflight": between two engine
    # steps; running requests keep their KV cache and continue under the new weights, each response
    # token recording the policy version that sampled it (a sample's staleness counts from its oldest
    # token). "drain": stop admitting, let every running request finish, then load (every sample from
    # one version; engines idle while their longest response finishes). The planner's stand-in
    # engines (nous_ray/sim) follow this key too.
    weight_update: str = "inflight"


@dataclass
class VerifierConfig:
    backend: str = "local"  # local | modal
    num_actors: int = 1
    cpus_per_actor: float = 0.5
    workers: int = 0  # local sandbox processes per actor; 0 = number of cores
    max_in_flight: int = 64  # calls in flight per actor
    # Modal (the recipe): autoscaler and client.
    modal_app: str = "nous-ray-verifier"
    modal_function: str = "judge"
    modal_max_containers: int = 100
    modal_buffer_containers: int = 0
    modal_scaledown_window_s: int = 60
    modal_max_inputs_per_container: int = 1  # 1 = a fresh container per rollout
    modal_call_timeout_s: float = 300.0
    modal_retries: int = 2
    modal_max_creates_per_s: float = 20.0
    # A test that stops within this fraction of the time limit is re-run once before time_limit.
    rerun_margin: float = 0.8
    # Wall-clock backstop per test: wall_factor * time limit + wall_extra_s (only catches programs
    # that block or sleep; the time limit itself is CPU time).
    wall_factor: float = 2.0
    wall_extra_s: float = 1.0
    # Standard output past this is a wrong answer (also caps any file a program writes).
    max_output_mb: float = 64.0
    # RLIMIT_NPROC of a test: its threads (creating processes is denied to programs).
    max_processes: int = 64
    # How the local judge isolates programs: "bwrap" (Linux namespaces through bubblewrap; the judge
    # refuses to start where the kernel does not allow them) or "none" (explicitly unsandboxed: only
    # where the machine or container itself is the sandbox).
    isolation: str = "bwrap"
    # When the judge runs as root, the host uid every test runs as (65534 = nobody).
    sandbox_uid: int = 65534
    # Extra delay per verification call (benchmarks of the pipeline only).
    debug_delay_s: float = 0.0


@dataclass
class ContextStage:
    step: int = 0
    max_tokens: int = 32768


# The largest sequence-level clip (gspo, gspo_plus) accepted without algo.allow_large_sequence_clip.
SEQUENCE_CLIP_MAX = 1e-2


@dataclass
class AlgoConfig:
    loss: str = "dapo"  # dapo | gspo | gspo_plus
    # None = the objective's own default (dapo 0.2 / 0.28, gspo and gspo_plus 3e-4 / 4e-4). Leave
    # them unset in configs, so switching algo.loss switches the clip too.
    clip_low: Optional[float] = None
    clip_high: Optional[float] = None
    # A sequence-level clip (gspo, gspo_plus) above SEQUENCE_CLIP_MAX is refused unless this is true:
    # a token-level range such as 0.2 / 0.28 on a geometric-mean ratio never clips.
    allow_large_sequence_clip: bool = False
    # Dual clip for negative advantages (verl's clip_ratio_c): a unit's loss is at most c |A|; null = off.
    clip_ratio_c: Optional[float] = 3.0
    # Per-token log-ratios are clamped to +-this before exp (as verl).
    log_ratio_clamp: float = 20.0
    adv_eps: float = 1e-6
    overlong_filter: bool = True
    # Whether a truncated response's reward still enters its group's mean and std.
    overlong_in_group_stats: bool = True
    dynamic_sampling: bool = True
    # 0: coupled form, the engine's log-probs are the old policy of the clipped ratio. > 0: decoupled
    # form, the learner's log-probs under the weights it holds at the start of the step are the old
    # policy and every unit is weighted by min(pi_prox / pi_engine, tis_cap) (nous_ray/algo/losses.py).
    tis_cap: float = 0.0
    context_schedule: list[ContextStage] = field(
        default_factory=lambda: [ContextStage(0, 32768), ContextStage(1000, 40960)]
    )


@dataclass
class OptimConfig:
    lr: float = 1e-6
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 0
    grad_clip: float = 1.0


@dataclass
class LearnerConfig:
    num_ranks: int = 2
    gpus_per_rank: float = 0.0
    cpus_per_rank: float = 0.5
    backend: str = "gloo"  # gloo on CPU, nccl on GPU
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Optimizer steps per batch (the batch is split into this many minibatches).
    minibatches: int = 1
    # Micro-batches are packed to at most this many tokens (no padding to the longest sequence).
    micro_batch_tokens: int = 8192
    logprob_chunk_size: int = 1024
    activation_checkpointing: bool = False
    reshard_after_forward: bool = True
    # Attention over packed rows. "varlen" (nous_ray/train/attention.py): per-sequence cost, torch's
    # varlen flash kernel on GPU, one sdpa per sequence on CPU. "sdpa": a dense block-diagonal mask
    # over the whole row (cost quadratic in the row). "flash_attention_2": needs the flash-attn package.
    attn_implementation: str = "varlen"


@dataclass
class WeightSyncConfig:
    transport: str = "object_store"  # object_store (CPU) | nccl (GPU; needed by engines of several GPUs)
    # Target bucket size. A decoder layer never straddles two buckets (one bigger than this gets a
    # bucket alone); the learner's rank 0 and every engine hold two buckets at once during a sync.
    bucket_mb: int = 256
    # After each publish, check every rollout worker scores a trained response as the learner does.
    verify_after_sync: bool = False
    max_logprob_diff: float = 1e-3  # float32; bf16 engines need a looser bound


@dataclass
class InitConfig:
    # Supervised warm start on the reference solutions before RL (tiny default only).
    sft_steps: int = 0
    sft_lr: float = 2e-3
    sft_warmup_steps: int = 20
    sft_batch_size: int = 16
    # Stop early once the sampled pass rate reaches this (checked every sft_check_every steps).
    sft_target_pass_rate: float = 0.2
    sft_check_every: int = 5


@dataclass
class TrainerConfig:
    steps: int = 100
    prompts_per_step: int = 16  # groups per training batch
    max_off_policy_steps: int = 2
    # Batches of prompts generation may run ahead of training; 0 = max(1, max_off_policy_steps).
    max_outstanding_batches: int = 0
    # Give up (with an error) after this many batches' worth of groups filtered without a batch.
    max_filtered_batches: int = 20
    # Give up after this many batches' worth of samples dropped for verifier infra errors (the sandbox
    # or Modal could not judge them) without a batch: a verifier that fails every call is an error,
    # not an endless wait.
    max_infra_error_batches: int = 3
    seed: int = 0
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    resume: str = "auto"  # auto | never | PATH
    save_samples: int = 8  # completions with verdicts saved per step


@dataclass
class EvalConfig:
    every_steps: int = 0  # 0 = no periodic evaluation during training
    dataset: str = "lcb"
    path: Optional[str] = None
    release_version: str = "release_v6"
    start_date: str = "2024-08-01"
    end_date: str = "2025-05-01"
    n_samples: int = 16
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 81920
    # YaRN for long-context evaluation: None = off. The context is the rope table, original * factor
    # positions (40,960 * 2.0 = 81,920); a response gets them minus its prompt (see nous_ray/eval/engine.py).
    yarn_original_max_positions: Optional[int] = 40960
    yarn_factor: float = 2.0
    max_problems: Optional[int] = None
    out_dir: Optional[str] = None
    # None = data.prompt_format (evaluate in the format the model was trained on).
    prompt_format: Optional[str] = None
    # Qwen3 chat templates: None leaves the template's default (thinking on, the recipe's setting).
    enable_thinking: Optional[bool] = None


@dataclass
class SimConfig:
    """The stand-in workers' cost model (``nous_ray/sim``, ``launch/plan.py``): every timing and memory
    figure of a simulated run comes from these numbers and the public specifications in
    ``nous_ray/sim/specs.py``. Sources: [spec] a vendor specification, [meas] measured, [lit] a
    published measurement (cited), [assume] an assumption, to be replaced by a measurement."""

    # The hardware the recipe runs on: a profile of nous_ray/sim/specs.py (h100 | h200 | b200), the
    # cluster's size (cluster.yaml: 6 nodes of 8 GPUs; the CPU head is not counted).
    gpu: str = "b200"
    nodes: int = 6
    gpus_per_node: int = 8
    # Overrides of the profile ([meas] on another machine, e.g. the CPU validation); None = the profile's.
    hbm_gb: Optional[float] = None
    hbm_tb_s: Optional[float] = None
    peak_tflops: Optional[float] = None
    # ---- rollout engine (one vLLM engine) ----
    # A decode step reads the weights and the running sequences' KV once: its time is
    # (weight bytes + KV bytes read) / (HBM bandwidth x decode_bw_efficiency) + per-step and per-sequence
    # overheads, or the batch's matmul FLOPs at decode_mfu when that is longer. [lit] vLLM 0.23 decodes
    # Llama-3.1-8B at batch 1 on an A100-40GB at 75 tok/s = 13.3 ms/step, 77% of the 10.3 ms bandwidth
    # bound (johnmusgrave.com/p/vllm-throughput-latency-sweep-on): 0.85 efficiency + 1 ms fixed fits it.
    decode_bw_efficiency: float = 0.85
    decode_step_overhead_s: float = 0.001
    decode_seq_overhead_s: float = 1.0e-5  # [assume] sampling + log-prob + output processing per sequence
    decode_mfu: float = 0.5  # [assume] batched decode matmuls, when compute binds
    prefill_mfu: float = 0.5  # [assume] prefill is compute-bound; a group's samples share its prompt's prefill
    # GPU memory vLLM keeps outside weights and KV cache (activations at max_num_batched_tokens, CUDA
    # graphs, NCCL buffers). [assume] ~6 GB for a 14B model at 16k batched tokens.
    engine_reserved_gb: float = 6.0
    engine_start_s: float = 60.0  # [assume] a replaced engine: process start + weight load + CUDA graphs
    # ---- workload ----
    # Response lengths: log-normal, cut at the context schedule's limit (the cut ones are truncated).
    # [assume, DESIGN.md] reasoning code models at 14B: mean 10-20k tokens, 5-15% truncated at 32k;
    # median 11,700 and sigma 0.8 give mean 14.6k after the cut and 10% truncated at 32,768.
    response_len_median: float = 11700.0
    response_len_sigma: float = 0.8
    prompt_tokens: int = 700  # [assume] LiveCodeBench prompt (statement + format instructions), Qwen tokens
    num_problems: int = 24000  # [spec] the recipe's ~24k training problems (synthetic stand-ins)
    # Per-problem pass probability ~ Beta(alpha, beta). [assume] mean 0.6 ~ Qwen3-14B's LiveCodeBench v6
    # pass@1 (60.79%, the recipe); alpha + beta = 1 makes it U-shaped, so ~42% of 8-sample groups are
    # all-pass or all-fail (dynamic sampling drops them).
    pass_alpha: float = 0.6
    pass_beta: float = 0.4
    # ---- verification (one program per container on Modal; the local sandbox on CPU) ----
    container_start_s: float = 1.0  # [lit] Modal: "starting up containers incurs a cold-start time of ~1s" (modal.com/docs/guide/cold-start)
    tests_per_problem: int = 15  # [assume] DeepCoder's set keeps problems with >= 5 tests; lists run to ~30
    test_time_s: float = 0.2  # [assume] one test of an accepted Python program, interpreter start included
    timeout_frac: float = 0.1  # [assume] failing programs that run into the time limit ...
    time_limit_s: float = 15.0  # [spec] ... of the recipe (15 s)
    infra_error_rate: float = 0.0  # fraction of programs whose verification fails (tests of the driver)
    # Programs of a group the judge runs: it runs identical ones once. [assume] 14B reasoning responses
    # are all distinct; [meas] the tiny default repeats itself (benchmarks/plan_validation.py).
    distinct_programs: float = 1.0
    # ---- learner (FSDP2) ----
    # Train FLOPs per token 6N + 12*L*H*Q*T (PaLM's and torchtitan's MFU count; T = the sequence's
    # length); log-prob recompute (algo.tis_cap > 0) adds a forward (a third). [lit] torchtitan reports
    # 33-39% MFU for Llama-3.1-8B with FSDP2 on 8-128 H100 (docs/performance.md); 14B at long context: 0.35.
    learner_mfu: float = 0.35
    train_step_overhead_s: float = 1.0  # [assume] optimizer step, gradient clip, batch hand-off
    # ---- weight sync ----
    # Learner side (the publish the trainer waits for): gather + send of the bf16 weights; engine side:
    # load into the engine after its drain. [spec] p6-b200.48xlarge: 8 x 400 Gb/s EFA, 50 GB/s per GPU;
    # [assume] NCCL broadcast at 80% of it.
    sync_bandwidth_gb_s: float = 40.0
    sync_overhead_s: float = 2.0  # [assume] FSDP gather to rank 0, bucket packing
    engine_load_gb_s: float = 100.0  # [assume] buckets into the engine's weights (device copies)
    # How an engine takes new weights: rollout.weight_update (drain | inflight), as the real engines.
    # ---- one machine for every role (the CPU default) ----
    # Cores all roles share (0 = each role on its own hardware, as on a GPU cluster), and the runnable
    # threads of other work there (driver, Ray, other users); see nous_ray/sim/host.py.
    host_cores: float = 0.0
    host_background: float = 0.0
    # ---- the simulation ----
    seed: int = 0
    # Simulated seconds per real second for stand-ins on a Ray cluster (in one process the planner runs
    # on a virtual clock and needs none).
    speedup: float = 200.0


@dataclass
class PrepareConfig:
    """``launch/prepare_data.py``: the training set as the recipe needs it (see nous_ray/prepare)."""

    # Stage 1 always runs (it is the loading); this picks the loaders' error policy: skip (and count)
    # malformed rows, or stop at the first one.
    skip_malformed: bool = True
    # Stage switches.
    dedupe: bool = True
    decontaminate: bool = True
    verify_tests: bool = True
    difficulty: bool = False  # needs a model (model.path) and rollout workers
    # Near duplicates: Jaccard similarity of word 5-gram shingle sets of the normalized statements
    # (candidates from MinHash LSH, each candidate pair then checked exactly).
    dedupe_ngram: int = 5
    dedupe_threshold: float = 0.7
    # Statements shorter than this many words are compared exactly only: one changed word of a
    # one-liner ("print the largest" / "the smallest") is another problem.
    dedupe_min_words: int = 20
    minhash_num_perm: int = 128
    # Decontamination against the evaluation set, regardless of date: word 13-grams; a training
    # problem is dropped when the 13-grams it shares with one evaluation problem are at least this
    # fraction of the smaller of the two statements' 13-gram sets.
    decontam_ngram: int = 13
    decontam_threshold: float = 0.5
    # And by contest date where the training problem has one: dropped when dated on or after this
    # day; None = the earliest contest date of the evaluation set.
    decontam_by_date: bool = True
    date_cutoff: Optional[str] = None
    # Test verification: up to this many reference solutions per problem run through the judge.
    max_references: int = 3
    # Problems with fewer tests are dropped (DeepCoder's data recipe used 5).
    min_tests: int = 5
    # The judge compares outputs exactly and has no checker hook: problems whose statement accepts
    # any of several answers are dropped unless you bring a checker and set this.
    keep_multi_answer: bool = False
    # Difficulty: samples per problem with the rollout workers (sampling: rollout.sampling; prompt:
    # data.prompt_format); problems solved by all or none of them are dropped.
    difficulty_samples: int = 8
    # Response limit of those samples; None = the first stage of algo.context_schedule.
    difficulty_max_tokens: Optional[int] = None


@dataclass
class RunConfig:
    name: str = "tiny"
    # On several nodes: an absolute path on storage every node mounts (the driver and every learner
    # rank write and read back a probe file there at start-up). A relative path is taken from the
    # current directory, which must not be Ray's temporary copy of a job's working directory.
    run_dir: str = "runs/${run.name}"
    # Storage every node mounts at the same path (the recipe: FSx for Lustre at /fsx); configs build
    # run_dir, model.path and data paths from it with ${run.shared_dir}. Informational otherwise.
    shared_dir: Optional[str] = None
    ray_address: Optional[str] = None  # None: join the cluster this runs in, else start a local one


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    weight_sync: WeightSyncConfig = field(default_factory=WeightSyncConfig)
    init: InitConfig = field(default_factory=InitConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)


DEFAULT_CONFIG_FILE = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


def load_config(config_file: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then ``config_file`` (the tiny default when None), then ``key=value`` overrides.

    Returns a plain :class:`Config` (dataclass instances, interpolations resolved).
    """
    base = OmegaConf.structured(Config)
    source = "defaults"
    try:
        path = Path(config_file) if config_file else DEFAULT_CONFIG_FILE
        if path.exists() or config_file:
            source = str(path)
            if not path.exists():
                raise ConfigError(f"config file {path} does not exist")
            base = OmegaConf.merge(base, OmegaConf.load(path))
        for ov in overrides or []:
            source = f"command line {ov!r}"
            if "=" not in ov:
                raise ConfigError(f"{source}: expected key=value")
            base = OmegaConf.merge(base, OmegaConf.from_dotlist([ov]))
        source = "resolving"
        cfg = OmegaConf.to_object(base)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{source}: key {key!r}: {first_line}") from None
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks OmegaConf's types cannot express."""
    def need(cond: bool, key: str, why: str) -> None:
        if not cond:
            raise ConfigError(f"key {key!r}: {why}")

    algo = cfg.algo
    need(algo.loss in ("dapo", "gspo", "gspo_plus"), "algo.loss", f"unknown objective {algo.loss!r}")
    need(algo.clip_low is None or 0 <= algo.clip_low < 1, "algo.clip_low", f"must be in [0, 1), got {algo.clip_low}")
    need(algo.clip_high is None or algo.clip_high >= 0, "algo.clip_high", f"must be >= 0, got {algo.clip_high}")
    if algo.loss != "dapo" and not algo.allow_large_sequence_clip:
        for key in ("clip_low", "clip_high"):
            v = getattr(algo, key)
            need(v is None or v <= SEQUENCE_CLIP_MAX, f"algo.{key}",
                 f"{v} is far above a sequence-level clip ({algo.loss}'s default is 3e-4 / 4e-4; sequence ratios are "
                 f"geometric means and a token-level range never clips them); leave it unset, or set "
                 f"algo.allow_large_sequence_clip=true")
    need(algo.clip_ratio_c is None or algo.clip_ratio_c > 1, "algo.clip_ratio_c",
         f"must be > 1 (or null: no dual clip), got {algo.clip_ratio_c}")
    need(algo.log_ratio_clamp > 0, "algo.log_ratio_clamp", f"must be > 0, got {algo.log_ratio_clamp}")
    need(algo.tis_cap >= 0, "algo.tis_cap", f"must be >= 0 (0 = coupled form), got {algo.tis_cap}")
    need(cfg.verifier.backend in ("local", "modal"), "verifier.backend", f"unknown backend {cfg.verifier.backend!r}")
    need(cfg.weight_sync.transport in ("object_store", "nccl"), "weight_sync.transport",
         f"unknown transport {cfg.weight_sync.transport!r}")
    need(cfg.rollout.tensor_parallel_size >= 1, "rollout.tensor_parallel_size", "must be >= 1")
    need(cfg.rollout.tensor_parallel_size == 1 or cfg.weight_sync.transport == "nccl", "weight_sync.transport",
         f"rollout.tensor_parallel_size={cfg.rollout.tensor_parallel_size} needs 'nccl': an engine of several "
         "GPUs runs its workers in other processes and takes weights through vLLM's NCCL weight transfer")
    need(cfg.weight_sync.bucket_mb > 0, "weight_sync.bucket_mb", "must be > 0")
    need(cfg.rollout.group_size >= 2, "rollout.group_size", "needs at least 2 samples per group")
    need(cfg.trainer.prompts_per_step >= 1, "trainer.prompts_per_step", "must be >= 1")
    need(cfg.trainer.max_off_policy_steps >= 0, "trainer.max_off_policy_steps", "must be >= 0")
    need(cfg.learner.num_ranks >= 1, "learner.num_ranks", "must be >= 1")
    need(cfg.learner.minibatches >= 1, "learner.minibatches", "must be >= 1")
    need(cfg.trainer.prompts_per_step % cfg.learner.minibatches == 0, "learner.minibatches",
         f"must divide trainer.prompts_per_step ({cfg.trainer.prompts_per_step})")
    need(cfg.rollout.max_prompts_per_worker >= 1, "rollout.max_prompts_per_worker", "must be >= 1")
    need(cfg.rollout.weight_update in ("inflight", "drain"), "rollout.weight_update",
         f"unknown weight update {cfg.rollout.weight_update!r} (inflight | drain)")
    stages = cfg.algo.context_schedule
    need(len(stages) >= 1 and stages[0].step == 0, "algo.context_schedule", "first stage must start at step 0")
    need(all(a.step < b.step for a, b in zip(stages, stages[1:])), "algo.context_schedule",
         "stage steps must increase")


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.structured(cfg), path)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
