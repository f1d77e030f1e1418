"""A training job's inputs: fetched once before the job, read from local paths by it.

Nothing downloads during a job (every actor runs with ``HF_HUB_OFFLINE=1``, and on a cluster each
node downloading 30 GB on its own would be slow and could disagree). ``launch/prefetch.py`` fetches
each input the config names from the hub into its local path, on storage every node mounts; at
start-up the job checks every input is there (:func:`missing_inputs`, then on every node through
``actors/node_check.py``) and otherwise stops with the path and the command that fetches it.

Inputs: ``model.path`` (from ``model.hub_id``), ``data.train_path`` (from ``data.train_hub_id``, or
the loader's hub dataset) and, when the run evaluates periodically, ``eval.path`` (LiveCodeBench's
hub dataset). ``model.path=tiny`` and ``data.train=tiny`` are built in and need nothing.

Then, still before Ray starts, the data itself: :func:`load_train_problems` and :func:`load_eval_problems`
read every row (a malformed one is an error naming the file, row and field, or with
``data.skip_malformed`` is left out and counted) and :func:`check_prompt_room` holds every prompt
against the engines' context (``rollout.max_model_len``). Each failure is a :class:`BadInputs`, one line.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from nous_ray.config import Config
from nous_ray.data.problem import Problem, ProblemFormatError

MODEL_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")


@dataclass(frozen=True)
class Fetch:
    """One input to download: hub repository ``repo_id`` (files matching ``allow_patterns``) into
    ``local_dir``, the value of config key ``key``."""

    key: str
    repo_id: str
    repo_type: str  # "model" | "dataset"
    local_dir: str
    allow_patterns: tuple[str, ...]
    revision: Optional[str] = None


def prefetch_command(config_file: str | Path | None, overrides: Sequence[str] = ()) -> str:
    """The command that fetches this run's inputs (the same config and overrides as the job's)."""
    args = ["python", "launch/prefetch.py"]
    if config_file:
        args += ["--config", str(config_file)]
    return shlex.join(args + list(overrides))


def model_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a complete Hugging Face model folder; None when it is one."""
    p = Path(path)
    if not p.is_dir():
        return "no such folder"
    if not (p / "config.json").is_file():
        return "no config.json in it"
    index = p / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        missing = [s for s in shards if not (p / s).is_file()]
        if missing:
            return (f"{len(missing)} of {len(shards)} weight shards missing (first: {missing[0]}): "
                    "an interrupted download")
    elif not any(p.glob("*.safetensors")):
        return "no *.safetensors weights in it"
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return "no tokenizer in it"
    return None


def _dataset_layout(loader: str, subsets: Sequence[str], release_version: str) -> tuple[str, tuple[str, ...]]:
    """(hub dataset, files of it the loader reads) for a loader name."""
    if loader == "deepcoder":
        from nous_ray.data.deepcoder import DEFAULT_SUBSETS, HUB_NAME

        return HUB_NAME, tuple(f"{s}/*.parquet" for s in (tuple(subsets) or DEFAULT_SUBSETS))
    if loader == "rlvr":
        from nous_ray.data.rlvr import HUB_NAME

        return HUB_NAME, ("rl_train.jsonl",)
    if loader == "lcb":
        from nous_ray.data.lcb import HUB_NAME, release_files

        return HUB_NAME, tuple(release_files(release_version))
    raise ValueError(f"{loader!r} data has no hub dataset to fetch; give local files")


def dataset_problem(loader: str, path: str | None, subsets: Sequence[str], release_version: str) -> str | None:
    """Why ``path`` does not hold the files ``loader`` reads; None when it does."""
    if path is None:
        return "not set (a job reads local files only)"
    from nous_ray.data.sources import is_local

    if not is_local(path):
        return "no such file or folder"
    p = Path(path)
    if not p.is_dir() or loader not in ("deepcoder", "lcb"):
        return None
    if loader == "deepcoder":
        if len(subsets) == 1 and not (p / subsets[0]).is_dir():
            return None  # files of one subset, named in data.train_subsets
        _, patterns = _dataset_layout(loader, subsets, release_version)
        missing = [pat.split("/")[0] for pat in patterns if not any(p.glob(pat))]
        return f"no parquet files for subset(s) {missing}" if missing else None
    _, files = _dataset_layout(loader, subsets, release_version)
    missing = [f for f in files if not (p / f).is_file()]
    return f"{release_version} needs {missing}" if missing else None


def _needs_eval_data(cfg: Config) -> bool:
    return bool(cfg.eval.every_steps) and cfg.eval.dataset != "tiny"


def prefetch_plan(cfg: Config) -> list[Fetch]:
    """What ``launch/prefetch.py`` downloads for ``cfg``; a ValueError names an input it cannot fetch."""
    plan = []
    m = cfg.model
    if m.path != "tiny":
        if m.hub_id:
            plan.append(Fetch("model.path", m.hub_id, "model", m.path, MODEL_FILES, m.hub_revision))
        elif model_problem(m.path):
            raise ValueError(f"model.path={m.path!r}: {model_problem(m.path)}, and model.hub_id is not set: "
                             "nothing to fetch it from")
    d = cfg.data
    if d.train == "jsonl":  # made here (launch/prepare_data.py), not fetched
        if why := dataset_problem(d.train, d.train_path, d.train_subsets, "release_v6"):
            raise ValueError(f"data.train_path={d.train_path!r}: {why}; jsonl problems are written by "
                             "launch/prepare_data.py, there is nothing to fetch")
    elif d.train != "tiny":
        if d.train_path is None:
            raise ValueError(f"data.train_path is not set: name the local folder to fetch data.train={d.train!r} into")
        hub, patterns = _dataset_layout(d.train, d.train_subsets, "release_v6")
        plan.append(Fetch("data.train_path", d.train_hub_id or hub, "dataset", d.train_path, patterns))
    e = cfg.eval
    if _needs_eval_data(cfg):
        if e.path is None:
            raise ValueError(f"eval.path is not set: name the local folder to fetch eval.dataset={e.dataset!r} into "
                             "(or eval.every_steps=0)")
        hub, patterns = _dataset_layout(e.dataset, (), e.release_version)
        plan.append(Fetch("eval.path", hub, "dataset", e.path, patterns))
    return plan


def missing_inputs(cfg: Config) -> list[str]:
    """One line per input of ``cfg`` that is not on this machine: the key, the path and what is wrong."""
    out = []
    m, d, e = cfg.model, cfg.data, cfg.eval
    if m.path != "tiny" and (why := model_problem(m.path)):
        out.append(f"model.path={m.path!r}: {why}")
    if d.train != "tiny" and (why := dataset_problem(d.train, d.train_path, d.train_subsets, "release_v6")):
        out.append(f"data.train_path={d.train_path!r} (data.train={d.train}): {why}")
    if _needs_eval_data(cfg) and (why := dataset_problem(e.dataset, e.path, (), e.release_version)):
        out.append(f"eval.path={e.path!r} (eval.dataset={e.dataset}): {why}")
    return out


class MissingInputs(RuntimeError):
    """The job's model or data is not where the config says; the message holds the fetch command."""


def require_inputs(cfg: Config, fetch_command: str, where: str = "") -> None:
    """Raise :class:`MissingInputs` listing every missing input and the command that fetches them."""
    missing = missing_inputs(cfg)
    if missing:
        raise MissingInputs(
            f"inputs missing{where}: " + "; ".join(missing)
            + f". A job reads local paths only: fetch them once, before the job, onto storage every node "
              f"mounts: {fetch_command}")


class BadInputs(RuntimeError):
    """The job's data is there but cannot be trained on; the message names the file, row, field or key."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _data_key(cfg: Config) -> str:
    d = cfg.data
    return f"data.train_path={d.train_path!r} (data.train={d.train})" if d.train_path else f"data.train={d.train}"


def load_train_problems(cfg: Config) -> tuple[list[Problem], list[ProblemFormatError]]:
    """The training problems and the malformed rows left out (``data.skip_malformed``); raises
    :class:`BadInputs` for a malformed row (without the key), data that cannot be read, or no problems."""
    from nous_ray.data import load_problems
    from nous_ray.data.collect import record_skips

    d = cfg.data
    where = _data_key(cfg)
    try:
        with record_skips() as skipped:
            problems = load_problems(d.train, d.train_path, d.train_subsets, d.max_problems,
                                     errors="skip" if d.skip_malformed else "raise")
    except ProblemFormatError as e:
        raise BadInputs(f"{where}: {e}; data.skip_malformed=true leaves such rows out and counts them") from None
    except Exception as e:  # the loaders' own errors, or the file format's (datasets, pyarrow)
        raise BadInputs(f"{where}: cannot read it: {type(e).__name__}: {_first_line(e)}") from None
    if not problems:
        why = f"all {len(skipped)} rows are malformed (first: {skipped[0]})" if skipped else "it holds no problems"
        raise BadInputs(f"{where}: no problems to train on: {why}")
    return problems, list(skipped)


def load_eval_problems(cfg: Config) -> list[Problem]:
    """The periodic evaluation's problems (``eval.*``); raises :class:`BadInputs` naming ``eval.path``."""
    from nous_ray.eval import select_problems

    e = cfg.eval
    try:
        return select_problems(e)
    except Exception as err:
        raise BadInputs(f"eval.path={e.path!r} (eval.dataset={e.dataset}): {_first_line(err)}") from None


def check_prompt_room(problems: Sequence[Problem], prompt_ids: Sequence[Sequence[int]], max_model_len: int,
                      what: str) -> None:
    """Every prompt must leave the rollout engines room for at least one response token: an engine
    refuses a prompt of ``max_model_len`` tokens or more (mid-run, after the warm start)."""
    over = [(p.id, len(ids)) for p, ids in zip(problems, prompt_ids) if len(ids) >= max_model_len]
    if over:
        pid, n = over[0]
        longest = max(n for _, n in over)
        raise BadInputs(
            f"{what}: {len(over)} of {len(problems)} prompts leave no room for a response within "
            f"rollout.max_model_len={max_model_len} (the first: problem {pid!r}, {n} tokens; the longest "
            f"{longest}); raise rollout.max_model_len or leave those problems out")
