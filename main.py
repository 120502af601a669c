"""vtr command line: ``python main.py {fit,validate,test,predict} --config configs/...yaml``.

LightningCLI in subclass mode: ``model`` is any ``LightningModule`` subclass (the retrieval methods, all
``BaseRetrievalModule`` subclasses, and the ``Captioner`` that ``predict`` runs to generate captions) and
``data`` any ``LightningDataModule`` subclass (the shipped datasets are ``VideoTextDataModule`` subclasses), named
by class name in YAML (``class_path: CLIP4Clip``, ``class_path: MSRVTT``).
``fit`` ends with a test of the best checkpoint (``--test_after_fit false`` turns it off), so a training
run leaves its test artifacts in ``<trainer.default_root_dir>/test``.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lightning as L
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

import datamodules.registry  # noqa: F401  (registers the data modules for short class names)
import lightning_modules  # noqa: F401  (registers the methods for short class names)
from callbacks import LoggerSaveConfigCallback


class VTRCLI(LightningCLI):
    """LightningCLI with ``--test_after_fit``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="after fit, test the best checkpoint (or the last weights if none)")

    def after_fit(self) -> None:
        if not self.config[self.subcommand].get("test_after_fit", True):
            return
        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def main(args: ArgsType = None) -> VTRCLI:
    """Entry point; ``args`` lets tests run the CLI in-process (``main(["fit", "--config", ...])``)."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    cli = VTRCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                 save_config_callback=LoggerSaveConfigCallback, save_config_kwargs={"overwrite": True},
                 seed_everything_default=0, args=args)
    _finish_wandb()
    return cli


def _finish_wandb() -> None:
    """Close the W&B run of this invocation, so the next in-process run (tests, demo, local sweeps) gets its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


if __name__ == "__main__":
    main()
