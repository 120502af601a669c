"""SynthVTR: the embedded benchmark, served through the real MSR-VTT reading path.

``prepare_data`` generates the benchmark (``datamodules.synthvtr``) into
``<root>/synthvtr-<fingerprint>`` unless that directory is already complete, so a second run skips
the work. Everything after that is ``MSRVTT``: H.264 files decoded by the configured reader,
``MSRVTT_data.json`` captions, the train csv, and multi-caption evaluation of the test videos (five
partial captions per video). Validation holds out whole near-duplicate families of the training split
(their ``url`` is the family), so model selection never sees the test split.

The caption-consistent oracle ceiling is recorded in ``metrics.json`` (``data.oracle``) so model
R@1 can be read against what the captions allow, and the copy of the data is named there too
(``data.generator``: the config ``fingerprint``, the ``content_sha256`` of the copy's manifest and whether every file
matched it, checked once per run: a mismatch is one warning with the counts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from datamodules.msrvtt import MSRVTT
from datamodules.random_state import preserved_random_state
from datamodules.readers import ReaderName, SamplingMode
from datamodules.synthvtr import GENERATOR_VERSION, ContentCheck, SynthVTRConfig, generate_synthvtr, verify_content


class SynthVTR(MSRVTT):
    """Procedurally generated text-video retrieval benchmark (see docs/data/synthvtr.md).

    Args:
        root: parent folder; the dataset lives in ``<root>/synthvtr-<fingerprint>``.
        num_families: near-duplicate families (each ``family_size`` videos).
        family_size: videos per family (a base and mutants that differ in one attribute).
        test_families: families in the test split (the rest train; ``val_families`` of those validate).
        val_families: training families held out for validation.
        video_size: rendered resolution (square).
        video_frames: rendered frames per video.
        fps: frame rate of the mp4 files.
        captions_per_video: captions generated per video.
        detail: aspects joined per caption (1: one-sided and ambiguous; 3: detailed).
        generator_seed: seed of the generator (the training seed is the CLI's ``seed_everything``).
        one_sided_fraction: share of captions that describe only the start or only the end of the video
            (``SynthVTRConfig.one_sided_fraction``; 0 keeps the synthvtr-1.1 captions).
        generator_workers: processes used to render.
        **kwargs: ``VideoTextDataModule`` arguments (num_frames, image_size, batch_size, ...).
    """

    name = "synthvtr"

    def __init__(self, root: str = "data", num_families: int = 200, family_size: int = 4, test_families: int = 40,
                 val_families: int = 20, video_size: int = 112, video_frames: int = 32, fps: int = 8,
                 captions_per_video: int = 5, detail: int = 2, generator_seed: int = 0,
                 one_sided_fraction: float = 0.0, generator_workers: int | None = None, num_frames: int = 8,
                 image_size: int = 112,
                 reader: ReaderName = "decord", train_sampling: SamplingMode = "random_offset",
                 test_protocol: Literal["jsfusion", "all_captions"] = "all_captions",
                 **kwargs: Any) -> None:
        self.generator_config = SynthVTRConfig(
            num_families=num_families, family_size=family_size, test_families=test_families,
            image_size=video_size, num_frames=video_frames, fps=fps, captions_per_video=captions_per_video,
            detail=detail, seed=generator_seed, one_sided_fraction=one_sided_fraction)
        dataset_dir = Path(root) / f"synthvtr-{self.generator_config.fingerprint()}"
        super().__init__(root=str(dataset_dir), num_frames=num_frames, image_size=image_size, reader=reader,
                         train_sampling=train_sampling, test_protocol=test_protocol, val_protocol="heldout",
                         val_videos=val_families * family_size, **kwargs)
        self.generator_workers = generator_workers
        self._content: ContentCheck | None = None

    def prepare_data(self) -> None:
        # generating in this process (generator_workers: 1) must not move the training random state
        with preserved_random_state():
            generate_synthvtr(self.root, self.generator_config, workers=self.generator_workers)
        self.content_check()

    def content_check(self) -> ContentCheck:
        """This copy against its manifest, checked once per data module (a mismatch is logged once, with counts)."""
        if self._content is None:
            self._content = verify_content(self.root)
        return self._content

    def describe(self, stage: str) -> dict[str, Any]:
        info = super().describe(stage)
        oracle = self.root / "synthvtr" / "oracle.json"
        if oracle.is_file():
            info["oracle"] = json.loads(oracle.read_text())
        info["generator"] = {"fingerprint": self.generator_config.fingerprint(), "version": GENERATOR_VERSION,
                             **self.generator_config.__dict__, **self.content_check().record()}
        return info
