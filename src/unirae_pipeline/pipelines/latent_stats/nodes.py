"""latent_stats: exact per-element mean and variance of the raw training latents (plain and mirrored)."""

from __future__ import annotations

import logging

from ...data.latents import LatentStore
from ...data.moments import RunningMoments
from ...models.serialization import ModelFile

log = logging.getLogger(__name__)


def latent_stats(latents: LatentStore) -> ModelFile:
    moments = RunningMoments()
    for shard in latents.iter_shards("train"):
        moments.update(shard["latents"])
    mean, var = moments.result()
    log.info("statistics of %d latents: mean |mu| %.4f, mean var %.4f", moments.count, mean.abs().mean(), var.mean())
    meta = {"fingerprint": latents.manifest["fingerprint"], "count": moments.count}
    return ModelFile("stats", {"mean": mean, "var": var}, meta)
