"""The training batch: a global batch split over the processes (or a per-device one), and its errors.

The two-process runs that train the same first step on 1 and 2 processes are ``tests/test_global_batch.py`` (slow).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from datamodules import MSRVTT
from datamodules.batching import DEFAULT_PER_DEVICE_BATCH, check_batch_settings, resolve_train_batch
from main import main
from tests.run_helpers import TINY_CLIP4CLIP

KEY = "data.init_args"


@pytest.mark.parametrize("devices,nodes,per_device", [(1, 1, 128), (8, 1, 16), (2, 2, 32), (4, 8, 4)])
def test_global_batch_is_split_over_devices_and_nodes(devices: int, nodes: int, per_device: int) -> None:
    batch = resolve_train_batch(None, 128, devices, nodes, KEY)
    assert (batch.global_batch_size, batch.per_device_batch_size) == (128, per_device)
    assert (batch.world_size, batch.num_devices, batch.num_nodes) == (devices * nodes, devices, nodes)
    assert batch.set_by == "data.init_args.global_batch_size"


def test_per_device_batch_multiplies_with_the_world_size() -> None:
    batch = resolve_train_batch(16, None, 4, 2, KEY)
    assert (batch.global_batch_size, batch.per_device_batch_size, batch.world_size) == (128, 16, 8)
    assert batch.set_by == "data.init_args.batch_size"
    default = resolve_train_batch(None, None, 2, 1, KEY)
    assert (default.global_batch_size, default.per_device_batch_size) == (2 * DEFAULT_PER_DEVICE_BATCH,
                                                                          DEFAULT_PER_DEVICE_BATCH)
    assert default.set_by.startswith("default")


def test_world_size_that_does_not_divide_the_global_batch_is_refused_with_both_numbers() -> None:
    with pytest.raises(ValueError, match=r"global_batch_size=64 is not divisible by the world size 6 "
                                         r"\(trainer.devices 3 x trainer.num_nodes 2\)") as info:
        resolve_train_batch(None, 64, 3, 2, KEY)
    assert "[1, 2, 4, 8, 16, 32, 64]" in str(info.value)  # the process counts that would divide it


def test_global_and_per_device_batch_together_are_refused() -> None:
    with pytest.raises(ValueError, match=r"data.init_args.batch_size=16 \(per device\) and "
                                         r"data.init_args.global_batch_size=128 are both set") as info:
        check_batch_settings(16, 128, KEY)
    assert "--data.init_args.global_batch_size null" in str(info.value)  # how to keep the per-device one


@pytest.mark.parametrize("batch_size,global_batch_size,bad", [
    (0, None, "batch_size=0"), (None, -8, "global_batch_size=-8"), (None, True, "global_batch_size=True"),
    (2.0, None, "batch_size=2.0")])
def test_non_positive_or_non_integer_batches_are_refused(batch_size: Any, global_batch_size: Any, bad: str) -> None:
    with pytest.raises(ValueError, match=f"data.init_args.{bad} must be a positive integer"):
        check_batch_settings(batch_size, global_batch_size, KEY)


class _Trainer:
    """The attributes of a Lightning ``Trainer`` the data module reads to split the batch and shard the data."""

    def __init__(self, devices: int, nodes: int = 1, rank: int = 0) -> None:
        self.num_devices, self.num_nodes, self.global_rank = devices, nodes, rank
        self.world_size = devices * nodes
        self.datamodule: Any = None
        # the training loop's position, which the checkpointed loader state records (none trained yet)
        self.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(
            current=SimpleNamespace(processed=0))))
        self.num_training_batches = 1


def _msrvtt(root: Path, **kwargs: Any) -> MSRVTT:
    return MSRVTT(root=str(root), video_dir="videos/all", val_videos=4, num_frames=2, image_size=32, num_workers=0,
                  **kwargs)


def test_data_module_refuses_both_batches_when_built() -> None:
    with pytest.raises(ValueError, match="are both set"):
        _msrvtt(Path("unused"), batch_size=4, global_batch_size=8)


def test_setup_fails_on_an_indivisible_world_before_reading_any_split(tmp_path: Path) -> None:
    (tmp_path / "videos" / "all").mkdir(parents=True)  # no annotation file: reading a split would fail otherwise
    dm = _msrvtt(tmp_path, global_batch_size=8)
    dm.trainer = _Trainer(devices=3)
    dm.trainer.datamodule = dm
    with pytest.raises(ValueError, match=r"global_batch_size=8 is not divisible by the world size 3"):
        dm.setup("fit")


def test_a_wrapped_data_module_does_not_resolve_a_batch_it_does_not_train_with(tmp_path: Path) -> None:
    # DG-DPO's PreferenceDataModule wraps the dataset's module and trains on its own pairs: the dataset config's global
    # batch must not fail a world size it does not divide
    (tmp_path / "videos" / "all").mkdir(parents=True)
    dm = _msrvtt(tmp_path, global_batch_size=8)
    dm.trainer = _Trainer(devices=3)
    dm.trainer.datamodule = object()  # another module feeds the training loop
    with pytest.raises(FileNotFoundError):  # it goes on to read the (absent) annotations: no batch error
        dm.setup("fit")
    assert dm.train_batch is None


def test_each_rank_takes_its_share_and_a_step_holds_the_single_process_items(fake_msrvtt: Path) -> None:
    """Per-device batch = global / world size, and the two ranks' first batches together are the single process's
    first batch (the same consecutive positions of one seeded permutation), so the contrastive loss of the gathered
    batch is the same loss."""
    first_batches: dict[int, list[set[int]]] = {}
    for world in (1, 2):
        first_batches[world] = []
        for rank in range(world):
            dm = _msrvtt(fake_msrvtt, global_batch_size=4)
            dm.trainer = _Trainer(devices=world, rank=rank)
            dm.trainer.datamodule = dm
            dm.setup("fit")
            loader = dm.train_dataloader()
            assert loader.batch_size == 4 // world
            assert dm.train_batch is not None and dm.train_batch.facts() == {
                "global_batch_size": 4, "per_device_batch_size": 4 // world, "world_size": world, "num_devices": world,
                "num_nodes": 1, "set_by": "data.init_args.global_batch_size"}
            keys = list(loader.sampler)[:loader.batch_size]  # type: ignore[arg-type]
            first_batches[world].append({(key.position, key.index) for key in keys})
            assert dm.state_dict()["train_batch"]["per_device_batch_size"] == 4 // world  # checkpointed
    assert set().union(*first_batches[2]) == first_batches[1][0]
    assert {position for position, _ in first_batches[1][0]} == {0, 1, 2, 3}


def test_cli_refuses_a_per_device_batch_on_a_config_with_a_global_one(fake_msrvtt: Path, tmp_path: Path) -> None:
    # the tiny config sets batch_size 4; a global batch on top of it is a contradiction the user must resolve
    with pytest.raises(ValueError, match=r"batch_size=4 \(per device\) and data.init_args.global_batch_size=8"):
        main(["fit", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt),
              "--data.init_args.global_batch_size", "8", "--trainer.default_root_dir", str(tmp_path)])
