"""The comparison report (experiments/report): real run folders from the CLI, then the report on them."""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest
import yaml

from experiments.report import main as report
from experiments.results.errors import ReportError
from experiments.results.papers import COLUMNS
from main import main
from tests.report_helpers import METRIC_COLUMNS, table
from tests.run_helpers import TINY_CLIP4CLIP, csv_logger


def test_report_files_are_written_and_html_is_self_contained(built: dict) -> None:
    assert (built["out"] / "report.md").is_file() and (built["out"] / "index.html").is_file()
    html = built["html"]
    assert html.count("data:image/png;base64,") >= 2  # training curves + rank histogram, inline
    # inline CSS and scripts only: no asset the page would fetch from elsewhere
    assert not re.search(r"""<[^>]+ (src|href)=['"]?(https?:|//)""", html) and "<script src" not in html
    assert html.count("<link") == 1 and "<link rel='icon' href='data:,'>" in html
    assert (built["out"] / "plots" / "training_curves.png").is_file()


def test_main_table_is_one_row_per_method_with_the_mean_over_seeds(built: dict, runs: Path) -> None:
    rows = table(built["md"], "Main table")
    assert sorted(r["method"] for r in rows) == ["CLIP4Clip meanP", "CLIP4Clip seqTransf"]
    records: dict[str, list[dict]] = {}
    for path in runs.rglob("test/metrics.json"):
        header = yaml.safe_load((path.parent / "config.yaml").read_text())["model"]["init_args"]["sim_header"]
        records.setdefault(header, []).append(json.loads(path.read_text()))
    for row in rows:
        recs = records[row["method"].split()[1]]
        assert row["runs"] == "2" and row["seeds"] == "0,1"
        for column, key in METRIC_COLUMNS.items():
            values = [r["metrics"][key] for r in recs]
            assert row[column] == f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}", column


def test_paper_columns_come_from_the_csv_and_never_replace_ours(built: dict, runs: Path, tmp_path: Path) -> None:
    rows = {r["method"]: r for r in table(built["md"], "Main table")}
    assert "43.1 (CLIP4Clip meanP" in rows["CLIP4Clip meanP"]["paper T2V R@1"]
    assert "44.5 (CLIP4Clip seqTransf" in rows["CLIP4Clip seqTransf"]["paper T2V R@1"]
    assert "44.5" not in rows["CLIP4Clip meanP"]["paper T2V R@1"]  # another named variant never matches
    papers = tmp_path / "papers.csv"
    with papers.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerow(["CLIP4Clip seqTransf", "msrvtt", "ViT-B/32", "1k-A", "t2v_R1", "99.9", "test paper, Table 9"])
    out = tmp_path / "custom"
    report([str(runs), "--out", str(out), "--papers", str(papers), "--no-matrices"])
    md = (out / "report.md").read_text()
    custom = {r["method"]: r for r in table(md, "Main table")}
    assert custom["CLIP4Clip seqTransf"]["paper T2V R@1"].startswith("99.9")
    assert custom["CLIP4Clip seqTransf"]["T2V R@1"] == rows["CLIP4Clip seqTransf"]["T2V R@1"]
    assert custom["CLIP4Clip meanP"]["paper T2V R@1"] == "—"
    assert "test paper, Table 9" in md.split("## Papers' numbers")[1]


def test_bootstrap_section_compares_the_pair(built: dict, runs: Path) -> None:
    rows = table(built["md"], "Paired comparison (bootstrap over queries)")
    assert len(rows) == 1
    row = rows[0]
    assert row["A"].startswith("G1 CLIP4Clip meanP") and row["B"].startswith("G2 CLIP4Clip seqTransf")
    assert row["queries"] == "6" and "s0:" in row["ΔR@1 per seed [95 % CI]"] and "s1:" in row["ΔR@1 per seed [95 % CI]"]
    r1 = {h: statistics.fmean(json.loads(p.read_text())["metrics"]["t2v_R1"] for p in runs.glob(f"{h}_s*/*/test/"
                                                                                                  "metrics.json"))
          for h in ("meanP", "seqTransf")}
    assert row["pooled ΔR@1 [95 % CI]"].startswith(f"{r1['meanP'] - r1['seqTransf']:+.2f} [")
    assert "no mismatch" in built["md"].split("## Checks")[1]


def test_registered_copies_give_the_report_of_their_run_folders(built: dict, runs: Path, tmp_path: Path) -> None:
    """Registered into a study (compact files, no matrix), the four runs give the same tables, bootstrap intervals,
    plots and sampled queries as their run folders."""
    from experiments.registry.register import main as register

    study = tmp_path / "results" / "cmp"
    # --allow-dirty: these runs record the tester's working tree, which may hold uncommitted changes
    register([f"{p}={p.parent.name}" for p in sorted(runs.glob("*/version_0"))]
             + ["--study", str(study), "--allow-dirty"])
    assert not list(study.rglob("*.npy"))
    out = tmp_path / "registered"
    report([str(study), "--out", str(out), "--resamples", "2000"])
    md = (out / "report.md").read_text()
    for section in ("Main table", "Paired comparison (bootstrap over queries)"):
        assert table(md, section) == table(built["md"], section), section
    for png in ("gt_rank_hist.png", "training_curves.png"):
        assert (out / "plots" / png).read_bytes() == (built["out"] / "plots" / png).read_bytes(), png
    assert "no mismatch" in md.split("## Checks")[1] and "a registered run's from `queries.npz`" in md

    def queries(html: str) -> list:
        data = json.loads(html.split("<script type='application/json' id='qb-data'>")[1].split("</script>")[0])
        return [([v["id"] for v in s["videos"]], [(q["kinds"], q["res"]) for q in s["queries"]]) for s in data["sets"]]

    assert queries((out / "index.html").read_text()) == queries(built["html"])


def test_sweep_table_rows_are_the_swept_parameter(built: dict, runs: Path, tmp_path: Path) -> None:
    rows = table(built["md"], f"Sweep {runs.name}")
    assert sorted(r["sim_header"] for r in rows) == ["meanP", "seqTransf"]
    assert all(r["seeds"] == "0,1" for r in rows)
    sweep = tmp_path / "sweep"
    shutil.copytree(runs, sweep)
    (sweep / "sweep_summary.json").write_text(json.dumps([{"run": "ok", "returncode": 0, "metrics": {"t2v_R1": 1}},
                                                          {"run": "broken", "returncode": 1, "metrics": None}]))
    report([str(sweep), "--out", str(tmp_path / "out"), "--no-matrices"])
    assert "2 runs launched, 1 failed: `broken`" in (tmp_path / "out" / "report.md").read_text()


def test_explicit_compare_and_an_unknown_group(runs: Path, tmp_path: Path) -> None:
    report([str(runs / "meanP_s0"), str(runs / "seqTransf_s*"), "--out", str(tmp_path / "a"),
            "--compare", "seqTransf", "meanP", "--resamples", "500"])
    rows = table((tmp_path / "a" / "report.md").read_text(), "Paired comparison (bootstrap over queries)")
    assert rows[0]["A"].startswith("G2 CLIP4Clip seqTransf") and rows[0]["ΔR@1 per seed [95 % CI]"].startswith("s0:")
    with pytest.raises(ReportError, match="matches no group"):
        report([str(runs), "--out", str(tmp_path / "b"), "--compare", "NarVid", "G1"])


# ------------------------------------------------------------------ unit tests


# ------------------------------------------------------------------ the demo's report step, re-tests
def test_demo_report_step_on_the_demo_layout(runs: Path, fake_msrvtt: Path, tmp_path: Path) -> None:
    """experiments.demo's last step on the demo's layout (out/<name>/version_0 + a `test --ckpt_path` re-test):
    the re-test is recognised from its artifacts, listed under Checks and not counted in its group."""
    from experiments import demo

    out = tmp_path / "demo"
    shutil.copytree(runs / "meanP_s0", out / "clip4clip_meanP")
    shutil.copytree(runs / "seqTransf_s0", out / "clip4clip_seqTransf")
    best = next((out / "clip4clip_seqTransf" / "version_0" / "checkpoints").glob("best-*.ckpt"))
    retest = main(["test", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt),
                   "--model.init_args.sim_header", "seqTransf", "--trainer.logger",
                   csv_logger(out, "clip4clip_seqTransf_retest"), "--ckpt_path", str(best)])
    retest_dir = Path(retest.trainer.log_dir)
    rows = []
    for name in ("clip4clip_meanP", "clip4clip_seqTransf"):
        run_dir = out / name / "version_0"
        rows.append({"name": name, "run_dir": run_dir, "seconds": 1.0, "recompute_diff":
                     demo.recompute_check(run_dir / "test"),
                     "record": json.loads((run_dir / "test" / "metrics.json").read_text())})
    again = json.loads((retest_dir / "test" / "metrics.json").read_text())["metrics"]
    diff = max(abs(again[k] - rows[1]["record"]["metrics"][k]) for k in METRIC_COLUMNS.values())
    summary = demo.finish(out, rows, retest_dir, diff, 0, 5.0).read_text()

    assert f"Full comparison report: `{out / 'report' / 'report.md'}`" in summary
    assert "| clip4clip_seqTransf | " in summary and "max |diff| = 0.00e+00" in summary
    assert "reproduces the end-of-fit test metrics: max |diff| = 0.00e+00" in summary
    md = (out / "report" / "report.md").read_text()
    assert (out / "report" / "index.html").is_file() and md.startswith("# vtr demo")
    assert "2 runs in 2 groups (+ 1 re-test(s) of their checkpoints, listed under Checks)" in md
    rows_md = {r["method"]: r for r in table(md, "Main table")}
    assert rows_md["CLIP4Clip seqTransf"]["runs"] == "1" and rows_md["CLIP4Clip meanP"]["runs"] == "1"
    checks = md.split("## Checks")[1]
    assert (f"`{retest_dir}` re-tests (`main.py test --ckpt_path {best}`) the run "
            f"`{out / 'clip4clip_seqTransf' / 'version_0'}`: left out of the groups; its metrics differ from that "
            "run's test by at most 0.00e+00") in checks
    assert "appears more than once" not in checks

    # the command line on the whole demo folder: the same groups, the re-test again set apart
    report([str(out), "--out", str(tmp_path / "cli"), "--no-matrices"])
    cli_md = (tmp_path / "cli" / "report.md").read_text()
    assert {r["method"]: r["runs"] for r in table(cli_md, "Main table")} == {"CLIP4Clip meanP": "1",
                                                                              "CLIP4Clip seqTransf": "1"}
    assert "left out of the groups" in cli_md.split("## Checks")[1]


def _write_postprocessed(test_dir: Path, flag: str, sim: np.ndarray, postprocess: dict) -> dict:
    """A metrics_<flag>.json + sim_t2v_<flag>.npy pair as BaseRetrievalModule writes them."""
    from lightning_modules.metrics import retrieval_metrics

    record = json.loads((test_dir / "metrics.json").read_text())
    gt = json.loads((test_dir / "text_to_video.json").read_text())
    np.save(test_dir / f"sim_t2v_{flag}.npy", sim.astype(np.float32))
    metrics = retrieval_metrics(sim.astype(np.float32), gt)
    if postprocess.get("directions", {}).get("v2t") == "not post-processed":  # v2t stays the plain matrix's
        plain = retrieval_metrics(np.load(test_dir / "sim_t2v.npy").astype(np.float32), gt)
        metrics.update({k: v for k, v in plain.items() if k.startswith("v2t_")})
        metrics["rsum"] = sum(metrics[f"{d}_R{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10))
    record["metrics"] = {**record["metrics"], **metrics}
    record["postprocess"] = postprocess
    (test_dir / f"metrics_{flag}.json").write_text(json.dumps(record))
    return record


def test_postprocessed_numbers_get_their_own_columns_and_section(runs: Path, tmp_path: Path) -> None:
    from lightning_modules.postprocess import dual_softmax, qb_norm

    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    written: dict[str, list[dict]] = {"dsl": [], "qbnorm": []}
    plain: list[float] = []
    for test_dir in sorted(copy.glob("meanP_s*/version_0/test")):  # only the meanP group is post-processed
        sim = np.load(test_dir / "sim_t2v.npy")
        plain.append(json.loads((test_dir / "metrics.json").read_text())["metrics"]["t2v_R1"])
        written["dsl"].append(_write_postprocessed(test_dir, "dsl", dual_softmax(sim, 100.0), {
            "name": "dsl", "params": {"temperature": 100.0}, "bank": {"split": "test", "size": 6}}))
        bank = np.random.default_rng(0).uniform(-0.1, 0.3, (10, sim.shape[1])).astype(np.float32)
        written["qbnorm"].append(_write_postprocessed(test_dir, "qbnorm", qb_norm(sim, bank), {
            "name": "qbnorm", "params": {"beta": 20.0, "topk": 1}, "bank": {"split": "train", "size": 10},
            "directions": {"t2v": "qbnorm", "v2t": "not post-processed"}}))
    out = tmp_path / "out"
    report([str(copy), "--out", str(out), "--resamples", "200"])
    md = (out / "report.md").read_text()
    rows = {r["method"]: r for r in table(md, "Main table")}
    meanp, seq = rows["CLIP4Clip meanP"], rows["CLIP4Clip seqTransf"]
    for flag, records in written.items():
        values = [r["metrics"]["t2v_R1"] for r in records]
        assert meanp[f"T2V R@1 [{flag}]"] == f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"
        assert seq[f"T2V R@1 [{flag}]"] == "—"
    # the plain columns stay the plain numbers, the provenance column names the files
    assert meanp["T2V R@1"] == f"{statistics.fmean(plain):.2f} ± {statistics.stdev(plain):.2f}"
    assert meanp["post-processing"] == "metrics_dsl.json, metrics_qbnorm.json" and seq["post-processing"] == "none"
    section = {(r["method"], r["flag"]): r for r in table(md, "Post-processed (test time)")}
    assert set(section) == {("CLIP4Clip meanP", "dsl"), ("CLIP4Clip meanP", "qbnorm")}
    dsl, qb = section["CLIP4Clip meanP", "dsl"], section["CLIP4Clip meanP", "qbnorm"]
    assert dsl["parameters"] == "temperature=100" and "transductive" in dsl["sees"] and dsl["runs"] == "2 of 2"
    assert qb["sees"] == "bank of 10 train-split texts" and qb["V2T R@1"] == "plain (not post-processed)"
    assert qb["plain T2V R@1"] == meanp["T2V R@1"]
    # the checks recompute every post-processed R@1 from its matrix too
    checks = md.split("## Checks")[1]
    assert "4 post-processed record(s)" in checks and "no mismatch" in checks
    bad = json.loads((copy / "meanP_s0" / "version_0" / "test" / "metrics_dsl.json").read_text())
    bad["metrics"]["t2v_R1"] = 99.0
    (copy / "meanP_s0" / "version_0" / "test" / "metrics_dsl.json").write_text(json.dumps(bad))
    report([str(copy), "--out", str(out), "--resamples", "200"])
    assert "metrics_dsl.json says 99.000" in (out / "report.md").read_text()
    (copy / "meanP_s0" / "version_0" / "test" / "metrics_dsl.json").write_text('{"metrics": {}}')
    with pytest.raises(ReportError, match=r"metrics_dsl.json: not a post-processed test record"):
        report([str(copy), "--out", str(out), "--no-matrices"])
