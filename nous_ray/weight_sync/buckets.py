"""Packing named tensors into a few flat byte buckets, and unpacking them again.

A weight sync moves hundreds of parameters; sending them one call (or one object) each is what makes
syncs slow in today's systems. Here a sync carries a handful of buckets, each ONE flat contiguous
``uint8`` array plus a small table of (name, shape, dtype, offset). On the object-store transport the
array is a numpy array, which Ray stores and returns zero-copy; on NCCL it is a device tensor that is
broadcast in one collective.

Layout of a bucket: tensors back to back in the order given, each starting at an offset aligned to
:data:`ALIGN` bytes so that a byte slice can be re-viewed as the tensor's dtype without a copy.

Buckets end at layer boundaries: the tensors of one decoder layer (names sharing their outermost index,
``model.layers.7.*``) never straddle two buckets, unless the bucket is the layer alone and bigger than
the limit. vLLM's in-place reload processes a layer once all of its weights have arrived and holds the
tensors it was given until then (``vllm/model_executor/model_loader/reload/layerwise.py``); a receiver
that reuses its bucket buffers may overwrite a bucket only once every layer in it is complete, which
this guarantees. The split is a pure function of names, shapes and dtypes, so a receiver computes the
same tables (:func:`plan_buckets`) before any byte arrives.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

# Every tensor starts at a multiple of this many bytes (>= the largest element size, complex128).
ALIGN = 16


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (a plain string pickles small and across versions)."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"bucket: unknown dtype {name!r}")
    return dt


@dataclass
class Bucket:
    """Tensors packed into one flat byte array.

    ``data``: 1-D ``uint8`` numpy array (object-store transport) or torch tensor (NCCL), of
    ``nbytes`` bytes. Tensor ``i`` occupies ``data[offsets[i] : offsets[i] + numel(shapes[i]) *
    itemsize(dtypes[i])]``.
    """

    names: list[str] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    data: np.ndarray | torch.Tensor | None = None

    @property
    def nbytes(self) -> int:
        return 0 if self.data is None else int(self.data.shape[0])

    def __len__(self) -> int:
        return len(self.names)

    def meta(self) -> "Bucket":
        """The same table without the bytes (sent beside a NCCL broadcast of ``data``)."""
        return Bucket(list(self.names), list(self.shapes), list(self.dtypes), list(self.offsets), None)


def _as_bytes(name: str, t) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"pack_buckets: {name!r} is a {type(t).__name__}, not a torch.Tensor")
    t = t.detach()
    if t.is_sparse or t.layout != torch.strided:
        raise TypeError(f"pack_buckets: {name!r} has layout {t.layout}; only dense tensors pack")
    # A DTensor (FSDP2 shard) must be gathered by the caller: packing a shard would ship a slice.
    if type(t) is not torch.Tensor and hasattr(t, "full_tensor"):
        raise TypeError(f"pack_buckets: {name!r} is a {type(t).__name__}; call .full_tensor() first")
    return t.contiguous().reshape(-1).view(torch.uint8)


def layer_key(name: str) -> str | None:
    """The name up to its outermost integer segment (``model.layers.7``), or None for a name outside
    any stack of layers (embeddings, final norm, head): the unit a bucket never splits."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return None


_T = TypeVar("_T")


def _layer_groups(items: Iterable[_T], name_of: Callable[[_T], str]) -> Iterator[list[_T]]:
    """Consecutive items of one layer as a list; an item outside any layer is a group alone. Lazy:
    a group is yielded as soon as it is known to be complete."""
    group: list[_T] = []
    key = None
    for item in items:
        k = layer_key(name_of(item))
        if group and (k is None or k != key):
            yield group
            group = []
        if k is None:
            yield [item]
            continue
        group.append(item)
        key = k
    if group:
        yield group


def _layout(start: int, sizes: Sequence[int]) -> tuple[list[int], int]:
    """Aligned offsets of tensors of ``sizes`` bytes placed from byte ``start``; returns (offsets, end)."""
    offsets = []
    end = start
    for n in sizes:
        end = _align(end)
        offsets.append(end)
        end += n
    return offsets, end


def _split(groups: Iterable[list[_T]], nbytes_of: Callable[[_T], int], bucket_bytes: int) -> Iterator[list[_T]]:
    """Whole groups into buckets of at most ``bucket_bytes`` (a group bigger than that alone)."""
    if not isinstance(bucket_bytes, int) or bucket_bytes <= 0:
        raise ValueError(f"pack_buckets: bucket_bytes must be a positive int, got {bucket_bytes!r}")
    pending: list[_T] = []
    used = 0
    for g in groups:
        sizes = [nbytes_of(x) for x in g]
        _, end = _layout(used, sizes)
        if pending and end > bucket_bytes:
            yield pending
            pending = []
            _, end = _layout(0, sizes)
        pending.extend(g)
        used = end
    if pending:
        yield pending


def _table(entries: Sequence[tuple[str, tuple[int, ...], str, int]]) -> tuple[Bucket, int]:
    """A bucket's table from ``(name, shape, dtype name, nbytes)``; returns (table, total bytes)."""
    offsets, end = _layout(0, [n for *_, n in entries])
    return Bucket([e[0] for e in entries], [tuple(e[1]) for e in entries], [e[2] for e in entries], offsets), end


def plan_buckets(metas: Iterable[tuple[str, Sequence[int], str | torch.dtype]], bucket_bytes: int) -> list[Bucket]:
    """The tables (no bytes) of the buckets :func:`iter_buckets` makes of tensors with these
    ``(name, shape, dtype)``, in order. Sender and receivers of a NCCL sync both compute it."""
    entries = []
    seen: set[str] = set()
    for name, shape, dt in metas:
        if name in seen:
            raise ValueError(f"plan_buckets: tensor name {name!r} appears twice")
        seen.add(name)
        dt = dt if isinstance(dt, str) else dtype_name(dt)
        numel = 1
        for d in shape:
            numel *= int(d)
        entries.append((name, tuple(int(d) for d in shape), dt, numel * dtype_from_name(dt).itemsize))
    groups = _layer_groups(entries, lambda e: e[0])
    return [_table(b)[0] for b in _split(groups, lambda e: e[3], bucket_bytes)]


def bucket_nbytes(table: Bucket) -> int:
    """Size of a bucket's byte array from its table alone (``data`` may be None)."""
    end = 0
    for shape, dt, off in zip(table.shapes, table.dtypes, table.offsets):
        numel = 1
        for s in shape:
            numel *= s
        end = max(end, off + numel * dtype_from_name(dt).itemsize)
    return end


def iter_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    bucket_bytes: int,
    *,
    device: torch.device | str | None = None,
    staging: np.ndarray | None = None,
) -> Iterator[Bucket]:
    """Stream buckets as they fill, so a caller can ``ray.put`` one before packing the next.

    A bucket holds at most ``bucket_bytes`` bytes (alignment padding between tensors included) and
    ends at a layer boundary (see the module docstring); a layer bigger than ``bucket_bytes`` gets a
    bucket of its own. ``device=None`` gives numpy ``data`` (host memory, zero-copy in Ray's object
    store); a device (e.g. ``"cuda"``) gives a torch ``uint8`` tensor there.

    ``staging``: a 1-D ``uint8`` array reused for every bucket that fits in it; such a bucket's
    ``data`` is a view of it, overwritten when the next bucket is requested (``ray.put`` copies,
    so put each bucket before advancing). Reusing one warm buffer across syncs saves the page
    faults of fresh memory, which cost as much as the copy itself.
    """
    if staging is not None and (not isinstance(staging, np.ndarray) or staging.dtype != np.uint8
                                or staging.ndim != 1 or device is not None):
        raise ValueError("pack_buckets: staging must be a 1-D uint8 numpy array, and only without device")
    seen: set[str] = set()

    def checked():
        for name, t in named_tensors:
            if name in seen:
                raise ValueError(f"pack_buckets: tensor name {name!r} appears twice")
            seen.add(name)
            yield name, t, _as_bytes(name, t)

    for items in _split(_layer_groups(checked(), lambda x: x[0]), lambda x: x[2].numel(), bucket_bytes):
        b, size = _table([(name, tuple(t.shape), dtype_name(t.dtype), raw.numel()) for name, t, raw in items])
        if device is None:
            flat = staging[:size] if staging is not None and size <= staging.shape[0] else np.empty(size, np.uint8)
            out = torch.from_numpy(flat)
        else:
            out = flat = torch.empty(size, dtype=torch.uint8, device=device)
        write_bucket(b, out, (raw for _, _, raw in items))
        b.data = flat
        yield b


def write_bucket(table: Bucket, out: torch.Tensor, raw_tensors: Iterable[torch.Tensor]) -> None:
    """Copy flat byte tensors into ``out`` at the table's offsets; the alignment gaps become zeros
    (deterministic bytes in a reused buffer)."""
    end = 0
    for raw, off in zip(raw_tensors, table.offsets):
        if off > end:
            out[end:off].zero_()
        out[off : off + raw.numel()].copy_(raw)
        end = off + raw.numel()


def zero_gaps(table: Bucket, out: torch.Tensor) -> None:
    """Zero the alignment gaps of a bucket written in place (tensor by tensor) into ``out``."""
    end = 0
    for shape, dt, off in zip(table.shapes, table.dtypes, table.offsets):
        if off > end:
            out[end:off].zero_()
        numel = 1
        for s in shape:
            numel *= s
        end = off + numel * dtype_from_name(dt).itemsize


def pack_buckets(
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    bucket_bytes: int,
    *,
    device: torch.device | str | None = None,
) -> list[Bucket]:
    """All buckets of ``named_tensors`` at once; see :func:`iter_buckets`."""
    return list(iter_buckets(named_tensors, bucket_bytes, device=device))


def _bytes_tensor(data) -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError(f"unpack_bucket: data must be 1-D uint8, got {data.dtype} {data.shape}")
        with warnings.catch_warnings():
            # Arrays from ray.get are read-only views of the object store; the tensors we hand
            # out are only read (copied into the model), so viewing them is safe.
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(data)
    raise TypeError(f"unpack_bucket: data is a {type(data).__name__}, not a numpy array or tensor")


def unpack_bucket(bucket: Bucket, *, copy: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` in packing order, as views of ``bucket.data`` (no copy).

    The views share the bucket's memory, which is read-only when it came from ``ray.get``:
    pass ``copy=True`` for tensors that own their memory.
    """
    if bucket.data is None:
        raise ValueError("unpack_bucket: bucket has no data (only its table)")
    raw = _bytes_tensor(bucket.data)
    n = len(bucket.names)
    if not (len(bucket.shapes) == len(bucket.dtypes) == len(bucket.offsets) == n):
        raise ValueError("unpack_bucket: names, shapes, dtypes and offsets differ in length")
    for name, shape, dt, off in zip(bucket.names, bucket.shapes, bucket.dtypes, bucket.offsets):
        dtype = dtype_from_name(dt)
        numel = 1
        for s in shape:
            numel *= s
        size = numel * torch.empty((), dtype=dtype).element_size()
        if off + size > raw.numel():
            raise ValueError(
                f"unpack_bucket: {name!r} needs bytes [{off}, {off + size}) but the bucket has {raw.numel()}"
            )
        if size == 0:  # an empty slice may have stride 0, which .view(dtype) rejects
            yield name, torch.empty(shape, dtype=dtype)
            continue
        t = raw[off : off + size].view(dtype).reshape(shape)
        yield name, (t.clone() if copy else t)


def bucket_bytes_from_mb(mb: int | float) -> int:
    """``WeightSyncConfig.bucket_mb`` -> bytes."""
    return int(mb * 2**20)
