"""ExCae's caption self-improvement (CSI, arXiv 2502.02885 §3.1 and supplementary A), as a resumable command.

    python -m experiments.csi --config configs/csi/synthvtr.yaml [--out runs/csi/synthvtr] [--max_rounds 40]

Three roles: a **captioner** (any caption backend: an OpenAI-compatible VLM API such as GPT-4o, a transformers
VLM, the SynthVTR simulated captioner) writes ``num_captions`` captions for each video of a fixed probe set of
training videos from the current prompt; the **evaluator** ψ (a sentence-embedding model) scores them against
the videos' ground-truth texts (similarity + diversity, ``experiments/csi/score.py``, Eq. 1 reconstructed); a
**prompt engineer** (an LLM, or the random-mutation baseline, ``experiments/csi/engineers.py``) proposes the
next prompt from the scored history. Round 0 scores ``initial_prompt`` (ExCae's "Generate 10 captions from
different perspectives about this video."). A proposal enters the candidate pool only when its score beats every
earlier score (the paper's rule); the loop stops after ``patience`` rounds in a row without a new candidate or
after ``max_rounds`` rounds.

Everything lands in ``out``: ``settings.json`` (what the run is), ``rounds.jsonl`` (one line per finished round:
prompt, score, its similarity and diversity terms, accepted, best score so far, example captions), and at the
end ``best_prompt.txt`` (what ``main.py predict`` reads through ``model.init_args.prompt_file``),
``summary.json`` (with the code and machine it ran on: ``lightning_modules.provenance``), ``candidates.json`` (the
candidate pool as a table) and ``score_vs_round.png``; with
``wandb_project`` set, the rounds as a W&B table (offline unless ``WANDB_MODE`` says otherwise). A killed run
restarted with the same command continues after its last finished round and ends where an uninterrupted run ends
(engineers are seeded per round; the captioner and evaluator are deterministic, or seeded, given the prompt).
Restarting with other settings in the same ``out`` is refused.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Literal

from jsonargparse import CLI

import datamodules.registry  # noqa: F401  (short class names for data modules)
import lightning_modules.captioning  # noqa: F401  (short class names for caption backends and text generators)
from datamodules.atomic import write_text_atomic
from datamodules.base import VideoTextDataModule
from datamodules.batch import VideoBatch
from datamodules.jsonl import (
    MalformedFileError,
    read_json_file,
    read_jsonl_lines,
    repair_torn_tail,
    replace_lone_surrogates,
)
from datamodules.lineage import write_sidecar
from experiments.csi.engineers import (
    LLMPromptEngineer,
    ProbeExample,
    PromptEngineer,
    RandomMutation,
    RoundContext,
    ScoredPrompt,
)
from experiments.csi.score import CaptionScore, SentenceEmbedder, caption_score
from lightning_modules.captioning.backends.base import CaptionBackend
from lightning_modules.captioning.captioner import EXCAE_PROMPT, Captioner

__all__ = ["LLMPromptEngineer", "RandomMutation", "run_csi"]

EXAMPLE_VIDEOS = 2      # probe videos whose captions each round record shows
EXAMPLE_CAPTIONS = 3


class CSIError(ValueError):
    """Bad settings or a bad output folder; the message says what to do."""


def _probe_set(data: VideoTextDataModule, size: int, seed: int) -> tuple[list[str], dict[str, list[str]]]:
    """A seeded sample of training videos and the ground-truth texts of each."""
    data.predict_split = "train"
    data.setup("predict")
    split = data.splits["train"]
    texts: dict[str, list[str]] = {}
    for t in split.texts:
        texts.setdefault(split.videos[t.video].video_id, []).append(t.text)
    ids = sorted(texts)
    if size < 1 or size > len(ids):
        raise CSIError(f"probe_videos={size}: the training split has {len(ids)} videos with texts; "
                       f"choose 1..{len(ids)}")
    chosen = sorted(random.Random(f"csi-probe:{seed}").sample(ids, size))
    return chosen, {v: texts[v] for v in chosen}


def _probe_text_ids(data: VideoTextDataModule, probe: list[str]) -> list[str]:
    """The ids of the probe videos' training texts (what CSI reads of the split, for its lineage)."""
    split = data.splits["train"]
    chosen = set(probe)
    return [t.text_id for t in split.texts if split.videos[t.video].video_id in chosen]


def _prompt_lineage(data: VideoTextDataModule, probe: list[str], engineer: PromptEngineer) -> dict[str, Any]:
    """The lineage node of ``best_prompt.txt``: the probe videos and texts that chose it (``probe set`` role: a
    prompt chosen on test pairs would leak into every caption written with it)."""
    from datamodules.lineage import PROBE_SET, node, read_record
    from lightning_modules.lineage import test_set_of

    test = test_set_of(data)
    read = read_record(PROBE_SET, data.name, "train", probe, _probe_text_ids(data, probe), test,
                       detail=f"scored every round; the engineer ({engineer.name}) reads some of these pairs")
    return node("csi", "caption self-improvement (best_prompt.txt)", test, [read])


def round_context(rounds: list[dict[str, Any]], gt_texts: dict[str, list[str]]) -> RoundContext | None:
    """The iteration's probe pairs for the engineer: the best scored round's example captions beside the human
    texts of those videos (rebuilt from ``rounds.jsonl``, so a resumed run shows what an uninterrupted one did)."""
    scored = [r for r in rounds if r.get("score") is not None and r.get("examples")]
    if not scored:
        return None
    best = max(scored, key=lambda r: (r["score"], -r["round"]))
    return RoundContext(best["prompt"], tuple(ProbeExample(tuple(gt_texts.get(v, [])), tuple(captions))
                                              for v, captions in best["examples"].items()))


def _probe_batches(data: VideoTextDataModule, probe: list[str], needs_pixels: bool) -> list[VideoBatch]:
    """The probe videos as predict batches (decoded once; every round reuses them)."""
    keep = set(probe)
    data.predict_exclude = {v.video_id for v in data.predict_videos if v.video_id not in keep}
    data.predict_decode = needs_pixels
    return list(data.predict_dataloader())


def _number_or_none(value: Any) -> bool:
    return value is None or type(value) in (int, float)


# what resuming reads of a finished round, with its type (a round record is written by _append below)
_ROUND_FIELDS = {"prompt": lambda v: isinstance(v, str), "accepted": lambda v: isinstance(v, bool),
                 "score": _number_or_none, "similarity": _number_or_none, "diversity": _number_or_none}


def _read_rounds(path: Path) -> list[dict[str, Any]]:
    """The finished rounds of the log; a torn last line (the write a kill interrupted, also inside a multi-byte
    character) is left out, so that round reruns. A log damaged elsewhere is a ``CSIError`` naming the file and line."""
    if not path.is_file():
        return []
    rounds: list[dict[str, Any]] = []
    try:
        for number, record in read_jsonl_lines(path):
            if not isinstance(record, dict) or record.get("round") != len(rounds) or type(record["round"]) is not int:
                found = record.get("round") if isinstance(record, dict) else type(record).__name__
                raise CSIError(f"{path}:{number}: round {found!r} where round {len(rounds)} was expected; the log is "
                               "damaged. Move it away to start over")
            wrong = [key for key, ok in _ROUND_FIELDS.items() if not ok(record.get(key))]
            if wrong:
                raise CSIError(f"{path}:{number}: round {len(rounds)} has no valid {', '.join(wrong)}; the log is "
                               "damaged. Move it away to start over")
            rounds.append(record)
    except MalformedFileError as err:
        raise CSIError(f"{err}; the log is damaged before its last line. Move it away to start over") from None
    return rounds


def _resume_log(path: Path) -> list[dict[str, Any]]:
    """The finished rounds, with the log made safe to append to: a torn last line is cut away
    (``datamodules.jsonl.repair_torn_tail``), so the next round never lands glued onto the fragment."""
    rounds = _read_rounds(path)
    dropped = repair_torn_tail(path)
    if dropped:
        print(f"{path}: dropped a torn last line ({dropped} bytes; a run was killed while writing it); that round "
              "runs again", flush=True)
    return rounds


def _append(path: Path, record: dict[str, Any]) -> None:
    # a captioner's lone surrogate in the example captions would make the write fail on every resume
    record, replaced = replace_lone_surrogates(record)
    if replaced:
        print(f"warning: round {record.get('round')}: {replaced} lone UTF-16 surrogate(s) in the record replaced with "
              "U+FFFD", flush=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())



def _plot(rounds: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rounds if r.get("score") is not None]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot([r["round"] for r in scored], [r["score"] for r in scored], "o", ms=3, alpha=0.5, label="proposal")
    best, xs, ys = float("-inf"), [], []
    for r in rounds:
        if r.get("score") is not None:
            best = max(best, r["score"])
        xs.append(r["round"])
        ys.append(best)
    ax.step(xs, ys, where="post", label="best so far (accepted)")
    accepted = [r for r in scored if r["accepted"]]
    ax.plot([r["round"] for r in accepted], [r["score"] for r in accepted], "*", ms=9, label="accepted")
    ax.set_xlabel("round")
    ax.set_ylabel("caption score (Eq. 1, reconstructed)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _wandb_log(project: str, out: Path, settings: dict[str, Any], rounds: list[dict[str, Any]],
               summary: dict[str, Any]) -> str:
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(project=project, dir=str(out), name=out.name, config=settings, job_type="csi", reinit=True)
    columns = ["round", "prompt", "score", "similarity", "diversity", "accepted", "best_score", "duplicate"]
    table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rounds])
    run.log({"rounds": table, "score_vs_round": wandb.Image(str(out / "score_vs_round.png"))})
    run.summary.update({k: v for k, v in summary.items() if isinstance(v, int | float | str)})
    run_dir = str(run.dir)
    run.finish()
    return run_dir


def run_csi(captioner: CaptionBackend, engineer: PromptEngineer, data: VideoTextDataModule,
            evaluator: SentenceEmbedder | None = None, out: str = "runs/csi/synthvtr",
            initial_prompt: str = EXCAE_PROMPT, num_captions: int = 10, probe_videos: int = 32,
            max_frames_per_video: int | None = None, frame_layout: Literal["separate", "grid"] = "separate",
            max_rounds: int = 40, patience: int = 10, similarity_weight: float = 1.0,
            diversity_weight: float = 1.0, seed: int = 0, wandb_project: str | None = "vtr-csi") -> dict[str, Any]:
    """Run (or resume) caption self-improvement; returns the summary.

    Args:
        captioner: caption backend (``class_path: Simulated`` / ``OpenAICompatible`` / ``TransformersVLM``).
        engineer: ``LLMPromptEngineer`` (with a ``generator``) or ``RandomMutation``.
        data: the data module whose training split gives the probe videos and their ground-truth texts.
        evaluator: ψ, a ``SentenceEmbedder`` (default: the offline all-MiniLM-L6-v2).
        out: output folder (resumed when it holds a run with the same settings).
        initial_prompt: round 0's prompt.
        num_captions: K captions per video per prompt (ExCae: 10).
        probe_videos: training videos scored per round (drawn once, seeded).
        max_frames_per_video: frames shown to the captioner per video (``None``: all sampled frames).
        frame_layout: ``separate`` images or one ``grid`` image per video (single-image VLMs).
        max_rounds: rounds in all, round 0 included.
        patience: stop after this many rounds in a row without a new candidate.
        similarity_weight: weight of the caption-text similarity term of the score.
        diversity_weight: weight of the caption diversity term.
        seed: seed of the probe set (engineers and captioners have their own seeds).
        wandb_project: log the rounds as a W&B table in this project (``null``: no W&B).
    """
    if max_rounds < 1 or patience < 1 or num_captions < 1:
        raise CSIError(f"max_rounds ({max_rounds}), patience ({patience}) and num_captions ({num_captions}) "
                       "must be >= 1")
    evaluator = evaluator or SentenceEmbedder()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    probe, gt_texts = _probe_set(data, probe_videos, seed)
    settings = {"captioner": captioner.model_name, "captioner_settings": captioner.record_extras(),
                "engineer": engineer.name, "evaluator": evaluator.name, "evaluator_pooling": evaluator.pooling,
                "data": type(data).__name__, "data_root": str(data.root), "initial_prompt": initial_prompt,
                "num_captions": num_captions, "probe_videos": probe, "max_frames_per_video": max_frames_per_video,
                "frame_layout": frame_layout, "similarity_weight": similarity_weight,
                "diversity_weight": diversity_weight, "seed": seed}
    settings_path = out_dir / "settings.json"
    if settings_path.is_file():
        try:
            earlier = read_json_file(settings_path)
        except MalformedFileError as err:
            raise CSIError(f"{err}; delete {out_dir} (or pass another --out) to start over") from None
        if not isinstance(earlier, dict):
            raise CSIError(f"{settings_path}: not a settings object; delete {out_dir} to start over")
        changed = sorted(k for k in set(settings) | set(earlier) if settings.get(k) != earlier.get(k))
        if changed:
            raise CSIError(f"{out_dir} holds a CSI run with other settings ({', '.join(changed)}); pass another "
                           "--out, or delete the folder to start over")
    else:
        write_text_atomic(settings_path, json.dumps(settings, indent=2, ensure_ascii=False))
    log_path = out_dir / "rounds.jsonl"
    rounds = _resume_log(log_path)
    if rounds:
        print(f"resuming {out_dir}: {len(rounds)} round(s) done, best score "
              f"{max(r['score'] for r in rounds if r.get('score') is not None):.4f}", flush=True)

    captioner_module = Captioner(captioner, kind="multi", prompt=initial_prompt, num_captions=num_captions,
                                 max_frames_per_video=max_frames_per_video, frame_layout=frame_layout)
    batches: list[VideoBatch] | None = None
    text_embeddings: dict[str, Any] | None = None

    def score(prompt: str) -> tuple[CaptionScore, dict[str, list[str]]]:
        nonlocal batches, text_embeddings
        if batches is None:
            captioner_module.prepare_backend(data)
            batches = _probe_batches(data, probe, captioner.needs_pixels)
            flat = [t for v in probe for t in gt_texts[v]]
            emb = evaluator.encode(flat)
            text_embeddings, start = {}, 0
            for v in probe:
                text_embeddings[v] = emb[start:start + len(gt_texts[v])]
                start += len(gt_texts[v])
        captioner_module.prompt = prompt
        captions: dict[str, list[str]] = {}
        for batch in batches:
            for record in captioner_module.caption_batch(batch):
                captions[record["video_id"]] = record["captions"]
        missing = [v for v in probe if not captions.get(v)]
        if missing:
            raise CSIError(f"the captioner returned no captions for probe videos {missing[:5]}")
        emb = evaluator.encode([c for v in probe for c in captions[v]])
        per_video, start = [], 0
        for v in probe:
            per_video.append(emb[start:start + len(captions[v])])
            start += len(captions[v])
        assert text_embeddings is not None
        result = caption_score(per_video, [text_embeddings[v] for v in probe], similarity_weight, diversity_weight)
        return result, {v: captions[v][:EXAMPLE_CAPTIONS] for v in probe[:EXAMPLE_VIDEOS]}

    def stale_rounds() -> int:
        since = 0
        for r in rounds[1:]:
            since = 0 if r["accepted"] else since + 1
        return since

    stop = ""
    while True:
        if len(rounds) >= max_rounds:
            stop = f"max_rounds ({max_rounds}) reached"
            break
        if len(rounds) > 1 and stale_rounds() >= patience:
            stop = f"no new candidate for {patience} rounds (patience)"
            break
        index = len(rounds)
        started = time.perf_counter()
        history = [ScoredPrompt(r["prompt"], r["score"], r["accepted"]) for r in rounds if r.get("score") is not None]
        prompt = initial_prompt if index == 0 else engineer.propose(history, index, num_captions,
                                                                    round_context(rounds, gt_texts))
        best = max((h.score for h in history), default=float("-inf"))
        record: dict[str, Any] = {"round": index, "prompt": prompt, "engineer": engineer.name if index else "initial"}
        earlier = next((r for r in rounds if r["prompt"] == prompt and r.get("score") is not None), None)
        if not prompt.strip():
            record.update(score=None, similarity=None, diversity=None, accepted=False, duplicate=False,
                          error="the engineer returned no instruction")
        elif earlier is not None:  # already scored: the same captions and score, no new candidate
            record.update(score=earlier["score"], similarity=earlier["similarity"], diversity=earlier["diversity"],
                          accepted=False, duplicate=True, duplicate_of=earlier["round"])
        else:
            result, examples = score(prompt)
            record.update(score=result.score, similarity=result.similarity, diversity=result.diversity,
                          accepted=result.score > best, duplicate=False, examples=examples)
        record["best_score"] = max(best, record["score"]) if record["score"] is not None else best
        record["seconds"] = round(time.perf_counter() - started, 3)
        _append(log_path, record)
        rounds.append(record)
        mark = "accepted" if record["accepted"] else ("duplicate" if record.get("duplicate") else "rejected")
        score_text = f"{record['score']:.4f}" if record["score"] is not None else "n/a"
        print(f"[round {index}] {mark} score {score_text} (best {record['best_score']:.4f}): {prompt}", flush=True)

    scored = [r for r in rounds if r.get("score") is not None]
    best_round = max(scored, key=lambda r: (r["score"], -r["round"]))
    (out_dir / "best_prompt.txt").write_text(best_round["prompt"] + "\n", encoding="utf-8")
    write_sidecar(out_dir / "best_prompt.txt", _prompt_lineage(data, probe, engineer))
    _plot(rounds, out_dir / "score_vs_round.png")
    summary = {"best_prompt": best_round["prompt"], "best_score": best_round["score"],
               "best_round": best_round["round"], "initial_score": rounds[0]["score"], "rounds": len(rounds),
               "accepted": sum(r["accepted"] for r in rounds), "stopped": stop,
               "candidate_pool": [{"round": r["round"], "score": r["score"], "prompt": r["prompt"]}
                                  for r in rounds if r["round"] == 0 or r["accepted"]]}
    candidates = {"captioner": settings["captioner"], "engineer": settings["engineer"],
                  "evaluator": settings["evaluator"], "probe_videos": len(probe), "num_captions": num_captions,
                  "rounds": len(rounds), "stopped": stop,
                  "rows": [{"round": r["round"], "score": round(r["score"], 4), "similarity": round(r["similarity"], 4),
                            "diversity": round(r["diversity"], 4), "prompt": r["prompt"]}
                           for r in rounds if r["round"] == 0 or r["accepted"]]}
    (out_dir / "candidates.json").write_text(json.dumps(candidates, indent=2, ensure_ascii=False))
    if wandb_project:
        summary["wandb_dir"] = _wandb_log(wandb_project, out_dir, settings, rounds, summary)
    from lightning_modules.provenance import run_provenance

    summary.update(run_provenance())  # the code and machine the prompts were scored on, as metrics.json records
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"best prompt (round {best_round['round']}, score {best_round['score']:.4f}; initial "
          f"{rounds[0]['score']:.4f}; stopped: {stop}) -> {out_dir / 'best_prompt.txt'}", flush=True)
    return summary


def cli(args: list[str] | None = None) -> dict[str, Any]:
    try:
        return CLI(run_csi, args=args, as_positional=False)
    except CSIError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
