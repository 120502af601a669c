"""The training batch of a run: a global batch split over the processes, or a per-device batch.

Every retrieval method here computes its contrastive loss on the batch all-gathered across processes, so the number
of in-batch negatives - and with it the experiment - is the *global* batch. A config that fixes the per-device batch
trains one experiment on 1 GPU and another, with an 8x larger batch, on 8. ``global_batch_size`` fixes the global
batch instead; the per-device batch is derived from the world size when the run starts (global / (devices x nodes)),
and a world size that does not divide it is an error naming both numbers. ``batch_size`` remains for a per-device
setting (quick runs, a machine whose memory sets the limit); the two cannot both be set, and the run records which
one fixed its batch.

With a global batch the items of each optimiser step do not depend on the number of processes either:
``datamodules.sampling.ResumableSampler`` gives rank ``r`` the positions ``r, r + W, r + 2W, ...`` of one seeded
permutation, so the ``W`` per-device batches of a step together hold the same consecutive positions of that
permutation as the single process's batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# the per-device batch when a config sets neither key (the data module's historical default)
DEFAULT_PER_DEVICE_BATCH = 64


@dataclass(frozen=True)
class TrainBatch:
    """What a run trains with: the global batch, its split over the processes and the setting that fixed it."""

    global_batch_size: int
    per_device_batch_size: int
    world_size: int
    num_devices: int
    num_nodes: int
    set_by: str  # the config key (or the default) that fixed the batch

    def facts(self) -> dict[str, Any]:
        return asdict(self)


def _positive(key: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key}={value!r} must be a positive integer (or null)")


def check_batch_settings(batch_size: int | None, global_batch_size: int | None, prefix: str) -> None:
    """Refuse a per-device and a global batch set together, and non-positive values; ``prefix`` names the config
    section (``data.init_args``) in the message."""
    _positive(f"{prefix}.batch_size", batch_size)
    _positive(f"{prefix}.global_batch_size", global_batch_size)
    if batch_size is not None and global_batch_size is not None:
        raise ValueError(
            f"{prefix}.batch_size={batch_size} (per device) and {prefix}.global_batch_size={global_batch_size} are "
            "both set; set one of them: the global batch is split over devices x nodes when the run starts, the "
            "per-device batch is multiplied by them. To train with a per-device batch on a config that states a "
            f"global one, add --{prefix}.global_batch_size null (the run then depends on the number of devices)")


def resolve_train_batch(batch_size: int | None, global_batch_size: int | None, num_devices: int, num_nodes: int,
                        prefix: str, default: int = DEFAULT_PER_DEVICE_BATCH) -> TrainBatch:
    """The run's ``TrainBatch`` on ``num_devices`` x ``num_nodes`` processes.

    ``global_batch_size`` set: per-device = global / world size, an error when it does not divide. ``batch_size``
    set: global = per-device x world size. Neither: ``default`` per device.
    """
    check_batch_settings(batch_size, global_batch_size, prefix)
    world = num_devices * num_nodes
    if num_devices < 1 or num_nodes < 1:
        raise ValueError(f"world size {num_devices} devices x {num_nodes} nodes: both must be at least 1")
    if global_batch_size is None:
        per_device = batch_size if batch_size is not None else default
        set_by = f"{prefix}.batch_size" if batch_size is not None else f"default ({default} per device)"
        return TrainBatch(per_device * world, per_device, world, num_devices, num_nodes, set_by)
    if global_batch_size % world:
        fitting = [n for n in range(1, min(global_batch_size, 64) + 1) if global_batch_size % n == 0]
        raise ValueError(
            f"{prefix}.global_batch_size={global_batch_size} is not divisible by the world size {world} "
            f"(trainer.devices {num_devices} x trainer.num_nodes {num_nodes}): every process takes an equal share "
            f"of the global batch. Run on a number of processes that divides it ({fitting}), or set a global batch "
            f"that is a multiple of {world} (which changes the experiment)")
    return TrainBatch(global_batch_size, global_batch_size // world, world, num_devices, num_nodes,
                      f"{prefix}.global_batch_size")
