"""The LightningCLI of ``vtr {fit,validate,test,predict} --config configs/...yaml`` (also ``python main.py ...`` in a
checkout, and ``python -m vtr ...``).

LightningCLI in subclass mode: ``model`` is any ``LightningModule`` subclass (the retrieval methods, all
``BaseRetrievalModule`` subclasses, and the ``Captioner`` that ``predict`` runs to generate captions) and
``data`` any ``LightningDataModule`` subclass (the shipped datasets are ``VideoTextDataModule`` subclasses), named
by class name in YAML (``class_path: CLIP4Clip``, ``class_path: MSRVTT``).
``fit`` ends with a test of the best checkpoint (``--test_after_fit false`` turns it off), so a training
run leaves its test artifacts in ``<trainer.default_root_dir>/test``.
A ``--config configs/...`` that does not exist under the current directory is read from the shipped configs
(``vtr.resources``), so the shipped commands run from any directory.

``fit --ckpt_path <run dir>/checkpoints/last.ckpt`` resumes *that* run: the loggers reopen its version
directory (and W&B run id), the rows ``metrics.csv`` had before the checkpoint are kept, and the
``ExactResume`` callback (always added) restores every RNG, so the result equals an uninterrupted run.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

import datamodules.registry  # noqa: F401  (registers the data modules for short class names)
import lightning_modules  # noqa: F401  (registers the methods for short class names)
from callbacks import LoggerSaveConfigCallback
from callbacks.exact_resume import ExactResume, keep_csv_rows_before, read_resume_info, resume_logger_overrides
from lightning_modules.cli_hyperparameters import building_from_config
from lightning_modules.provenance import source_state
from lightning_modules.safe_load import check_checkpoint
from vtr.resources import resolve_config_args

log = logging.getLogger(__name__)


class VTRCLI(LightningCLI):
    """LightningCLI with ``--test_after_fit``, resuming into the checkpoint's own run directory, checkpoints always
    loaded weights-only and their class paths checked, and a method's test-time arguments taken from the command line.

    Only LightningCLI's public hooks are overridden (``parse_arguments``, ``add_arguments_to_parser``,
    ``before_instantiate_classes``, ``instantiate_classes``, ``before_fit``, ``after_fit``).
    """

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse the command line; with ``--ckpt_path``, check the checkpoint before LightningCLI reads it.

        Right after this method LightningCLI applies the checkpoint's hyper-parameters on top of the parsed model
        arguments, which imports and later instantiates the classes the checkpoint names: a checkpoint may come from
        someone else, so it is loaded weights-only and every class path checked (allow-list, base class) here first.
        The command line's model arguments are kept, so that ``before_instantiate_classes`` can put the test-time
        ones back over the checkpoint's.
        """
        super().parse_arguments(parser, args)
        self._command_line_model_args: dict[str, Any] = {}
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if ckpt_path and Path(ckpt_path).is_file():
            check_checkpoint(ckpt_path, L.LightningModule)
        model = self.config[subcommand].get("model")
        init_args = model.get("init_args") if model is not None else None
        if init_args is not None:
            self._command_line_model_args = copy.deepcopy(dict(vars(init_args)))

    def instantiate_classes(self) -> None:
        """LightningCLI's instantiation, marked as building from a config: a module then keeps its object arguments'
        configs (backbone, captioner) in its hyper-parameters (``lightning_modules/cli_hyperparameters.py``)."""
        with building_from_config():
            super().instantiate_classes()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="after fit, test the best checkpoint (or the last weights if none)")
        parser.add_argument("--checkpoint_every_n_train_steps", type=int | None, default=None,
                            help="also rewrite <run dir>/checkpoints/last.ckpt every N optimiser steps, so a long "
                                 "epoch can be resumed part-way (fit --ckpt_path .../last.ckpt)")

    def before_instantiate_classes(self) -> None:
        """Every subcommand: checkpoints load weights-only, and with ``--ckpt_path`` the model's test-time arguments
        are this command line's. ``fit``: add the step checkpoints, and on ``--ckpt_path`` point the loggers at the
        checkpoint's run before they create a new one.

        A new version directory would also move ``ModelCheckpoint``'s ``dirpath``, and Lightning then drops
        the restored ``best_model_score`` ("dirpath has changed"): the final test would use the best of the
        resumed part only.
        """
        self._resume_step: int | None = None
        if self.subcommand is None:
            return
        _load_weights_only(self.config[self.subcommand])
        self._restore_test_time_args(self.config[self.subcommand])
        config = self.config.get(self.subcommand) if self.subcommand == "fit" else None
        if config is None:
            return
        if config.get("checkpoint_every_n_train_steps"):
            _add_step_checkpoints(config.trainer, config.checkpoint_every_n_train_steps)
        if not config.get("ckpt_path"):
            return
        ckpt_path = config.ckpt_path
        info = read_resume_info(ckpt_path)
        if info["global_step"] is None:
            return
        self._resume_step = info["global_step"]
        loggers = config.trainer.get("logger")
        specs = loggers if isinstance(loggers, list) else [loggers] if hasattr(loggers, "get") else []
        described = [(str(spec.get("class_path", "")).rsplit(".", 1)[-1],
                      spec.init_args.as_dict() if spec.get("init_args") is not None else {}) for spec in specs]
        for spec, update in zip(specs, resume_logger_overrides(described, ckpt_path, info), strict=True):
            for key, value in update.items():
                spec.init_args[key] = value
                log.info("resuming %s: %s=%s (from %s)", spec.class_path, key, value, ckpt_path)

    def before_fit(self) -> None:
        if self._resume_step is None or rank_zero_only.rank != 0:
            return
        for logger in self.trainer.loggers:
            if isinstance(logger, CSVLogger):
                kept = keep_csv_rows_before(logger, self._resume_step)
                log.info("resuming %s: kept %d metrics.csv rows logged before step %d", logger.log_dir, kept,
                         self._resume_step)

    def _restore_test_time_args(self, config: Namespace) -> None:
        """With ``--ckpt_path``: the model's test-time arguments (``test_time_args`` of the class being run, the
        checkpoint's or else the config's) take this command line's values (given or default), not the checkpoint's.

        ``test --ckpt_path <ckpt> --model.init_args.postprocess '[dsl]'`` post-processes a run trained without it, and
        a checkpoint trained with the flag is tested without it unless the flag is given again.
        """
        ckpt_path = config.get("ckpt_path")
        model = config.get("model")
        if not ckpt_path or not Path(ckpt_path).is_file() or model is None or model.get("init_args") is None:
            return
        names = model_test_time_args(str(model.class_path))
        for key in names:
            if key in self._command_line_model_args:
                model.init_args[key] = self._command_line_model_args[key]

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, weights_only=True)


def model_test_time_args(class_path: str) -> tuple[str, ...]:
    """The model arguments the class at ``class_path`` declares test-time (``test_time_args``; none for a module that
    declares none, e.g. the captioner). The class is already imported (the parsed config names it)."""
    module_name, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    return tuple(getattr(cls, "test_time_args", ()))


def _load_weights_only(config: Namespace) -> None:
    """Checkpoints are always loaded with ``weights_only=True`` and ``--weights_only false`` is refused.

    Lightning loads ``ckpt_path`` with ``weights_only=None`` by default, i.e. torch's default, which the environment
    variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns off; the suite's checkpoints need nothing but tensors.
    """
    if config.get("weights_only") is False:
        raise ValueError("--weights_only false: checkpoints are always loaded with weights_only=True here (a "
                         "checkpoint may come from someone else and would run code); re-save a checkpoint that "
                         "needs pickled objects with plain tensors instead")
    if "weights_only" in config:
        config["weights_only"] = True
    elif config.get("ckpt_path"):
        raise RuntimeError("this Lightning's Trainer methods take no weights_only argument, so --ckpt_path could not "
                           "be loaded weights-only; install the pinned lightning (requirements.txt)")


def _add_step_checkpoints(trainer_config: Namespace, every_n_train_steps: int) -> None:
    """Append a ``ModelCheckpoint`` that rewrites ``last.ckpt`` every N steps (no other file).

    Every checkpoint callback that saves ``last`` then writes the *same* file, whichever saved most recently
    (Lightning would otherwise name the second writer's copy ``last-v1.ckpt``): ``last.ckpt`` is always the
    newest state, at an epoch end or part-way through an epoch.
    """
    callbacks = trainer_config.get("callbacks") or []
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    for spec in callbacks:
        if str(spec.get("class_path", "")).endswith("ModelCheckpoint") and spec.init_args.get("save_last"):
            spec.init_args["enable_version_counter"] = False
    callbacks.append(Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint",
                               init_args=Namespace(every_n_train_steps=every_n_train_steps, save_top_k=0,
                                                   save_last=True, enable_version_counter=False)))
    trainer_config["callbacks"] = callbacks


def main(args: ArgsType = None) -> VTRCLI:
    """Entry point; ``args`` lets tests run the CLI in-process (``main(["fit", "--config", ...])``)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    source_state()  # the code state metrics.json records: read now, before a long fit can be edited under it
    if args is None:
        # rewritten in place rather than passed as ``args``: LightningCLI warns when both are given, and Lightning's
        # DDP launcher re-runs sys.argv in every further process, which then reads the same (shipped) files
        sys.argv[1:] = resolve_config_args(sys.argv[1:])
    elif isinstance(args, list):
        args = resolve_config_args(args)
    cli = VTRCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                 save_config_callback=LoggerSaveConfigCallback, save_config_kwargs={"overwrite": True},
                 trainer_defaults={"callbacks": [ExactResume()]}, seed_everything_default=0, args=args)
    _finish_wandb()
    return cli


def _finish_wandb() -> None:
    """Close the W&B run of this invocation, so the next in-process run (tests, demo, local sweeps) gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


if __name__ == "__main__":
    main()
