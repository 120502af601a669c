"""experiments.care_dpo.preferences: CaRe-DPO's data stages on the tiny SynthVTR, as the ``predict`` runs the
pipeline makes of them: sampling resumes after a crash (and a torn last line) to the file an uninterrupted run
writes, scoring builds both groups' fields and its sidecar, resumes from its finished chunks, and encodes live what a
trainable video trunk leaves out of the feature cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from datamodules.collate import collate_videos
from datamodules.preferences import TrainVideoChunks, meta_path, read_meta
from experiments.care_dpo.preferences import CaptionSampler, PreferenceScorer, family_of
from lightning_modules.captioning import CaptionerTraining
from lightning_modules.care_dpo import CaReRetriever
from tests.caption_helpers import save_module_checkpoint, save_tiny_llama, tiny_synth
from tests.care_dpo_helpers import synthvtr_data

# the offline two-tower backbone, small, with frozen trunks (the SynthVTR configs' setting)
TOWER = {"class_path": "lightning_modules.backbones.PretrainedTwoTower",
         "init_args": {"embed_dim": 32, "max_words": 16, "image_size": 32, "freeze_video": True, "freeze_text": True}}


class Crash(RuntimeError):
    pass


class CrashAfter(L.Callback):
    """Raises once ``batches`` predict batches are done (their outputs written), as the next one starts."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def on_predict_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        if batch_idx >= self.batches:
            raise Crash


class CountBatches(L.Callback):
    def __init__(self) -> None:
        self.videos: list[str] = []

    def on_predict_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:
        self.videos.extend(batch.video_ids)


def _predict(module: L.LightningModule, data: L.LightningDataModule, *callbacks: L.Callback,
             precision: str = "32-true") -> None:
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=list(callbacks))
    trainer.predict(module, datamodule=data, return_predictions=False)


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The tiny SynthVTR, an SFT captioner checkpoint (tiny random Llama) and a scorer checkpoint (frozen towers)."""
    base = tmp_path_factory.mktemp("care")
    tiny_synth(base)
    llama = save_tiny_llama(base / "tiny-llama")
    captioner = {"class_path": "lightning_modules.captioning.PrefixCaptioner",
                 "init_args": {"lm": str(llama), "feature_dim": 1280, "num_prefix": 2, "lm_training": "full",
                               "max_new_tokens": 5, "video_tower": TOWER}}
    sft = save_module_checkpoint(CaptionerTraining, {"captioner": captioner}, base / "sft.ckpt")
    scorer = save_module_checkpoint(CaReRetriever, {"backbone": TOWER, "logit_scale_init": 10.0}, base / "scorer.ckpt")
    return base, sft, scorer


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _reference_captions(samples: Path, out: Path) -> Path:
    """Each video's first sample as its reference caption (the SFT captions, in the pipeline)."""
    out.write_text("".join(json.dumps({"video_id": r["video_id"], "kind": "supplement", "prompt": "p",
                                       "captions": [r["captions"][0]]}) + "\n" for r in _records(samples)))
    return out


def test_sampling_resumes_after_a_crash_and_a_torn_line_to_the_uninterrupted_file(setting, tmp_path: Path) -> None:
    base, sft, _ = setting

    def sampler(out: Path, **settings: Any) -> CaptionSampler:
        return CaptionSampler(str(sft), str(out), num_samples=3, seed=7, **settings)

    whole = tmp_path / "whole.jsonl"
    _predict(sampler(whole), TrainVideoChunks(synthvtr_data(base), chunk_size=1))
    expected = _records(whole)
    assert [r["video_id"] for r in expected] == sorted(r["video_id"] for r in expected) and len(expected) == 4
    assert all(len(r["captions"]) == 3 and len(r["ref_logprob"]) == 3 for r in expected)
    meta = read_meta(whole)
    assert meta is not None and meta["reference"]["precision"] == "32-true" and meta["reference"]["device"] == "cpu"
    assert meta["reference"]["feature_cache"] and meta["n_videos"] == 4 and meta["num_samples"] == 3

    partial = tmp_path / "partial.jsonl"
    with pytest.raises(Crash):
        _predict(sampler(partial), TrainVideoChunks(synthvtr_data(base), chunk_size=1), CrashAfter(2))
    assert len(_records(partial)) == 2
    with partial.open("a") as fh:  # a kill in the middle of the third record's write
        fh.write('{"video_id": "synth0')
    _predict(sampler(partial), TrainVideoChunks(synthvtr_data(base), chunk_size=1))
    assert _records(partial) == expected
    # the same file continued under other settings would mix two kinds of samples: refused, naming the setting
    with pytest.raises(ValueError, match=r"started with other settings .*temperature: 1.0 -> 0.5"):
        _predict(sampler(partial, temperature=0.5), TrainVideoChunks(synthvtr_data(base), chunk_size=1))
    # the reference log-probabilities are those of the captioner itself (round 1: policy = reference), on the
    # cached features DG-DPO reads
    record = expected[0]
    data = synthvtr_data(base)
    data.setup("fit")
    from datamodules.feature_cache import build_or_load_cache

    model = CaptionerTraining.load_from_checkpoint(sft).eval()
    cache, _ = build_or_load_cache(data, model.backbone, torch.device("cpu"))
    feats, mask = cache.video(record["video_id"])
    with torch.no_grad():
        again = model.captioner.sequence_logprob(feats[None].expand(3, -1, -1), [model.prompt] * 3,
                                                 record["captions"], frame_mask=mask[None].expand(3, -1).bool())
    assert torch.allclose(again, torch.tensor(record["ref_logprob"]), atol=1e-4)


def test_scoring_writes_both_groups_fields_with_family_neighbours_and_its_sidecar(setting, tmp_path: Path) -> None:
    base, sft, scorer = setting
    samples = tmp_path / "samples.jsonl"
    _predict(CaptionSampler(str(sft), str(samples), num_samples=2), TrainVideoChunks(synthvtr_data(base), chunk_size=2))
    reference = _reference_captions(samples, tmp_path / "reference.jsonl")
    store = tmp_path / "store.jsonl"
    _predict(PreferenceScorer(str(scorer), str(samples), str(reference), str(store), candidates=2, neighbour="family"),
             TrainVideoChunks(synthvtr_data(base), chunk_size=3))
    data = synthvtr_data(base)
    families = family_of(data)
    for record in _records(store):
        assert families[record["neighbour_id"]] == families[record["video_id"]]
        assert record["neighbour_id"] != record["video_id"] and len(record["candidates"]) == 2
        assert len(record["relevance"]) == len(record["neighbour_relevance"]) == 2
    assert not (tmp_path / "store.jsonl.parts").exists()  # the chunks' embeddings are gone once the store is written
    meta = read_meta(store)
    assert meta is not None and meta_path(store).name == "store.jsonl.meta.json"
    assert (meta["split"], meta["n_videos"], meta["n_texts"]) == ("train", 4, 20)
    assert meta["samples"]["num_samples"] == 2 and meta["reference"] == read_meta(samples)["reference"]
    selection = meta["scorer"]
    assert selection["checkpoint"] == str(scorer.resolve()) and len(selection["sha256"]) == 64
    # SynthVTR selects on held-out training families: its validation split shares no video with the test split
    assert selection["selected_on"]["split"] == "val" and selection["selected_on"]["n_videos"] == 2
    assert selection["selected_on"]["test_videos_shared"] == 0
    assert selection["selected_by"] is None  # a checkpoint written by hand carries no ModelCheckpoint state
    ranked = tmp_path / "ranked.jsonl"
    _predict(PreferenceScorer(str(scorer), str(samples), str(reference), str(ranked), relevance="rank", candidates=2),
             TrainVideoChunks(synthvtr_data(base), chunk_size=3))
    assert all(-3.0 <= r <= -1.0 for rec in _records(ranked) for r in rec["relevance"])
    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps(r) + "\n" for r in _records(samples)[:-1]))
    with pytest.raises(ValueError, match="lacks samples of 1 training videos"):
        _predict(PreferenceScorer(str(scorer), str(short), str(reference), str(tmp_path / "x.jsonl")),
                 TrainVideoChunks(synthvtr_data(base)))


def test_scoring_killed_after_two_chunks_resumes_to_the_store_of_an_uninterrupted_run(setting, tmp_path: Path) -> None:
    base, sft, scorer = setting
    samples = tmp_path / "samples.jsonl"
    _predict(CaptionSampler(str(sft), str(samples), num_samples=2), TrainVideoChunks(synthvtr_data(base), chunk_size=2))
    reference = _reference_captions(samples, tmp_path / "reference.jsonl")

    def scorer_of(out: Path) -> PreferenceScorer:
        return PreferenceScorer(str(scorer), str(samples), str(reference), str(out), candidates=2)

    whole = tmp_path / "whole.jsonl"
    _predict(scorer_of(whole), TrainVideoChunks(synthvtr_data(base), chunk_size=1))
    partial = tmp_path / "partial.jsonl"
    with pytest.raises(Crash):
        _predict(scorer_of(partial), TrainVideoChunks(synthvtr_data(base), chunk_size=1), CrashAfter(2))
    assert not partial.exists() and len(list((tmp_path / "partial.jsonl.parts").glob("part-*.pt"))) == 2
    counted = CountBatches()
    _predict(scorer_of(partial), TrainVideoChunks(synthvtr_data(base), chunk_size=1), counted)
    assert len(counted.videos) == 2  # only the chunks the killed run had not finished
    assert partial.read_text() == whole.read_text()


def test_scoring_encodes_live_what_the_cache_lacks_when_the_retriever_video_trunk_trains(setting,
                                                                                        tmp_path: Path) -> None:
    """configs/model/care_retriever.yaml leaves CLIP's video trunk trainable, so the feature cache holds no video rows
    of it (scoring used to look them up anyway: KeyError on the first video id). The chunks then carry the decoded
    frames and the retriever's own trunk encodes them, as its evaluation does."""
    base, _, _ = setting
    clip = {"class_path": "lightning_modules.backbones.OpenCLIPBackbone",  # the real class; freeze_video as shipped
            "init_args": {"model_name": "vtr-tiny-clip", "pretrained": None, "max_words": 16}}
    scorer = save_module_checkpoint(CaReRetriever, {"backbone": clip, "logit_scale_init": 10.0}, tmp_path / "clip.ckpt")
    size = {"image_size": 64}  # the tiny CLIP's input size
    data = synthvtr_data(base, **size)
    data.setup("fit")
    ids = [v.video_id for v in data.splits["train"].videos]
    captions = {v: [f"a red circle moves left {i}", f"a blue square spins {i}"] for i, v in enumerate(ids)}
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"video_id": v, "captions": captions[v], "ref_logprob": [-3.0, -4.0]}) + "\n"
                               for v in ids))
    reference = _reference_captions(samples, tmp_path / "reference.jsonl")
    store = tmp_path / "store.jsonl"
    _predict(PreferenceScorer(str(scorer), str(samples), str(reference), str(store), relevance="score", candidates=2),
             TrainVideoChunks(synthvtr_data(base, **size), chunk_size=3))
    records = {r["video_id"]: r for r in _records(store)}
    assert sorted(records) == sorted(ids) and read_meta(store)["trainer"]["feature_cache"] is None
    # by hand: the retriever's own video path on the uniformly sampled frames, each video carrying each sample
    from datamodules.batch import normalize_frames

    retriever = CaReRetriever.load_from_checkpoint(scorer).eval()
    plain = synthvtr_data(base, feature_cache=False, **size)
    plain.setup("fit")
    dataset = plain.video_dataset("train")
    batch = collate_videos([dataset[i] for i in range(len(ids))])
    backbone = retriever.backbone
    with torch.no_grad():
        frames = normalize_frames(batch.frames, backbone.image_mean, backbone.image_std)
        video = retriever.pooled_video(backbone.encode_frames(frames), batch.mask)
        for row, vid in enumerate(batch.video_ids):
            queries = retriever.query_embeddings(plain.video_texts(vid))
            carried = retriever.carrying(video[[row, row]], captions[vid])
            expected = (queries @ carried.t()).mean(0)
            assert records[vid]["relevance"] == pytest.approx(expected.tolist(), abs=1e-5), vid


@pytest.mark.parametrize("val_protocol", ["test", "heldout"])
def test_the_scorer_record_says_which_split_selected_it_and_how_many_test_videos_that_split_holds(
        setting, fake_msrvtt: Path, val_protocol: str) -> None:
    """MSR-VTT's ``val_protocol: test`` validates on the test split: the scorer selected there is recorded as such
    (every validation video a test video); held-out training videos share none."""
    from datamodules import MSRVTT
    from experiments.care_dpo.preferences import selection_facts

    _, _, scorer = setting
    data = TrainVideoChunks(MSRVTT(root=str(fake_msrvtt), video_dir="videos/all", num_frames=2, image_size=32,
                                   num_workers=0, val_protocol=val_protocol, val_videos=2))
    data.setup("predict")
    facts = selection_facts(str(scorer), data)["selected_on"]
    assert facts["split"] == "val"
    if val_protocol == "test":
        assert facts["model_selection"] == "test split (val_protocol: test, CLIP4Clip's habit)"
        assert facts["test_videos_shared"] == facts["n_videos"] == 6
    else:
        assert facts["model_selection"] == "2 held-out training videos"
        assert facts["test_videos_shared"] == 0 and facts["n_videos"] == 2
