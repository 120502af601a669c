"""``vtr.lightning_cli``: the suite's LightningCLI on Lightning's public hooks only.

Checkpoints load weights-only (``--weights_only false`` refused); with ``--ckpt_path`` the model's test-time arguments,
which each method declares (``test_time_args``), come from the command line and every other argument from the
checkpoint. A checkpoint's class paths are checked before anything it names is imported: ``tests/test_security.py``
(finding 2, ``main.py --ckpt_path``) plants a class and checks it never runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from jsonargparse import Namespace

from lightning_modules import CLIP4Clip, ConicalEmbedding, ExCae
from lightning_modules.base import BaseRetrievalModule
from lightning_modules.captioning import Captioner
from main import main
from tests.run_helpers import TINY_CLIP4CLIP, csv_logger
from vtr.lightning_cli import _load_weights_only, model_test_time_args

BASE_TEST_TIME = ("postprocess", "dsl_temperature", "qbnorm_beta", "qbnorm_topk", "qbnorm_bank_size")


class NotedCLIP4Clip(CLIP4Clip):
    """A method of a user's own package with a test-time argument of its own: ``report_note``, a label its test
    writes into metrics.json (with ``lr``, an ordinary argument, to see where each value came from)."""

    test_time_args: ClassVar[tuple[str, ...]] = (*CLIP4Clip.test_time_args, "report_note")

    def __init__(self, report_note: str = "plain", **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def test_record(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {**super().test_record(metrics), "report_note": self.hparams.report_note, "lr": self.hparams.lr}


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def test_each_method_declares_its_test_time_arguments() -> None:
    assert BaseRetrievalModule.test_time_args == BASE_TEST_TIME
    assert model_test_time_args(_path(CLIP4Clip)) == BASE_TEST_TIME  # inherits the post-processing ones
    assert model_test_time_args(_path(ExCae)) == (*BASE_TEST_TIME, "eval_routing")
    assert model_test_time_args(_path(ConicalEmbedding)) == (*BASE_TEST_TIME, "test_supplement", "report_supplements",
                                                          "per_candidate_batch")
    assert model_test_time_args(_path(NotedCLIP4Clip)) == (*BASE_TEST_TIME, "report_note")
    assert model_test_time_args(_path(Captioner)) == ()  # a LightningModule that declares none


def test_checkpoints_load_weights_only_and_false_is_refused() -> None:
    config = Namespace(weights_only=None, ckpt_path="run/last.ckpt")
    _load_weights_only(config)
    assert config.weights_only is True
    with pytest.raises(ValueError, match=r"--weights_only false: .*re-save"):
        _load_weights_only(Namespace(weights_only=False, ckpt_path=None))
    with pytest.raises(RuntimeError, match="weights_only"):  # a Lightning whose Trainer methods cannot be told
        _load_weights_only(Namespace(ckpt_path="run/last.ckpt"))


def test_a_methods_own_test_time_argument_comes_from_the_command_line(fake_msrvtt: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained with ``report_note: trained``; ``test --ckpt_path`` reports the command line's note (given, or its
    default), while an ordinary argument (``lr``) stays the checkpoint's whatever the command line says."""
    monkeypatch.setenv("VTR_EXTRA_CLASS_PACKAGES", "tests.vtr")  # the user's package, allowed in checkpoints
    common = ["--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt),
              "--model.class_path", _path(NotedCLIP4Clip), "--trainer.enable_progress_bar", "false"]
    fit = main(["fit", *common, "--model.init_args.report_note", "trained", "--trainer.max_epochs", "1",
                "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0", "--test_after_fit", "false",
                "--trainer.logger", csv_logger(tmp_path, "fit")])
    ckpt = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"

    def test(name: str, *extra: str) -> dict[str, Any]:
        cli = main(["test", *common, "--ckpt_path", str(ckpt), "--trainer.logger", csv_logger(tmp_path, name),
                    "--model.init_args.lr", "0.5", *extra])
        assert isinstance(cli.model, NotedCLIP4Clip)
        return json.loads((Path(cli.trainer.log_dir) / "test" / "metrics.json").read_text())

    given = test("given", "--model.init_args.report_note", "retested")
    assert given["report_note"] == "retested" and given["lr"] == pytest.approx(1e-3)  # lr: the checkpoint's
    assert test("default")["report_note"] == "plain"  # not the checkpoint's "trained": a test-time argument
