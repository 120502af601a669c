"""datamodules.sampling: the training order is a function of (seed, epoch), sharded as DistributedSampler shards it,
and a resumed epoch skips what the interrupted one consumed. The whole kill-and-resume run is in tests/test_resume.py.
"""

from __future__ import annotations

from datamodules.sampling import ResumableSampler, SampleKey


def test_sampler_shards_like_distributed_sampler_and_skips_on_resume():
    from torch.utils.data import DistributedSampler

    data = list(range(10))
    for rank in range(3):
        ours = ResumableSampler(data, num_replicas=3, rank=rank, seed=7)  # type: ignore[arg-type]
        theirs = DistributedSampler(data, num_replicas=3, rank=rank, seed=7)  # type: ignore[arg-type]
        for epoch in (0, 1):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            keys = list(ours)
            assert [k.index for k in keys] == list(theirs)
            assert all(isinstance(k, SampleKey) and k.epoch == epoch for k in keys)
    sampler = ResumableSampler(data, seed=3)  # type: ignore[arg-type]
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume(2, skip_samples=4)
    assert list(sampler) == full[4:] and len(sampler) == 10  # the length stays the epoch's
    sampler.set_epoch(3)
    assert len(list(sampler)) == 10
    # the per-item RNG depends on (seed, epoch, position) only
    assert full[5].rng().integers(1 << 30) == SampleKey(99, 3, 2, 5).rng().integers(1 << 30)
