"""``Captioner``: caption generation as a Lightning ``predict`` run.

``python main.py predict --config configs/captioners/<name>.yaml`` runs a ``Captioner`` over the videos
of a data module's ``predict_split`` (frames sampled uniformly, ``predict_num_frames`` of them) and the
:class:`~callbacks.caption_writer.CaptionWriter` appends one JSONL record per video to the caption store:

``{"video_id", "kind", "prompt", "captions": [...], "model", "created", ...}`` plus ``frame_indices``
(the sampled frame of each caption) for ``narration``.

Kinds: ``narration`` (NarVid) captions every sampled frame on its own; ``multi`` (ExCae) asks for
``num_captions`` captions of the whole video from one prompt; ``supplement`` (conical embedding
optimisation) asks for one caption of the whole video. The backend (``TransformersVLM``,
``OpenAICompatible``, ``Simulated``) only generates text; this module trains nothing (the trainable
captioner is :class:`~lightning_modules.captioning.trainable.PrefixCaptioner`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np

from datamodules.batch import VideoBatch
from datamodules.captions import KINDS, CaptionKind
from lightning_modules.attachment import attached_trainer
from lightning_modules.captioning.backends.base import CaptionBackend, CaptionOutput, CaptionRequest, tile_grid

NARVID_PROMPT = "Please describe this image for image-captioning task."
TextContext = Literal["training", "any"]
EXCAE_PROMPT = "Generate 10 captions from different perspectives about this video."


class Captioner(L.LightningModule):
    """Runs a caption backend over predict batches and returns one record per video.

    Args:
        backend: the generator (``class_path``/``init_args`` in YAML).
        kind: ``narration`` (a caption per sampled frame), ``multi`` (``num_captions`` per video) or
            ``supplement`` (one per video).
        prompt: the instruction (NarVid's LLaVA prompt by default). A ``{text}`` placeholder is filled, per video,
            with one of the video's annotated texts (the video-text pair a supplement is written from; conical
            embedding optimisation's prompt A asks for what is "not evident in the original"); the record keeps
            the template under ``prompt``, the filled-in text under ``context_text`` and its id and split under
            ``context_text_id`` / ``context_split`` (the lineage of a later test counts them).
        text_context: which texts may fill ``{text}``: ``training`` (default) - only texts of the training split,
            so no evaluation query ever shapes a caption; a video without one (a validation or test video) is
            captioned with ``fallback_prompt``; ``any`` - the video's first annotated text in any split (the
            slides' "video-text pairs" taken literally: a test video's caption is then written from a test query,
            and a test that reads it is flagged as leaking by the computed verdict).
        fallback_prompt: the instruction (without ``{text}``) for videos that have no admissible text under
            ``text_context: training``; unset, such a video is an error naming it.
        prompt_file: read the instruction from this text file instead (e.g. the ``best_prompt.txt`` that ExCae's
            caption self-improvement writes, ``python -m experiments.csi``); overrides ``prompt``.
        num_captions: captions per video for ``multi`` (ExCae: 10); ignored otherwise.
        max_frames_per_video: for ``multi``/``supplement``, at most this many of the sampled frames
            (evenly spread) are shown to the model; ``None`` shows all of them.
        frame_layout: ``separate`` gives the frames as separate images; ``grid`` tiles them into one
            image (for single-image models such as LLaVA-1.5).
        requests_per_call: requests handed to the backend at once (its own ``batch_size`` still
            applies inside); 0 means all requests of a predict batch.
    """

    def __init__(self, backend: CaptionBackend, kind: CaptionKind = "narration", prompt: str = NARVID_PROMPT,
                 prompt_file: str | None = None, num_captions: int = 10, max_frames_per_video: int | None = None,
                 frame_layout: Literal["separate", "grid"] = "separate", requests_per_call: int = 0,
                 text_context: TextContext = "training", fallback_prompt: str | None = None) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be narration, multi or supplement, got {kind!r}")
        if text_context not in ("training", "any"):
            raise ValueError(f"model.init_args.text_context must be training or any, got {text_context!r}")
        if fallback_prompt is not None and ("{text}" in fallback_prompt or not fallback_prompt.strip()):
            raise ValueError("model.init_args.fallback_prompt must be a non-empty instruction without {text} (it is "
                             "used for videos that have no admissible text)")
        if prompt_file is not None:
            path = Path(prompt_file)
            if not path.is_file():
                raise FileNotFoundError(f"model.init_args.prompt_file: {path} does not exist; run the caption "
                                        "self-improvement that writes it first (python -m experiments.csi)")
            prompt = path.read_text(encoding="utf-8").strip()
            if not prompt:
                raise ValueError(f"model.init_args.prompt_file: {path} is empty")
        if not prompt.strip():
            raise ValueError("prompt must not be empty")
        self.save_hyperparameters(ignore=["backend"])
        self.backend = backend
        self.kind = kind
        self.prompt = prompt
        self.num_captions = num_captions if kind == "multi" else 1
        self.max_frames_per_video = max_frames_per_video
        self.frame_layout = frame_layout
        self.requests_per_call = requests_per_call
        self.text_context = text_context
        self.fallback_prompt = fallback_prompt
        self._contexts: dict[str, tuple[str, str, str]] = {}  # video id -> the text its prompt was filled with
        self._backend_ready = False

    # ------------------------------------------------------------------ lightning hooks
    def setup(self, stage: str) -> None:
        dm = self._datamodule()
        if stage == "predict" and dm is not None:
            # the simulated backend reads ground truth, not pixels: skip decoding (frame counts only)
            dm.predict_decode = self.backend.needs_pixels

    def prepare_backend(self, datamodule: Any | None) -> None:
        """Load the backend now (weights, clients, SynthVTR ground truth) for use without a Trainer."""
        if not self._backend_ready:
            self.backend.setup(self.device, datamodule)
            self._backend_ready = True

    def on_predict_start(self) -> None:
        if not self._backend_ready:
            self.backend.setup(self.device, self._datamodule())
            self._backend_ready = True

    def predict_step(self, batch: VideoBatch, batch_idx: int) -> list[dict[str, Any]]:
        return self.caption_batch(batch)

    # ------------------------------------------------------------------ captioning
    def caption_batch(self, batch: VideoBatch) -> list[dict[str, Any]]:
        """Records for every video of a predict batch (usable without a Trainer too)."""
        if not self._backend_ready:
            self.backend.setup(self.device, self._datamodule())
            self._backend_ready = True
        requests, owner = self.build_requests(batch)
        outputs: list[CaptionOutput] = []
        step = self.requests_per_call or max(1, len(requests))
        for start in range(0, len(requests), step):
            outputs.extend(self.backend.generate(requests[start:start + step]))
        created = datetime.now(UTC).isoformat(timespec="seconds")
        base = {"kind": self.kind, "prompt": self.prompt, "model": self.backend.model_name, "created": created,
                **self.backend.record_extras()}
        records = []
        for row, vid in enumerate(batch.video_ids):
            mine = [(req, out) for req, out, o in zip(requests, outputs, owner, strict=True) if o == row]
            captions: list[str] = []
            extras: dict[str, list[Any]] = {}
            for _, out in mine:
                captions.extend(out.captions)
                for key, values in out.extras.items():
                    extras.setdefault(key, []).extend(values)
            record = {"video_id": vid, **base, "captions": captions, **extras}
            context = self._contexts.pop(vid, None)
            if context is not None:
                record["context_split"], record["context_text_id"], record["context_text"] = context
            elif "{text}" in self.prompt:
                record["fallback_prompt"] = self.fallback_prompt
            if self.kind == "narration":
                record["frame_indices"] = [req.frame_indices[0] for req, _ in mine]
            else:
                record["source_frames"] = mine[0][0].frame_indices
            records.append(record)
        return records

    def build_requests(self, batch: VideoBatch) -> tuple[list[CaptionRequest], list[int]]:
        """Requests for a batch and, for each, the batch row it belongs to."""
        requests, owner = [], []
        for row, vid in enumerate(batch.video_ids):
            indices: list[int] = list(batch.aux["frame_indices"][row])
            images = self._images(batch, row, len(indices))
            if self.kind == "narration":
                for j, f in enumerate(indices):
                    requests.append(CaptionRequest(vid, self.kind, self.prompt, 1, [f], images[j:j + 1]))
                    owner.append(row)
                continue
            keep = list(range(len(indices)))
            if self.max_frames_per_video and len(keep) > self.max_frames_per_video:
                pos = np.linspace(0, len(keep) - 1, self.max_frames_per_video).round().astype(int)
                keep = sorted(set(pos.tolist()))
            shown = [images[j] for j in keep] if images else []
            if shown and self.frame_layout == "grid":
                shown = [tile_grid(shown)]
            prompt, context = self.prompt_for(vid)
            requests.append(CaptionRequest(vid, self.kind, prompt, self.num_captions,
                                           [indices[j] for j in keep], shown, context_text=context))
            owner.append(row)
        return requests, owner

    def prompt_for(self, video_id: str) -> tuple[str, str | None]:
        """The instruction for ``video_id`` and the text it was filled with (None: no ``{text}`` filled)."""
        context = self.context_entry(video_id)
        if context is None:
            if "{text}" in self.prompt:
                assert self.fallback_prompt is not None  # context_entry raised otherwise
                return self.fallback_prompt, None
            return self.prompt, None
        self._contexts[video_id] = context
        return self.prompt.replace("{text}", context[2]), context[2]

    def context_entry(self, video_id: str) -> tuple[str, str, str] | None:
        """``(split, text id, text)`` a ``{text}`` prompt is filled with for ``video_id`` (the first admissible
        annotated text, see ``text_context``), None without ``{text}`` or when ``fallback_prompt`` applies."""
        if "{text}" not in self.prompt:
            return None
        dm = self._datamodule()
        entries = dm.video_text_entries(video_id) if dm is not None and hasattr(dm, "video_text_entries") else []
        if not entries:
            raise ValueError(f"the prompt has a {{text}} placeholder but video {video_id!r} has no annotated text in "
                             "the data module's splits (a supplement is written from a video-text pair); remove "
                             "{text} from model.init_args.prompt to caption from the video alone")
        admissible = [e for e in entries if self.text_context == "any" or e[0] == "train"]
        if admissible:
            return admissible[0]
        if self.fallback_prompt is None:
            raise ValueError(f"video {video_id!r} has no training-split text to fill the prompt's {{text}} (its texts "
                             f"are {entries[0][0]} queries, which no caption may be written from under "
                             "model.init_args.text_context: training); set model.init_args.fallback_prompt to an "
                             "instruction without {text} for such videos, or text_context: any (a test that reads "
                             "these captions is then reported as leaking)")
        return None

    def store_lineage(self, records: list[dict[str, Any]], store: Path) -> dict[str, Any]:
        """The lineage node of a caption store holding ``records`` (all of them, after a resume): the videos
        captioned, the texts ``{text}`` prompts were filled with (informational here: a test that *reads* a record
        written from a test query is what leaks, and its own lineage counts that per record), and what fed the
        captioner (a trained captioner's checkpoint, a prompt learnt by CSI)."""
        from datamodules.lineage import CAPTIONED_VIDEOS, PROMPT_TEXTS_WRITTEN, node, read_record, read_sidecar
        from lightning_modules.lineage import test_set_of

        dm = self._datamodule()
        test = test_set_of(dm)
        dataset = getattr(dm, "name", type(dm).__name__) if dm is not None else "?"
        split = str(getattr(dm, "predict_split", "?"))
        reads = [read_record(CAPTIONED_VIDEOS, dataset, split, [r["video_id"] for r in records], [], test,
                             detail=f"{len(records)} {self.kind} records")]
        with_id = [r["context_text_id"] for r in records if r.get("context_text_id")]
        without_id = [r["context_text"] for r in records if r.get("context_text") and not r.get("context_text_id")]
        if with_id or without_id:
            reads.append(read_record(PROMPT_TEXTS_WRITTEN, dataset, split, [], with_id, test, texts=without_id,
                                     detail=f"{{text}} filled under text_context: {self.text_context}"))
        upstream: list[dict[str, Any]] = []
        missing: list[str] = []
        backend_lineage, why = self.backend.lineage()
        if backend_lineage is not None:
            upstream.append(backend_lineage)
        elif why:
            missing.append(why)
        prompt_file = self.hparams.get("prompt_file")
        if prompt_file:
            learnt = read_sidecar(prompt_file)
            if learnt is not None:
                upstream.append(learnt)
            else:
                missing.append(f"prompt file {Path(prompt_file).name} has no lineage record (written by hand or "
                               "before lineage was recorded)")
        return node("captions", store.name, test, reads, upstream, missing, caption_kind=self.kind,
                    model=self.backend.model_name, prompt=self.prompt, text_context=self.text_context)

    def _images(self, batch: VideoBatch, row: int, n: int) -> list[np.ndarray]:
        if not self.backend.needs_pixels:
            return []
        if batch.frames is None:
            raise ValueError(f"{type(self.backend).__name__} needs pixels but the batch has no frames")
        frames = batch.frames[row, :n].detach().cpu()
        if frames.is_floating_point():
            raise ValueError("Captioner expects uint8 frames from the predict loader")
        return [f.permute(1, 2, 0).numpy() for f in frames]

    def _datamodule(self) -> Any | None:
        trainer = attached_trainer(self)
        return getattr(trainer, "datamodule", None) if trainer is not None else None
