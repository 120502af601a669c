"""CaRe-DPO's data stages on the tiny SynthVTR: sampling resumes after a crash (and a torn last line) to the file an
uninterrupted run writes, scoring builds both groups' fields, and the caption measures read captions back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from datamodules.synthvtr.attributes import attribute_counts, mentioned_values, video_values
from experiments.care_dpo.caption_quality import caption_quality
from experiments.care_dpo.preferences import family_of, sample_captions, score_preferences
from lightning_modules.backbones.two_tower import PretrainedTwoTower
from lightning_modules.captioning import CaptionerTraining, PrefixCaptioner
from lightning_modules.care_dpo import CaReRetriever
from tests.caption_helpers import TINY_SYNTH, save_tiny_llama, tiny_synth


class Crash(RuntimeError):
    pass


def _tower() -> PretrainedTwoTower:
    return PretrainedTwoTower(embed_dim=32, max_words=16, image_size=32, freeze_video=True, freeze_text=True)


def _data(root: Path):
    from datamodules import SynthVTR

    settings = {k: v for k, v in TINY_SYNTH.items() if not k.startswith("predict") and k != "video_dir"}
    return SynthVTR(root=str(root), feature_cache=True, **settings)


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("care")
    tiny_synth(base)
    llama = save_tiny_llama(base / "tiny-llama")
    torch.manual_seed(0)
    model = CaptionerTraining(PrefixCaptioner(str(llama), feature_dim=1280, num_prefix=2, lm_training="full",
                                              max_new_tokens=5, video_tower=_tower()))
    return base, model


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sampling_resumes_after_a_crash_and_a_torn_line_to_the_uninterrupted_file(setting) -> None:
    base, model = setting
    whole = sample_captions(model, model, _data(base), base / "whole.jsonl", num_samples=3, batch_size=1, seed=7)
    expected = _records(whole)
    assert [r["video_id"] for r in expected] == sorted(r["video_id"] for r in expected) and len(expected) == 4
    assert all(len(r["captions"]) == 3 and len(r["ref_logprob"]) == 3 for r in expected)

    def crash_after_two(number: int) -> None:
        if number == 1:
            raise Crash

    partial = base / "partial.jsonl"
    with pytest.raises(Crash):
        sample_captions(model, model, _data(base), partial, num_samples=3, batch_size=1, seed=7,
                        after_chunk=crash_after_two)
    assert len(_records(partial)) == 2
    with partial.open("a") as fh:  # a kill in the middle of the third record's write
        fh.write('{"video_id": "synth0')
    sample_captions(model, model, _data(base), partial, num_samples=3, batch_size=1, seed=7)
    assert _records(partial) == expected
    # the reference log-probabilities are those of the captioner itself (round 1: policy = reference)
    record = expected[0]
    data = _data(base)
    data.setup("fit")
    from datamodules.feature_cache import build_or_load_cache

    cache, _ = build_or_load_cache(data, model.backbone, torch.device("cpu"))
    feats, mask = cache.video(record["video_id"])
    with torch.no_grad():
        again = model.captioner.sequence_logprob(feats[None].expand(3, -1, -1), [model.prompt] * 3,
                                                 record["captions"], frame_mask=mask[None].expand(3, -1).bool())
    assert torch.allclose(again, torch.tensor(record["ref_logprob"]), atol=1e-4)


def test_scoring_writes_both_groups_fields_with_family_neighbours(setting, tmp_path: Path) -> None:
    base, model = setting
    samples = sample_captions(model, model, _data(base), tmp_path / "samples.jsonl", num_samples=2, batch_size=2)
    reference = tmp_path / "reference.jsonl"
    reference.write_text("".join(json.dumps({"video_id": r["video_id"], "kind": "supplement", "prompt": "p",
                                             "captions": [r["captions"][0]]}) + "\n" for r in _records(samples)))
    torch.manual_seed(0)
    retriever = CaReRetriever(backbone=_tower(), logit_scale_init=10.0)
    data = _data(base)
    store = score_preferences(retriever, data, samples, reference, tmp_path / "store.jsonl", relevance="margin",
                              candidates=2, neighbour="family")
    families = family_of(data)
    for record in _records(store):
        assert families[record["neighbour_id"]] == families[record["video_id"]]
        assert record["neighbour_id"] != record["video_id"] and len(record["candidates"]) == 2
        assert len(record["relevance"]) == len(record["neighbour_relevance"]) == 2
    ranked = score_preferences(retriever, data, samples, reference, tmp_path / "ranked.jsonl", relevance="rank",
                               candidates=2)
    assert all(-3.0 <= r <= -1.0 for rec in _records(ranked) for r in rec["relevance"])
    with pytest.raises(ValueError, match="lacks samples of 1 training videos"):
        short = tmp_path / "short.jsonl"
        short.write_text("".join(json.dumps(r) + "\n" for r in _records(samples)[:-1]))
        score_preferences(retriever, data, short, reference, tmp_path / "x.jsonl")


def test_caption_measures_read_the_captions_back(setting, tmp_path: Path) -> None:
    base, _ = setting
    data = _data(base)
    facts = {json.loads(line)["video_id"]: json.loads(line)["facts"]
             for line in (data.root / "synthvtr" / "video_facts.jsonl").read_text().splitlines()}
    data.setup("test")
    ids = [v.video_id for v in data.splits["test"].videos]
    texts = {v: data.video_texts(v)[0] for v in ids}
    oracle = tmp_path / "oracle.jsonl"   # each video captioned by its own first ground-truth text
    oracle.write_text("".join(json.dumps({"video_id": v, "kind": "supplement", "prompt": "p",
                                          "captions": [texts[v]]}) + "\n" for v in ids))
    quality = caption_quality(data, oracle)
    assert quality["num_videos"] == 2 and quality["family_size"] == 2.0
    assert quality["attribute_precision"] == 1.0  # ground-truth texts say nothing false
    same = tmp_path / "same.jsonl"               # one caption for every video: no video can be told apart
    same.write_text("".join(json.dumps({"video_id": v, "kind": "supplement", "prompt": "p",
                                        "captions": ["a circle"]}) + "\n" for v in ids))
    blind = caption_quality(data, same)
    assert blind["distinct_captions"] == 0.0 and blind["caption_words"] == 2.0
    assert set(facts) >= set(ids)


def test_attribute_reading_takes_the_longest_phrase_once() -> None:
    said = mentioned_values("a snow white ball moves left in the snow next to a crimson box")
    assert said == {("colour", "white"), ("shape", "circle"), ("motion", "left"), ("background", "snow"),
                    ("colour", "red"), ("shape", "square")}
    truth = video_values(["bg:snow", "obj:white:circle", "mots:circle:left", "mot:white:circle:left"])
    assert attribute_counts("a snow white ball moves left in the snow next to a crimson box",
                            ["bg:snow", "obj:white:circle", "mots:circle:left"]) == (4, 6, len(truth))


def test_collect_writes_mean_and_std_over_seeds_times_per_seed_and_refuses_mixed_settings(tmp_path: Path) -> None:
    from experiments.care_dpo.collect import collect

    def summary(seed: int, r1: float, settings: dict) -> Path:
        quality = {"caption_r1": r1, "family_r1": 30.0 + seed, "attribute_precision": 0.5, "attribute_recall": 0.25,
                   "distinct_captions": 1.0, "caption_words": 10.0, "num_queries": 8, "num_videos": 2}
        path = tmp_path / f"s{seed}.json"
        path.write_text(json.dumps({"seed": seed, "settings": settings, "captions": {"sft": quality},
                                    "timings_s": {"sft": 10.0 + seed, "sample": 5.0}, "preference_pairs": {"intra": 4},
                                    "dgdpo_train": {"train/reward_accuracy_intra": 0.5, "train/loss_intra": 0.7}}))
        return path

    out = collect([summary(0, 2.0, {"a": 1}), summary(1, 4.0, {"a": 1})], tmp_path / "out")
    assert out["captions"][0]["caption_r1"] == "3.00 ± 1.41"
    assert out["captions"][0]["attribute_precision"] == "50.00 ± 0.00"
    assert out["timings"][0] == {"stage": "sft", "seed_0": "10", "seed_1": "11"}  # per seed: solo or shared machine
    assert out["timings"][-2] == {"stage": "total (stages)", "seed_0": "15", "seed_1": "16"}
    assert out["timings"][-1] == {"stage": "pipeline wall time (this invocation)", "seed_0": "—", "seed_1": "—"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "captions.json", "preferences.json", "summary_s0.json", "summary_s1.json", "timings.json"]
    from experiments.care_dpo.collect import comparable_settings

    assert comparable_settings({"configs": {"sft": "a.yaml", "data": None}}) == comparable_settings(
        {"configs": {"sft": ["a.yaml"], "data": []}})
    with pytest.raises(ValueError, match="different pipeline settings"):
        collect([summary(0, 2.0, {"a": 1}), summary(1, 4.0, {"a": 2})], tmp_path / "mixed")


def test_collect_keeps_the_preference_stores_gzipped_and_counts_the_committed_ones_unchanged(tmp_path: Path) -> None:
    """A store is copied as ``preferences_s<seed>.jsonl.gz`` (a plain one compressed, a gzipped one as is) and
    recounted from it; the committed seed-0 store gives the pair counts the committed table shows."""
    import gzip

    from experiments.care_dpo.collect import collect

    committed = Path(__file__).resolve().parents[2] / "results" / "care_dpo_pipeline"
    table = {row["seed"]: row for row in json.loads((committed / "preferences.json").read_text())["rows"]}
    summary = json.loads((committed / "summary_s0.json").read_text())
    (tmp_path / "s0.json").write_text(json.dumps(summary))
    plain = tmp_path / "store.jsonl"
    plain.write_bytes(gzip.decompress((committed / "preferences_s0.jsonl.gz").read_bytes()))
    out = tmp_path / "out"
    first = collect([tmp_path / "s0.json"], out, [plain])
    target = out / "preferences_s0.jsonl.gz"
    assert gzip.decompress(target.read_bytes()) == plain.read_bytes()
    counts = {k: table[0][k] for k in ("intra", "inter", "intra_ties", "inter_conflicts")}
    assert {k: first["preferences"][0][k] for k in counts} == counts
    again = collect([tmp_path / "s0.json"], out, [target])  # recollecting from the stores already in --out
    assert again["preferences"] == first["preferences"]
    packed = collect([tmp_path / "s0.json"], tmp_path / "out2", [committed / "preferences_s0.jsonl.gz"])
    assert (tmp_path / "out2" / "preferences_s0.jsonl.gz").read_bytes() == (
        committed / "preferences_s0.jsonl.gz").read_bytes() and packed["preferences"] == first["preferences"]


def test_timed_runs_table_the_wall_time_of_whole_runs_and_refuse_a_run_that_reused_stages(tmp_path: Path) -> None:
    from experiments.care_dpo.collect import timed_runs

    def summary(name: str, wall: float, skipped: list[str]) -> Path:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"seed": 2, "retrieval": {"sft-role": {}, "dgdpo-role": {}},
                                    "timings_s": {"sft": 100.4, "dgdpo": 50.0}, "wall_s": wall,
                                    "skipped_stages": skipped}))
        return path

    rows = timed_runs([f"default command={summary('core', 1650.0, [])}"], tmp_path / "out")
    assert rows == [{"run": "default command", "seed": 2, "retrievers": "sft-role, dgdpo-role", "stages_s": "150",
                     "wall_s": "1650", "wall_min": "27.5"}]
    assert json.loads((tmp_path / "out" / "timed_runs.json").read_text()) == {"seeds": "2", "rows": rows}
    assert (tmp_path / "out" / "timed_0_s2.json").is_file()
    with pytest.raises(ValueError, match="reused from an earlier run"):
        timed_runs([f"again={summary('again', 20.0, ['sft'])}"], tmp_path / "out")
    with pytest.raises(ValueError, match="LABEL=path"):
        timed_runs([str(summary("nolabel", 20.0, []))], tmp_path / "out")
