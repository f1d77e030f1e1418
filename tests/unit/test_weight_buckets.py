"""Packing tensors into flat byte buckets and back: exact round trips and bucket counts."""

import pickle

import numpy as np
import pytest
import torch

from nous_ray.weight_sync.buckets import ALIGN, Bucket, iter_buckets, pack_buckets, unpack_bucket


def _tensors():
    g = torch.Generator().manual_seed(0)
    return [
        ("embed.weight", torch.randn(7, 5, generator=g)),
        ("norm.weight", torch.randn(5, generator=g).to(torch.bfloat16)),
        ("ids", torch.randint(-(2**40), 2**40, (3, 3), generator=g)),
        ("small_int", torch.randint(-100, 100, (11,), generator=g, dtype=torch.int8)),
        ("half", torch.randn(2, 3, 1, generator=g).half()),
        ("mask", torch.tensor([True, False, True])),
        ("scalar", torch.tensor(3.25)),
        ("empty", torch.zeros(0, 4)),
        ("bf16_big", torch.randn(33, 17, generator=g).to(torch.bfloat16)),
    ]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    # Bitwise: compare raw bytes, so NaN payloads and -0.0 count too.
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))
    )


@pytest.mark.parametrize("bucket_bytes", [1, 64, 300, 10**6])
def test_round_trip_is_bitwise_exact(bucket_bytes):
    src = _tensors()
    buckets = pack_buckets(src, bucket_bytes)
    out = [kv for b in buckets for kv in unpack_bucket(b)]
    assert [n for n, _ in out] == [n for n, _ in src]
    for (_, a), (_, b) in zip(src, out):
        assert _same(a, b)


def test_round_trip_survives_pickle_and_special_floats():
    t = torch.tensor([float("nan"), -0.0, float("inf"), -float("inf"), 1e-45], dtype=torch.float32)
    b = torch.tensor([float("nan"), -0.0, 1.5], dtype=torch.bfloat16)
    buckets = pickle.loads(pickle.dumps(pack_buckets([("t", t), ("b", b)], 1 << 20)))
    (n1, t2), (n2, b2) = list(unpack_bucket(buckets[0]))
    assert (n1, n2) == ("t", "b")
    assert _same(t, t2) and _same(b, b2)


def test_non_contiguous_input_packs_its_values():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    (name, t), = list(unpack_bucket(pack_buckets([("w", base.t())], 1024)[0]))
    assert t.shape == (4, 3) and torch.equal(t, base.t())


def test_bucket_counts_and_layout():
    # 4 float32 tensors of 16 elements = 64 bytes each (already aligned).
    ts = [(f"w{i}", torch.full((16,), float(i))) for i in range(4)]
    assert len(pack_buckets(ts, 64)) == 4
    assert len(pack_buckets(ts, 127)) == 4
    assert len(pack_buckets(ts, 128)) == 2
    assert len(pack_buckets(ts, 192)) == 2  # 3 + 1
    assert [len(b) for b in pack_buckets(ts, 192)] == [3, 1]
    assert len(pack_buckets(ts, 256)) == 1
    b = pack_buckets(ts, 256)[0]
    assert b.offsets == [0, 64, 128, 192] and b.nbytes == 256
    assert isinstance(b.data, np.ndarray) and b.data.dtype == np.uint8 and b.data.ndim == 1


def test_alignment_padding_counts_toward_the_limit():
    # 4 bytes, then 4 bytes at offset ALIGN: the second fits only when ALIGN + 4 <= bucket_bytes.
    ts = [("a", torch.ones(1)), ("b", torch.ones(1))]
    assert len(pack_buckets(ts, ALIGN + 3)) == 2
    one = pack_buckets(ts, ALIGN + 4)
    assert len(one) == 1 and one[0].offsets == [0, ALIGN]


def test_oversized_tensor_gets_its_own_bucket():
    ts = [("small", torch.ones(4)), ("big", torch.ones(1000)), ("small2", torch.ones(4))]
    buckets = pack_buckets(ts, 100)
    assert [b.names for b in buckets] == [["small"], ["big"], ["small2"]]
    assert buckets[1].nbytes == 4000


def test_iter_buckets_is_lazy():
    consumed = []

    def gen():
        for i in range(6):
            consumed.append(i)
            yield f"w{i}", torch.ones(16)  # 64 bytes

    it = iter_buckets(gen(), 128)
    first = next(it)
    assert first.names == ["w0", "w1"] and consumed == [0, 1, 2]


def test_device_option_gives_a_tensor():
    (b,) = pack_buckets([("w", torch.arange(5.0))], 1024, device="cpu")
    assert isinstance(b.data, torch.Tensor) and b.data.dtype == torch.uint8
    assert torch.equal(dict(unpack_bucket(b))["w"], torch.arange(5.0))


def test_copy_option_owns_memory():
    (b,) = pack_buckets([("w", torch.arange(5.0))], 1024)
    (_, view), = list(unpack_bucket(b))
    (_, owned), = list(unpack_bucket(b, copy=True))
    b.data[:] = 0
    assert torch.equal(view, torch.zeros(5)) and torch.equal(owned, torch.arange(5.0))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="bucket_bytes"):
        pack_buckets([("w", torch.ones(1))], 0)
    with pytest.raises(ValueError, match="'w' appears twice"):
        pack_buckets([("w", torch.ones(1)), ("w", torch.ones(1))], 100)
    with pytest.raises(TypeError, match="'x' is a list"):
        pack_buckets([("x", [1.0])], 100)
    with pytest.raises(ValueError, match="no data"):
        list(unpack_bucket(pack_buckets([("w", torch.ones(1))], 100)[0].meta()))
    broken = Bucket(["w"], [(10,)], ["float32"], [0], np.zeros(8, dtype=np.uint8))
    with pytest.raises(ValueError, match="'w' needs bytes"):
        list(unpack_bucket(broken))
    with pytest.raises(ValueError, match="unknown dtype"):
        list(unpack_bucket(Bucket(["w"], [(1,)], ["floaty"], [0], np.zeros(8, dtype=np.uint8))))


def test_staging_buffer_is_reused_and_round_trips():
    staging = np.full(256, 7, dtype=np.uint8)
    ts = [("a", torch.arange(3.0)), ("b", torch.arange(40.0)), ("c", torch.arange(100.0))]
    seen = []
    for b in iter_buckets(ts, 200, staging=staging):
        shares = np.shares_memory(b.data, staging)
        seen.append((b.names, shares, [t.clone() for _, t in unpack_bucket(b)]))
    # a+b (12 + pad 4 + 160 bytes) fit the staging buffer; c (400 bytes) does not.
    assert [(n, s) for n, s, _ in seen] == [(["a", "b"], True), (["c"], False)]
    assert [t.tolist() for t in seen[0][2]] == [list(range(3)), list(range(40))]
    assert staging[12:16].tolist() == [0, 0, 0, 0]  # the alignment gap is zeroed, not stale
    with pytest.raises(ValueError, match="staging"):
        list(iter_buckets(ts, 200, staging=np.zeros(4, dtype=np.float32)))


# ---- layer-aligned plans, and the two-buffer NCCL stream (communicator replaced) ----------------

def _qwen_like(layers=3, hidden=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = [("model.embed_tokens.weight", torch.randn(20, hidden, generator=g))]
    for i in range(layers):
        for part, shape in (("self_attn.q_proj", (hidden, hidden)), ("self_attn.k_proj", (4, hidden)),
                            ("input_layernorm", (hidden,)), ("mlp.down_proj", (hidden, 12))):
            out.append((f"model.layers.{i}.{part}.weight", torch.randn(*shape, generator=g)))
    out += [("model.norm.weight", torch.randn(hidden, generator=g)),
            ("lm_head.weight", torch.randn(20, hidden, generator=g).to(torch.bfloat16))]
    return out


@pytest.mark.parametrize("bucket_bytes", [1, 300, 700, 1500, 10**6])
def test_plan_equals_the_packed_tables_and_layers_never_straddle(bucket_bytes):
    from nous_ray.weight_sync.buckets import layer_key, plan_buckets

    src = _qwen_like()
    packed = pack_buckets(src, bucket_bytes)
    plan = plan_buckets([(n, tuple(t.shape), t.dtype) for n, t in src], bucket_bytes)
    assert [b.meta() for b in packed] == plan
    home: dict = {}
    for i, b in enumerate(plan):
        for n in b.names:
            if layer_key(n):
                assert home.setdefault(layer_key(n), i) == i, (n, bucket_bytes)
        # Past the limit only when the bucket is one layer (or one tensor) alone.
        if packed[i].nbytes > bucket_bytes:
            assert len({layer_key(n) or n for n in b.names}) == 1


def test_layer_split_by_hand():
    from nous_ray.weight_sync.buckets import layer_key, plan_buckets

    # embed 640 B; a layer 256 + 128 + 32 + 384 = 800 B (aligned); norm 32 B; bf16 head 320 B.
    metas = [(n, tuple(t.shape), t.dtype) for n, t in _qwen_like()]
    plan = plan_buckets(metas, 800)
    assert [[layer_key(n) or n for n in b.names] for b in plan] == [
        ["model.embed_tokens.weight"], ["model.layers.0"] * 4, ["model.layers.1"] * 4, ["model.layers.2"] * 4,
        ["model.norm.weight", "lm_head.weight"]]
    assert plan[4].offsets == [0, 32]
    # One byte less and a layer no longer fits any bucket: each layer goes alone, over the limit.
    assert [len(b) for b in plan_buckets(metas, 799)] == [1, 4, 4, 4, 2]
    assert [len(b) for b in plan_buckets(metas, 2000)] == [1 + 4, 4 + 4 + 2]


def _recorder(sources):
    """A communicator that fills each broadcast buffer with the next source bucket's bytes."""
    class Comm:
        def __init__(self):
            self.calls, self.buffers, self.log = 0, set(), []

        def broadcast(self, tensor, src, stream=None):
            tensor.copy_(torch.from_numpy(sources[self.calls]))
            self.buffers.add(tensor.untyped_storage().data_ptr())
            self.log.append(("recv", self.calls))
            self.calls += 1
    return Comm()


def test_receive_streams_through_two_reused_buffers():
    from nous_ray.weight_sync.buckets import bucket_nbytes
    from nous_ray.weight_sync.nccl import BucketBuffers, receive_tensors

    src = _qwen_like(layers=5)
    packed = pack_buckets(src, 800)
    plan = [b.meta() for b in packed]
    comm = _recorder([b.data.copy() for b in packed])
    buffers = BucketBuffers(max(bucket_nbytes(t) for t in plan), "cpu")
    got = []
    for name, t in receive_tensors(comm, plan, buffers):
        comm.log.append(("load", name))
        got.append((name, t.clone()))
        del t
    assert [n for n, _ in got] == [n for n, _ in src]
    assert all(_same(a, b) for (_, a), (_, b) in zip(got, src))
    assert comm.calls == len(plan) >= 7 and len(comm.buffers) == 2
    assert buffers.allocated_bytes == 2 * buffers.nbytes and buffers.replaced == 0
    # Each bucket arrives one ahead of the loads: bucket i right after bucket i - 1's first tensor loaded.
    for i in range(1, len(plan)):
        assert comm.log[comm.log.index(("recv", i)) - 1] == ("load", plan[i - 1].names[0])


def test_a_buffer_still_viewed_is_not_overwritten():
    from nous_ray.weight_sync.nccl import BucketBuffers, receive_tensors

    src = _qwen_like(layers=4)
    packed = pack_buckets(src, 800)
    plan = [b.meta() for b in packed]
    for holds, fresh in ((None, True), (lambda buf: False, False)):
        buffers = BucketBuffers(max(b.nbytes for b in packed), "cpu", holds=holds)
        kept = None
        for name, t in receive_tensors(_recorder([b.data.copy() for b in packed]), plan, buffers):
            if name == "model.layers.0.input_layernorm.weight":
                kept = t  # a consumer that keeps a tensor of bucket 1 past its bucket
            del t
        want = dict(src)["model.layers.0.input_layernorm.weight"]
        assert buffers.replaced == (1 if fresh else 0)
        # Without a say from the consumer the buffer is left to the kept tensor, which stays intact;
        # a consumer that declares it done with it gets the buffer overwritten.
        assert torch.equal(kept, want) == fresh


def test_send_fills_two_buffers_in_turn_with_the_packed_bytes():
    from nous_ray.weight_sync.buckets import bucket_nbytes, unpack_bucket
    from nous_ray.weight_sync.nccl import BucketBuffers, send_buckets

    src = dict(_qwen_like(layers=5))
    packed = pack_buckets(src.items(), 800)
    plan = [b.meta() for b in packed]

    class Comm:
        sent, buffers = [], set()

        def broadcast(self, tensor, src, stream=None):
            self.buffers.add(tensor.untyped_storage().data_ptr())
            self.sent.append(tensor.numpy().copy())

    def fill(table, out):  # what a learner's gather does: write each tensor in place
        for (name, view) in unpack_bucket(Bucket(table.names, table.shapes, table.dtypes, table.offsets, out)):
            view.copy_(src[name])

    comm = Comm()
    buffers = BucketBuffers(max(bucket_nbytes(t) for t in plan), "cpu")
    buffers.take(0).fill_(0xAB)  # stale bytes from an earlier sync must not leak into the gaps
    buffers.take(1).fill_(0xAB)
    assert send_buckets(comm, plan, fill, buffers) == sum(b.nbytes for b in packed)
    assert len(comm.buffers) == 2 and buffers.allocated_bytes == 2 * buffers.nbytes
    assert all(np.array_equal(a, b.data) for a, b in zip(comm.sent, packed))
