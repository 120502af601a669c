"""The report's query browser: texts, thumbnails, aux captions and SynthVTR family badges read from real tiny CLI
runs (fake MSR-VTT with narration, a tiny SynthVTR), then the page itself in a headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from experiments.report import main as report
from experiments.report.browser import THUMB_FRAMES, THUMB_SIZE
from main import main
from tests.browser_helpers import chromium, find_chromium, serve
from tests.run_helpers import TINY_CLIP4CLIP, csv_logger

# 6 families of 2 videos, 3 of them in the test split: 6 test videos, 30 queries (5 captions each)
SYNTH_DATA = {"video_dir": "videos", "num_families": 6, "family_size": 2, "test_families": 3, "val_families": 1,
              "video_size": 32, "video_frames": 16, "num_frames": 4, "image_size": 64, "batch_size": 4,
              "eval_batch_size": 3, "num_workers": 0, "generator_workers": 1, "train_sampling": "uniform"}
NARRATION = {"narration": "captions/narration_test.jsonl"}


@pytest.fixture(scope="module")
def runs(narrated_msrvtt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CLIP4Clip meanP and seqTransf on a fake MSR-VTT with a narration store, CLIP4Clip meanP on a tiny SynthVTR."""
    out = tmp_path_factory.mktemp("browser_runs")
    for header in ("meanP", "seqTransf"):
        main(["fit", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(narrated_msrvtt),
              "--model.init_args.sim_header", header, "--data.init_args.train_sampling", "uniform",
              "--data.init_args.aux_captions", json.dumps(NARRATION), "--trainer.max_epochs", "1",
              "--trainer.logger", csv_logger(out, f"msrvtt_{header}")])
    synth = tmp_path_factory.mktemp("synth_data")
    data_config = tmp_path_factory.mktemp("synth_config") / "synthvtr.yaml"
    data_config.write_text(yaml.safe_dump({"data": {"class_path": "SynthVTR",
                                                    "init_args": {"root": str(synth), **SYNTH_DATA}}}))
    main(["fit", "--config", str(TINY_CLIP4CLIP), "--config", str(data_config), "--model.init_args.sim_header",
          "meanP", "--trainer.max_epochs", "1", "--trainer.logger", csv_logger(out, "synthvtr_meanP")])
    return out


@pytest.fixture(scope="module")
def built(runs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("browser_report") / "cmp"
    report([str(runs), "--out", str(out), "--resamples", "200"])
    return {"out": out, "html": (out / "index.html").read_text(), "md": (out / "report.md").read_text()}


def page_data(html: str) -> dict[str, Any]:
    found = re.search(r"<script type='application/json' id='qb-data'>(.*?)</script>", html, re.S)
    assert found, "index.html has no query-browser data"
    return json.loads(found.group(1))


def by_dataset(data: dict[str, Any]) -> dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]:
    """dataset -> (its groups, their query set)."""
    out: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
    for g in data["groups"]:
        out.setdefault(g["dataset"], ([], data["sets"][g["set"]]))[0].append(g)
    return out


def test_queries_carry_their_text_thumbnails_and_aux_captions(built: dict[str, Any], narrated_msrvtt: Path) -> None:
    data = page_data(built["html"])
    assert [g["id"] for g in data["groups"]] == ["G1", "G2", "G3"] and data["notes"] == []
    assert built["html"].count("</script>") == 2  # the data (no "<" in it) and the code
    sets = by_dataset(data)
    assert sorted(sets) == ["msrvtt", "synthvtr"]
    groups, msrvtt = sets["msrvtt"]
    assert len(groups) == 2
    # 6 test texts: 2 worst, 2 best, 2 random per group; the two groups' samples together
    assert all(sum(g["id"] in q["kinds"] for q in msrvtt["queries"]) == 6 for g in groups)
    csv_text = (narrated_msrvtt / "MSRVTT_JSFUSION_test.csv").read_text()
    for text_id, text in msrvtt["texts"]:
        assert re.fullmatch(r"a \w+ square moves right", text) and f"{text_id},msr" in csv_text
    for q in msrvtt["queries"]:
        for g in groups:  # every group's results on every shown query, for the side-by-side view
            rank, top, scores = q["res"][g["id"]]
            assert len(top) == len(scores) == 5 and 1 <= rank <= 6
            assert (rank == 1) == (top[0] == q["gt"])
    assert msrvtt["stores"] == [["narration", str(narrated_msrvtt / NARRATION["narration"])]]
    assert all(g["stores"] == [0] for g in groups)
    for video in msrvtt["videos"]:
        assert video["family"] is None
        assert len(video["aux"]["0"]) == 3 and video["aux"]["0"][0].startswith("a ") and "frame" in video["aux"]["0"][0]
        thumb = built["out"] / video["thumb"]
        assert video["thumb"] == f"thumbs/{video['id']}.jpg" and thumb.is_file()
        with Image.open(thumb) as img:
            assert img.format == "JPEG" and img.size == (THUMB_FRAMES * THUMB_SIZE, THUMB_SIZE)
    md = built["md"].split("## Qualitative: sample queries")[1]
    assert "| kind | text id | query | GT rank | GT video | top-5 videos |" in md
    assert re.search(r"\| worst \| ret\d \| a \w+ square moves right \| \d \| video\d+ \|", md)


def test_synthvtr_near_duplicates_get_a_family_badge(built: dict[str, Any]) -> None:
    groups, synth = by_dataset(page_data(built["html"]))["synthvtr"]
    assert synth["families"] is True and synth["stores"] == [] and len(groups) == 1
    (g,) = groups
    assert sum(g["id"] in q["kinds"] for q in synth["queries"]) == 15  # 30 queries: 5 worst, 5 best, 5 random
    videos = synth["videos"]
    assert all(isinstance(v["family"], int) and v["thumb"] for v in videos)
    confusions = [(q, v) for q in synth["queries"] for v in q["res"][g["id"]][1]
                  if v != q["gt"] and videos[v]["family"] == videos[q["gt"]]["family"]]
    assert confusions  # each test video has one sibling, so top-5 lists of 6 videos hold it
    assert "(same family)" in built["md"].split("## Qualitative: sample queries")[1]
    texts = [t for _, t in synth["texts"]]
    assert all(t and t.strip() for t in texts)


def test_thumbnails_are_reused_by_the_next_report(built: dict[str, Any], runs: Path) -> None:
    thumbs = sorted((built["out"] / "thumbs").glob("*.jpg"))
    before = {p.name: p.stat().st_mtime_ns for p in thumbs}
    report([str(runs), "--out", str(built["out"]), "--resamples", "200"])
    data = page_data((built["out"] / "index.html").read_text())
    assert data["thumbs"] == {"made": 0, "reused": len(before)}
    assert {p.name: p.stat().st_mtime_ns for p in (built["out"] / "thumbs").glob("*.jpg")} == before
    assert len(json.loads((built["out"] / "thumbs" / "index.json").read_text())) == len(before)


def test_missing_data_root_falls_back_to_ids_and_says_so(runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "moved" / "version_0"
    shutil.copytree(runs / "msrvtt_meanP" / "version_0", run)
    config_path = run / "test" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["data"]["init_args"]["root"] = str(tmp_path / "nowhere")
    config_path.write_text(yaml.safe_dump(config))
    report([str(run), "--out", str(tmp_path / "out"), "--resamples", "200"])
    html = (tmp_path / "out" / "index.html").read_text()
    data = page_data(html)
    assert len(data["notes"]) == 1 and f"data root `{tmp_path / 'nowhere'}` not found" in data["notes"][0]
    assert f"<p class='qb-note'>G1: MSRVTT: data root <code>{tmp_path / 'nowhere'}</code> not found" in html
    (qs,) = data["sets"]
    assert all(text is None for _, text in qs["texts"]) and all(v["thumb"] is None for v in qs["videos"])
    assert not (tmp_path / "out" / "thumbs").exists()
    assert "data root" in (tmp_path / "out" / "report.md").read_text()


# ------------------------------------------------------------------ the page in a real browser
IMAGES_LOADED = "Array.from(document.images).every(i => i.complete)"
BROKEN_IMAGES = "Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.getAttribute('src'))"


def _select(page: Any, element: str, value: str | bool) -> None:
    prop = "checked" if isinstance(value, bool) else "value"
    page.evaluate(f"(() => {{ const e = document.getElementById({json.dumps(element)}); e.{prop} = "
                  f"{json.dumps(value)}; e.dispatchEvent(new Event('change')); }})()")
    page.wait_for(IMAGES_LOADED)


def test_page_in_headless_chromium(built: dict[str, Any], tmp_path: Path) -> None:
    binary, why = find_chromium()
    if binary is None:
        pytest.skip(f"no Chromium for the browser check: {why}")
    data = page_data(built["html"])
    with serve(built["out"]) as url, chromium(binary) as page:
        page.open(url + "index.html")
        page.wait_for(IMAGES_LOADED)
        assert page.evaluate(BROKEN_IMAGES) == []
        assert page.evaluate("document.images.length") > 30  # thumbnails + the inline figures
        assert page.evaluate("document.querySelectorAll('#main-table table tbody tr').length") == 3
        # browse: every group's sampled queries, each with its text
        cards = page.evaluate("Array.from(document.querySelectorAll('.qb-card')).map(c => c.dataset.group)")
        assert sorted(set(cards)) == ["G1", "G2", "G3"] and len(cards) == 6 + 6 + 15
        assert page.evaluate("document.getElementById('qb-list').innerText.includes('(text unavailable)')") is False
        assert page.evaluate("document.querySelectorAll('.qb-card .qb-aux li').length") > 0
        # filter by group: the SynthVTR group alone, with its family badges
        _select(page, "qb-group", "G3")
        assert set(page.evaluate("Array.from(document.querySelectorAll('.qb-card')).map(c => c.dataset.group)")) \
            == {"G3"}
        assert page.evaluate("document.querySelectorAll('.qb-badge-fam').length") > 0
        _select(page, "qb-kind", "worst")
        assert page.evaluate("document.querySelectorAll('.qb-card').length") == 5
        _select(page, "qb-kind", "")
        # compare G1 and G2 side by side on the same queries
        _select(page, "qb-compare", True)
        _select(page, "qb-a", "G1")
        _select(page, "qb-b", "G2")
        pairs = page.evaluate("Array.from(document.querySelectorAll('.qb-pair')).map(p => "
                              "Array.from(p.querySelectorAll('.qb-col')).map(c => c.dataset.group + ':' + "
                              "c.querySelectorAll('.qb-v').length))")
        msrvtt = by_dataset(data)["msrvtt"][1]
        assert len(pairs) == len(msrvtt["queries"]) > 0
        assert all(p[0].startswith("G1:") and p[1].startswith("G2:") for p in pairs)
        assert all(int(c.split(":")[1]) in (5, 6) for p in pairs for c in p)
        assert page.evaluate("document.getElementById('qb-group').disabled") is True
        assert page.evaluate(BROKEN_IMAGES) == []
        page.evaluate("document.getElementById('qb').scrollIntoView()")
        shot = page.screenshot(tmp_path / "report_browser.png")
        # G1 and G3 were tested on different datasets: no common query, said in the status line
        _select(page, "qb-b", "G3")
        assert "different test sets" in page.evaluate("document.getElementById('qb-status').textContent")
        assert page.console_errors() == []
    with Image.open(shot) as img:
        assert img.size == (1400, 2000)
