"""``python -m experiments.care_dpo --config configs/care_dpo/synthvtr.yaml [--seed 1] [--dgdpo.groups '[intra]']``

Runs one seed of CaRe-DPO's pipeline (``experiments/care_dpo/pipeline.py``: SFT -> captions -> scorer -> sample ->
score -> DG-DPO -> captions -> retrievers -> summary) and prints the summary's table. Every key of the YAML is a
flag (``--sampling.num_samples 8``, ``--scoring.relevance rank``, ``--dgdpo.beta 0.1``). Under the local sweep runner
(``python -m experiments.sweep experiments/sweeps/care_dpo_*.yaml``) the runner's ``--trainer.logger`` names the
run folder: ``out`` goes there and the headline retriever's test metrics land in ``version_0/test/metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from jsonargparse import CLI

from experiments.care_dpo.pipeline import DGDPO, Pipeline, Role, Sampling, Scoring, copy_for_sweep


def run(sft_config: str | list[str], dgdpo_config: str | list[str], caption_config: str | list[str],
        retriever_config: str | list[str], sample_config: str | list[str], score_config: str | list[str],
        work: str = "runs/care_dpo/work", out: str = "runs/care_dpo/out",
        seed: int = 0, zero_shot_captions: str | None = None, data_config: str | list[str] | None = None,
        sampling: Sampling | None = None, scoring: Scoring | None = None,
        dgdpo: DGDPO | None = None, sources: list[str] | None = None, roles: list[Role] | None = None,
        role_ablation_sources: list[str] | None = None, headline: str = "dgdpo-role",
        overrides: dict[str, list[str]] | None = None, trainer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the pipeline for one seed.

    Args:
        sft_config: ``main.py fit`` config(s) of the SFT captioner (a list is composed in order, as ``--config``s).
        dgdpo_config: ``main.py fit`` config(s) of DG-DPO (``PreferenceDataModule``).
        caption_config: ``main.py predict`` config(s) that caption every video with a ``TrainedCaptioner``.
        retriever_config: ``main.py fit`` config(s) of the ``CaReRetriever`` (their data section is the dataset the
            sampling, scoring and caption measures read).
        sample_config: ``main.py predict`` config(s) of the sampling stage (``CaptionSampler``): its trainer's
            accelerator, devices and precision (DG-DPO's precision) run the sampling.
        score_config: ``main.py predict`` config(s) of the scoring stage (``PreferenceScorer``).
        data_config: when given, the dataset's data config(s): DG-DPO's ``PreferenceDataModule`` wraps their data
            section (so the DG-DPO config needs none of its own).
        work: folder of the shared stage outputs (keyed by their settings; ``seed<N>`` inside).
        out: folder of this run's ``summary.json``.
        seed: seed of every stage.
        zero_shot_captions: captions of a zero-shot captioner (the ``zero_shot`` source), relative to the data root
            unless absolute.
        sampling: stage 4 settings.
        scoring: stage 5 settings.
        dgdpo: stage 6 settings.
        sources: caption sources a retriever is trained and tested on (``zero_shot``, ``sft``, ``dgdpo``).
        roles: ``role`` and/or ``norole`` retrievers for every source.
        role_ablation_sources: sources that get both.
        headline: the ``<source>-<role>`` run the sweep runner reports.
        overrides: extra ``main.py`` arguments per stage (``sft``, ``dgdpo``, ``caption``, ``retriever``, ``sample``,
            ``score``).
        trainer: only ``{"logger": [...]}`` from the local sweep runner.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logger_dir = None
    if trainer and trainer.get("logger"):
        spec = trainer["logger"][0] if isinstance(trainer["logger"], list) else trainer["logger"]
        args = spec.get("init_args", {})
        logger_dir = Path(args["save_dir"]) / args["name"]
        out = str(logger_dir)
    pipeline = Pipeline(sft_config, dgdpo_config, caption_config, retriever_config, work=work, out=out, seed=seed,
                        zero_shot_captions=zero_shot_captions, data_config=data_config,
                        sample_config=sample_config, score_config=score_config, sampling=sampling,
                        scoring=scoring, dgdpo=dgdpo,
                        sources=sources, roles=roles, role_ablation_sources=role_ablation_sources,
                        overrides=overrides)
    if headline not in pipeline.retriever_runs():
        raise ValueError(f"headline {headline!r} is not a retriever this run trains ({pipeline.retriever_runs()}): add "
                         "its caption source to --sources (a -norole run: to --role_ablation_sources)")
    summary = pipeline.run()
    if logger_dir is not None:
        copy_for_sweep(summary, headline, logger_dir)
    print(table(summary))
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = [f"seed {summary['seed']}: {summary['wall_s']} s (skipped: {', '.join(summary['skipped_stages']) or '-'})",
             "retriever            t2v R@1   v2t R@1"]
    nan = float("nan")
    for name, metrics in summary["retrieval"].items():
        lines.append(f"{name:<20} {metrics.get('t2v_R1', nan):8.2f} {metrics.get('v2t_R1', nan):8.2f}")
    lines.append("captions   caption_r1  family_r1  attr_prec  attr_rec")
    for name, q in summary["captions"].items():
        lines.append(f"{name:<10} {q['caption_r1']:10.2f} {q.get('family_r1', nan):10.2f} "
                     f"{q.get('attribute_precision') or nan:10.3f} {q.get('attribute_recall') or nan:9.3f}")
    return "\n".join(lines)


def cli() -> None:
    CLI(run, as_positional=False)
