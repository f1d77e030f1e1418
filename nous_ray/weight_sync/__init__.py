"""Moving a learner's weights to the rollout engines: bucketing and transports."""

from nous_ray.weight_sync.buckets import Bucket, iter_buckets, pack_buckets, plan_buckets, unpack_bucket
from nous_ray.weight_sync.object_store import BucketPublisher, HeldBytes, fetch_buckets, put_filled

__all__ = ["Bucket", "BucketPublisher", "HeldBytes", "fetch_buckets", "iter_buckets", "pack_buckets",
           "plan_buckets", "put_filled", "unpack_bucket"]
