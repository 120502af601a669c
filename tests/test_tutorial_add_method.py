"""The "Add a method" page (docs/how-to/add-a-method.md) runs exactly as written.

Every fenced block of the page is either a file (``title="<path>"``: written to that path) or a ``bash`` block (run
as it stands, ``python`` being this interpreter); any other block is an error, since it could not be checked. In
page order, in a copy of the repository without ``results/`` and the machine's own ``configs/local/`` files, the
test writes the files and runs the commands, then checks what the page says they leave: the run's ``metrics.json``
(the new class, found by its short class name with no registration edited), the unit test and config tests passing,
a search whose query is answered with the scores the run's test computed (so the caption's video comes first among
the test videos exactly when the evaluation ranked it first), both sweep runs finished, and a report that lists
them. Sizes are those the page itself states (its ``configs/local/small.yaml``); nothing is overridden here.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.run_helpers import REPO

PAGE = REPO / "docs" / "how-to" / "add-a-method.md"
FENCE = re.compile(r"^```(?P<info>[^`\n]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="(?P<path>[^"]+)"')
# top-level entries of the checkout that the page neither needs nor may see (results: 11 MB of registered runs;
# the rest: outputs and environments of this checkout, which the page's commands must create themselves)
NOT_COPIED = {".git", ".venv", "results", "runs", "data", "search", "reports", "site", "wandb", "lightning_logs",
              ".pytest_cache", ".ruff_cache", ".cache", "__pycache__"}
BLOCK_TIMEOUT = 600  # seconds per shell block (a fit here takes well under a minute of CPU)
# files each step of the page must create (a page that loses a step fails here, not in a later check)
STEPS = ("lightning_modules/", "configs/model/", "configs/experiments/", "tests/lightning_modules/test_",
         "configs/local/", "experiments/sweeps/")


@dataclass(frozen=True)
class Block:
    line: int  # of the opening fence, 1-based
    info: str  # what follows the opening backticks
    body: str

    @property
    def path(self) -> str | None:
        found = TITLE.search(self.info)
        return found.group("path") if found else None

    @property
    def is_command(self) -> bool:
        return self.path is None and self.info.split()[:1] == ["bash"]


def page_blocks(text: str) -> list[Block]:
    """The page's fenced blocks in order; a block that is neither a file nor a bash command is a ValueError."""
    blocks = []
    for match in FENCE.finditer(text):
        block = Block(text.count("\n", 0, match.start()) + 1, match.group("info").strip(), match.group("body"))
        if block.path is None and not block.is_command:
            raise ValueError(f"{PAGE}:{block.line}: a ```{block.info} block is neither a file (title=\"<path>\") nor "
                             "a bash command: the tutorial test could not check it")
        if block.path is not None and (Path(block.path).is_absolute() or ".." in Path(block.path).parts):
            raise ValueError(f"{PAGE}:{block.line}: title={block.path!r} is not a path inside the repository")
        blocks.append(block)
    return blocks


def copy_checkout(target: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder).resolve()
        skipped = {n for n in names if n in NOT_COPIED} if here == REPO else {n for n in names if n == "__pycache__"}
        if here == REPO / "configs" / "local":  # this machine's own settings (git-ignored), not the page's
            skipped |= {n for n in names if n != "README.md"}
        return skipped

    shutil.copytree(REPO, target, ignore=ignore, symlinks=True)


def run_block(block: Block, cwd: Path, env: dict[str, str], log: Path) -> str:
    """Run a bash block as written (``-e``: its first failing command fails it); returns its output."""
    with log.open("w") as out:
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.body], cwd=cwd, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=BLOCK_TIMEOUT, check=False)
    output = log.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        pytest.fail(f"{PAGE}:{block.line}: this block exited {proc.returncode}:\n{block.body}\n--- last lines of its "
                    f"output ({log}):\n{tail}")
    return output


def query_hits(output: str) -> dict[str, float]:
    """``{video id: score}`` of the table ``experiments.search query`` prints (``rank score duration path``)."""
    hits = {}
    for line in output.splitlines():
        match = re.fullmatch(r"\s*\d+\s+(-?\d+\.\d+)\s+\S+ s\s+(\S+)", line)
        if match:
            hits[Path(match.group(2)).stem] = float(match.group(1))
    return hits


def test_the_page_has_only_blocks_the_test_can_check() -> None:
    blocks = page_blocks(PAGE.read_text(encoding="utf-8"))
    paths = [b.path for b in blocks if b.path is not None]
    missing = [step for step in STEPS if not any(p.startswith(step) for p in paths)]
    assert not missing, f"{PAGE} writes no file under {missing}"
    assert any(b.is_command for b in blocks)
    with pytest.raises(ValueError, match=r":3: a ```python block is neither a file"):
        page_blocks("text\n\n```python\nprint('not a file')\n```\n")


def test_every_block_of_the_page_runs_and_does_what_the_page_says(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    copy_checkout(repo)
    # the page's `python` is the active environment's, as after `source .venv/bin/activate`: this test's
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "python").is_file():
        pytest.fail(f"no `python` beside {sys.executable}: run the tests from the suite's environment (make venv)")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(repo)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    outputs: dict[str, str] = {}
    for i, block in enumerate(page_blocks(PAGE.read_text(encoding="utf-8"))):
        if block.path is not None:
            target = repo / block.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body, encoding="utf-8")
        else:
            outputs[block.body] = run_block(block, repo, env, tmp_path / f"block{i:02d}.log")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"the page's commands: {after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime:.0f} s CPU")

    # the unit test and the config tests ran and passed (a -k that selects nothing exits 5, which fails the block)
    (tests_output,) = [out for body, out in outputs.items() if "-m pytest" in body]
    assert re.search(r"\b([4-9]|\d\d+) passed\b", tests_output), tests_output[-2000:]

    # training and test: the class by its short name, the test split of the page's small SynthVTR
    run = repo / "runs" / "clip4clip_maxpool_synthvtr" / "version_0"
    record = json.loads((run / "test" / "metrics.json").read_text())
    assert (record["num_texts"], record["num_videos"]) == (10, 2), record
    # exported by the package (lightning_modules/registry.py), so LightningCLI records the short package path
    assert "class_path: lightning_modules.CLIP4ClipMaxPool" in (run / "config.yaml").read_text()

    # search: the index is exact, and the query's scores are the run's test similarities
    manifest = json.loads((repo / "search" / "clip4clip_maxpool" / "manifest.json").read_text())
    assert manifest["search"]["exact"] is True and manifest["num_indexed"] == 12
    assert manifest["checkpoint"]["method"] == "CLIP4ClipMaxPool"
    (query_body,) = [body for body in outputs if "experiments.search query" in body]
    query = shlex.split(query_body.replace("\\\n", " "))[-1]
    (dataset,) = (repo / "data" / "small").glob("synthvtr-*")
    sentences = json.loads((dataset / "MSRVTT_data.json").read_text())["sentences"]
    text_ids = json.loads((run / "test" / "text_ids.json").read_text())
    video_ids = json.loads((run / "test" / "video_ids.json").read_text())
    described = [f"{s['video_id']}#{s['sen_id']}" for s in sentences if s["caption"] == query]
    assert len(described) == 1 and described[0] in text_ids, f"the page's query {query!r} is no test caption"
    assert described[0].split("#")[0] == "synth00004", "the page says the query describes synth00004"
    assert video_ids == ["synth00004", "synth00005"], "the page names the two test videos"
    row = np.load(run / "test" / "sim_t2v.npy")[text_ids.index(described[0])]
    hits = query_hits(outputs[query_body])
    assert len(hits) == 12, outputs[query_body]
    for column, video_id in enumerate(video_ids):
        assert hits[video_id] == pytest.approx(float(row[column]), abs=1e-4), (video_id, hits, row)
    searched = sorted(video_ids, key=lambda v: -hits[v])
    assert searched[0] == video_ids[int(row.argmax())], "the expected video: the test's first for this caption"

    # the sweep: both settings ran to their test
    sweep = repo / "runs" / "sweeps" / "clip4clip-maxpool-normalize"
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert sorted(r["run"] for r in summary) == ["normalize_frames=false", "normalize_frames=true"], summary
    assert all(r["status"] == "ran" and r["returncode"] == 0 for r in summary), summary
    assert len(list(sweep.glob("normalize_frames=*/version_0/test/metrics.json"))) == 2

    # the report lists the two runs as two groups labelled by the switch
    report = (repo / "reports" / "clip4clip_maxpool" / "report.md").read_text()
    assert "2 runs in 2 groups" in report
    for value in ("false", "true"):
        assert f"CLIP4ClipMaxPool normalize_frames={value}" in report
