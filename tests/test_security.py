"""Safe to share (docs/reference/security.md): the findings about untrusted checkpoints and indexes, API keys and the
search server: one test per finding, each named after it. Planted pickles and planted modules only create a marker
folder in ``tmp_path``; servers listen on loopback only."""

from __future__ import annotations

import copy
import html.parser
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from experiments.search.checkpoint import load_retriever
from experiments.search.cli import main as search_main
from experiments.search.indexer import build_index
from experiments.search.page import results_table, serve, write_results_page
from experiments.search.searcher import Hit, SearchResult, VideoSearchIndex
from lightning_modules.captioning.backends import OpenAICompatible
from lightning_modules.captioning.backends.openai_compatible import APIError
from main import main
from tests.caption_helpers import FakeOpenAIAPI, serve_fake_api
from tests.run_helpers import REPO, TINY_CLIP4CLIP, csv_logger, serve_on_loopback

SECRET = "sk-test-NEVER-PRINT-7f3a9c"


class Payload:
    """Unpickling this runs ``os.mkdir(marker)``: the harmless stand-in for a command a planted file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.mkdir, (str(self.marker),)


def plant_module(folder: Path, name: str, marker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An importable module ``name`` whose import creates ``marker`` (a module a checkpoint may name)."""
    (folder / f"{name}.py").write_text(f"import os\nos.mkdir({str(marker)!r})\n\n\nclass Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, fake_msrvtt: Path) -> Path:
    """A tiny CLIP4Clip checkpoint written by ``main.py fit`` (one step: only its format matters here)."""
    tmp = tmp_path_factory.mktemp("security_fit")
    cli = main(["fit", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt),
                "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0",
                "--trainer.enable_progress_bar", "false", "--test_after_fit", "false",
                "--trainer.logger", csv_logger(tmp / "runs", "c4c")])
    return Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"


def clip(fake_msrvtt: Path, n: int) -> Path:
    """Test video ``n`` of the fake MSR-VTT (12: red, 13: green, 14: blue, 15: yellow, 16: white, 17: purple)."""
    return fake_msrvtt / "videos" / "all" / f"video{n}.mp4"


def index_folder(ckpt: Path, folder: Path, out: Path, **kwargs: Any) -> dict[str, Any] | None:
    return build_index(ckpt, folder, out, num_workers=0, progress=False, batch_size=2, **kwargs)


@pytest.fixture(scope="module")
def small_index(ckpt: Path, fake_msrvtt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three clips and an unreadable file, indexed."""
    tmp = tmp_path_factory.mktemp("security_index")
    folder = tmp / "videos"
    folder.mkdir()
    for n, name in ((12, "red"), (13, "green"), (14, "blue")):
        shutil.copy(clip(fake_msrvtt, n), folder / f"{name}.mp4")
    (folder / "broken.mp4").write_bytes(b"not a video")
    index_folder(ckpt, folder, tmp / "index")
    return {"folder": folder, "index": tmp / "index"}


def answers(index: Path, queries: list[str]) -> list[list[tuple[str, float]]]:
    """Every indexed video per query, as (id, score), from a freshly opened index."""
    searcher = VideoSearchIndex(index)
    return [[(h.video_id, h.score) for h in r.hits] for r in searcher.search(queries, k=100)]


def same_answers(got: list[list[tuple[str, float]]], expected: list[list[tuple[str, float]]]) -> bool:
    return all(len(g) == len(e) and all(a == c and abs(b - d) < 1e-5 for (a, b), (c, d) in zip(g, e, strict=True))
               for g, e in zip(got, expected, strict=True))


# ---------------------------------------------------------------------------------------------------- finding 1
ENTRY_POINTS = ["load_retriever", "index --ckpt", "query (manifest's checkpoint)", "index (planted shard)",
                "query (planted shard)", "two_stage", "captioner init_checkpoint", "care_dpo load_frozen",
                "main.py --ckpt_path"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_finding_1_opening_an_index_folder_or_a_checkpoint_runs_no_code(entry: str, ckpt: Path,
                                                                        small_index: dict[str, Path], tmp_path: Path,
                                                                        fake_msrvtt: Path) -> None:
    """A planted pickle in a checkpoint or a shard never runs: every entry point loads with ``weights_only=True``
    and names the file and what to do."""
    marker = tmp_path / "code_ran"
    planted = tmp_path / "untrusted.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    torch.save({**state, "extra": Payload(marker)}, planted)
    named = planted
    index = tmp_path / "index"
    shutil.copytree(small_index["index"], index)
    if entry == "load_retriever":
        call = lambda: load_retriever(planted)  # noqa: E731
    elif entry == "index --ckpt":
        call = lambda: index_folder(planted, small_index["folder"], tmp_path / "new_index")  # noqa: E731
    elif entry == "query (manifest's checkpoint)":
        # the manifest names the planted file and its sha256: integrity holds, trust does not follow from it
        from datamodules.checksums import file_sha256

        manifest = json.loads((index / "manifest.json").read_text())
        manifest["checkpoint"].update(path=str(planted), sha256=file_sha256(planted))
        (index / "manifest.json").write_text(json.dumps(manifest))
        call = lambda: VideoSearchIndex(index)  # noqa: E731
    elif entry in ("index (planted shard)", "query (planted shard)"):
        # indexing reads every shard of the folder; a query those its rows come from: replace the first one
        named = sorted((index / "shards").glob("*.pt"))[0]
        if entry == "index (planted shard)":
            named = named.with_name("999-planted-0000000.pt")
        torch.save({"ids": [], "embedding": None, "features": {}, "failed": [], "duration": {},
                    "extra": Payload(marker)}, named)
        if entry == "index (planted shard)":
            call = lambda: index_folder(ckpt, small_index["folder"], index)  # noqa: E731
        else:
            call = lambda: VideoSearchIndex(index).video_features()  # noqa: E731
    elif entry == "two_stage":
        from experiments.search.two_stage import evaluate

        call = lambda: evaluate(planted, tmp_path / "work", [2], num_workers=0)  # noqa: E731
    elif entry == "captioner init_checkpoint":
        from lightning_modules.captioning import CaptionerTraining, PrefixCaptioner
        from tests.caption_helpers import save_tiny_llama

        model = CaptionerTraining(PrefixCaptioner(str(save_tiny_llama(tmp_path / "llama")), feature_dim=8,
                                                  num_prefix=2))
        call = lambda: model.load_weights(planted)  # noqa: E731
    elif entry == "care_dpo load_frozen":
        # every CaRe-DPO stage opens the checkpoints of earlier stages (policy, reference, scorer) through load_frozen
        import lightning as L

        from experiments.care_dpo.preferences import load_frozen

        call = lambda: load_frozen(L.LightningModule, str(planted))  # noqa: E731
    else:
        call = lambda: main(["test", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root",  # noqa: E731
                             str(fake_msrvtt), "--ckpt_path", str(planted), "--trainer.logger", "false"])
    with pytest.raises(ValueError) as error:
        call()
    assert not marker.exists(), f"{entry}: the planted pickle ran"
    message = str(error.value)
    assert str(named) in message and "weights_only" in message and "re-save" in message, message


def test_finding_1_main_loads_every_checkpoint_weights_only_whatever_torch_is_told(
        ckpt: Path, fake_msrvtt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning 2.6.6 loads ``ckpt_path`` with ``weights_only=None`` (torch's default, which
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns off); main.py passes True, and refuses ``--weights_only false``."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    seen: list[Any] = []
    real_load = torch.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    args = ["test", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root", str(fake_msrvtt), "--ckpt_path",
            str(ckpt), "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false"]
    main(args)
    assert seen and all(w is True for w in seen), seen
    with pytest.raises(ValueError, match="weights_only"):
        main([*args, "--weights_only", "false"])


# ---------------------------------------------------------------------------------------------------- finding 2
@pytest.mark.parametrize("entry", ["two_stage data module", "retriever class", "nested backbone class",
                                   "main.py --ckpt_path"])
def test_finding_2_a_plain_data_checkpoint_names_no_class_outside_the_suite(entry: str, ckpt: Path, tmp_path: Path,
                                                                           fake_msrvtt: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Class paths a checkpoint names (top level and nested) are checked against the suite's packages and the
    expected base class before anything is imported or called."""
    marker = tmp_path / "code_ran"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    planted = tmp_path / "plain.ckpt"
    edited = copy.deepcopy(state)
    if entry == "two_stage data module":
        # passes weights_only=True: only strings; today the class is called with the stored arguments
        edited["datamodule_hyper_parameters"] = {"_class_path": "os.mkdir", "path": str(marker)}
    else:
        plant_module(tmp_path, "vtr_planted_module", marker, monkeypatch)
        if entry == "nested backbone class":
            edited["hyper_parameters"]["backbone"]["class_path"] = "vtr_planted_module.Thing"
        else:
            edited["hyper_parameters"]["_class_path"] = "vtr_planted_module.Thing"
    torch.save(edited, planted)
    if entry == "two_stage data module":
        from experiments.search.two_stage import evaluate

        call = lambda: evaluate(planted, tmp_path / "work", [2], num_workers=0)  # noqa: E731
    elif entry == "main.py --ckpt_path":
        call = lambda: main(["test", "--config", str(TINY_CLIP4CLIP), "--data.init_args.root",  # noqa: E731
                             str(fake_msrvtt), "--ckpt_path", str(planted), "--trainer.logger", "false"])
    else:
        call = lambda: load_retriever(planted)  # noqa: E731
    with pytest.raises(ValueError) as error:
        call()
    assert not marker.exists(), f"{entry}: code named by the checkpoint ran"
    message = str(error.value)
    assert str(planted) in message and "lightning_modules" in message, message


# ---------------------------------------------------------------------------------------------------- findings 3, 4
class _Redirector(BaseHTTPRequestHandler):
    """Answers every request with a 302 to ``target`` (another host: the name differs, and so does the port)."""

    target = ""

    def do_POST(self) -> None:
        self.send_response(302)
        self.send_header("Location", type(self).target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: Any) -> None:
        pass


class _OtherHost(FakeOpenAIAPI):
    """The host a redirect points at: records every request (and would answer a GET with captions too)."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def do_GET(self) -> None:
        type(self).requests.append({"path": self.path, "headers": dict(self.headers), "body": None})
        data = json.dumps({"choices": [{"message": {"content": "a caption from the other host"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_finding_3_the_api_key_never_follows_a_redirect_to_another_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VTR_TEST_API_KEY", SECRET)
    _OtherHost.requests = []
    with serve_fake_api(_OtherHost) as other:
        _Redirector.target = other.replace("127.0.0.1", "localhost") + "/chat/completions"
        with serve_on_loopback(_Redirector) as base:
            api = OpenAICompatible(base_url=base + "v1", api_key_env="VTR_TEST_API_KEY", max_retries=0)
            with pytest.raises(APIError, match="redirect") as error:
                api("describe the video")
    assert _OtherHost.requests == [], "the request (and its Authorization header) reached the other host"
    assert SECRET not in str(error.value)
    # a key sent in clear text to a machine other than this one: a warning (no request is made here)
    with pytest.warns(UserWarning, match=r"VTR_TEST_API_KEY.*http://10\.1\.2\.3"):
        OpenAICompatible(base_url="http://10.1.2.3:8000/v1", api_key_env="VTR_TEST_API_KEY").setup()


class _KeyAPI(FakeOpenAIAPI):
    requests: ClassVar[list[dict[str, Any]]] = []


def test_finding_4_a_malformed_key_is_never_printed(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _KeyAPI.requests = []
    with serve_fake_api(_KeyAPI) as base:
        # a trailing newline (``echo key > file``; ``export KEY=$(cat file)`` keeps it in some shells): stripped
        monkeypatch.setenv("VTR_TEST_API_KEY", SECRET + "\n")
        api = OpenAICompatible(base_url=base, api_key_env="VTR_TEST_API_KEY", max_retries=0)
        assert "caption 0" in api("hello")
        assert _KeyAPI.requests[-1]["headers"]["Authorization"] == f"Bearer {SECRET}"
        # whitespace or control characters inside: refused before any request, naming the variable only
        for bad in (SECRET[:8] + "\n" + SECRET[8:], SECRET + " extra", SECRET + "\x1b[2J", ""):
            monkeypatch.setenv("VTR_TEST_API_KEY", bad)
            with pytest.raises(APIError, match="VTR_TEST_API_KEY") as error:
                OpenAICompatible(base_url=base, api_key_env="VTR_TEST_API_KEY", max_retries=0)("hello")
            assert SECRET[:8] not in str(error.value) and "extra" not in str(error.value)
    captured = capsys.readouterr()
    assert SECRET[:8] not in captured.out + captured.err


# ---------------------------------------------------------------------------------------------------- finding 5
KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path

real = os.replace


def replace(src, dst, *args, **kwargs):
    if Path(dst).name == "manifest.json":  # the last step of an update
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)


os.replace = replace
from experiments.search.cli import main

sys.exit(main(sys.argv[1:]))
"""


class _Killed(BaseException):
    """Stands for a SIGKILL at one step of an update (raised in place of a rename; nothing after it runs)."""


class _KillAt:
    """Counts the renames into an index folder's own files (not shards or thumbnails) and dies at the k-th."""

    def __init__(self, out: Path, kill_at: int) -> None:
        self.out, self.kill_at, self.steps = out.resolve(), kill_at, 0

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(src: Any, dst: Any, *args: Any, **kwargs: Any) -> Any:
            where = Path(dst).resolve()
            if self.out in where.parents and where.parent.name not in ("shards", "thumbs"):
                self.steps += 1
                if self.steps == self.kill_at:
                    raise _Killed
            return real(src, dst, *args, **kwargs)
        return call


def test_finding_5_a_kill_while_updating_an_index_never_gives_wrong_labels(ckpt: Path, fake_msrvtt: Path,
                                                                           tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """An index updated after a video was deleted and another added (the same row count), killed at each rename of
    the update in turn (and by a real SIGKILL before the last): every query answers exactly as the old index or
    exactly as the new one, never with one video's label on another's row."""
    folder, pristine = tmp_path / "videos", tmp_path / "old_index"
    folder.mkdir()
    for n, name in ((12, "red"), (13, "green"), (14, "blue")):
        shutil.copy(clip(fake_msrvtt, n), folder / f"{name}.mp4")
    index_folder(ckpt, folder, pristine)
    queries = ["a red square moves right", "a white square moves right"]
    old = answers(pristine, queries)
    (folder / "red.mp4").unlink()
    shutil.copy(clip(fake_msrvtt, 16), folder / "white.mp4")
    index_folder(ckpt, folder, tmp_path / "clean")
    new = answers(tmp_path / "clean", queries)
    assert not same_answers(old, new)
    # each step: the k-th rename of the index's own files (not the shards' and thumbnails') is where the run dies
    out = tmp_path / "index"
    shutil.copytree(pristine, out)
    real_replace, real_rename = os.replace, os.rename
    for kill_at in range(1, 20):
        step = _KillAt(out, kill_at)
        monkeypatch.setattr(os, "replace", step.wrap(real_replace))
        monkeypatch.setattr(os, "rename", step.wrap(real_rename))
        try:
            index_folder(ckpt, folder, out)
            killed = False
        except _Killed:
            killed = True
        finally:
            monkeypatch.setattr(os, "replace", real_replace)
            monkeypatch.setattr(os, "rename", real_rename)
        got = answers(out, queries)
        assert same_answers(got, old) or same_answers(got, new), (kill_at, got, old, new)
        if not killed:
            break
    assert same_answers(answers(out, queries), new)
    # a real SIGKILL of the index command just before its last rename: the old index, whole
    out = tmp_path / "sigkilled"
    shutil.copytree(pristine, out)
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), "index", "--ckpt", str(ckpt), "--videos", str(folder), "--out",
                           str(out), "--num-workers", "0", "--no-progress", "--batch-size", "2"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-3000:]
    got = answers(out, queries)
    assert same_answers(got, old) or same_answers(got, new), got
    index_folder(ckpt, folder, out)
    assert same_answers(answers(out, queries), new)


# ---------------------------------------------------------------------------------------------------- finding 8
def _raw_get(port: int, host: str | None, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        lines = [f"GET {path} HTTP/1.1"] + ([f"Host: {host}"] if host is not None else []) + ["Connection: close"]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, body


@contextmanager
def _serving(searcher: VideoSearchIndex, **kwargs: Any) -> Iterator[int]:
    server = serve(searcher, port=0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_finding_8_the_search_server_answers_only_its_own_host_and_closes_idle_connections(
        small_index: dict[str, Path]) -> None:
    searcher = VideoSearchIndex(small_index["index"])
    with _serving(searcher) as port:
        for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
            status, headers, body = _raw_get(port, host, "/?q=a+red+square")
            assert status == 200 and b"tr class='hit'" in body, (host, status)
            assert headers["x-content-type-options"] == "nosniff"
            csp = headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src" not in csp
        # a DNS-rebinding page reaches the server under its own name: refused, nothing of the index in the answer
        for host in (f"attacker.example:{port}", "127.0.0.1", f"127.0.0.1:{port + 1}", None):
            status, _, body = _raw_get(port, host, "/api?q=a+red+square")
            assert status in (400, 403) and b"video_id" not in body and b"red" not in body, (host, status)
    # a connection that sends half a request and then nothing is closed by the server
    with _serving(searcher, idle_timeout_s=0.5) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(60)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1")
        try:
            closed = sock.recv(1024) == b""
        except TimeoutError:
            closed = False
        assert closed, "the server kept an idle connection open"


# ---------------------------------------------------------------------------------------------------- finding 9
class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_finding_9_a_tampered_row_table_injects_no_attribute_and_inlines_no_file(small_index: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(small_index["index"], index)
    secret = tmp_path / "private.txt"
    secret.write_text("private notes")
    evil_src = "thumbs/x.jpg' onerror='alert(document.domain)"
    result = SearchResult("q", [Hit(1, 0, "red", "/videos/red.mp4", 0.5, 2.0, evil_src, 0.5)], 0.001, 1, False)
    parser = _Tags()
    parser.feed(results_table(result, lambda rel: "/" + rel))
    (img,) = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert "onerror" not in img and img["src"] == "/" + evil_src
    # query --html: a thumbnail path outside thumbs/ is refused, never read into the page
    outside = str(Path(os.path.relpath(secret, index)))
    result.hits[0].thumbnail = outside
    page = tmp_path / "page.html"
    with pytest.raises(ValueError, match="thumbs"):
        write_results_page([result], index, page)
    assert not page.exists() or "cHJpdmF0ZSBub3Rlcw" not in page.read_text()  # base64 of "private notes"
    # the same path in videos.jsonl: the index is refused when opened, naming the file and the row
    rows_file = next(index.rglob("videos.jsonl"))
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    rows[0]["thumbnail"] = outside
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"videos\.jsonl") as error:
        VideoSearchIndex(index)
    assert "thumbs" in str(error.value)


# ---------------------------------------------------------------------------------------------------- finding 10
def test_finding_10_terminal_escapes_in_file_names_never_reach_the_terminal(ckpt: Path, fake_msrvtt: Path,
                                                                            tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]
                                                                            ) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    name = "clip\x1b]0;owned\x07\x1b[2J\u202egpm.mp4"  # sets the title, clears the screen, reverses the text
    shutil.copy(clip(fake_msrvtt, 12), folder / name)
    index_folder(ckpt, folder, tmp_path / "index")
    capsys.readouterr()
    assert search_main(["query", "--index", str(tmp_path / "index"), "a red square moves right"]) == 0
    out = capsys.readouterr().out
    assert "clip" in out and not any(c in out for c in "\x1b\x07\u202e"), repr(out)
    assert "\\x1b]0;owned\\x07" in out


# ---------------------------------------------------------------------------------------------------- finding 11
def test_finding_11_a_rerun_reencodes_changed_videos_and_retries_failures(ckpt: Path, fake_msrvtt: Path,
                                                                          tmp_path: Path) -> None:
    folder, out = tmp_path / "videos", tmp_path / "index"
    folder.mkdir()
    shutil.copy(clip(fake_msrvtt, 12), folder / "a.mp4")
    (folder / "broken.mp4").write_bytes(b"not a video")
    transient = folder / "late.mp4"  # unreadable when first indexed, fixed without changing its size or mtime
    real = clip(fake_msrvtt, 15).read_bytes()
    transient.write_bytes(b"\0" * len(real))
    stat = transient.stat()
    manifest = index_folder(ckpt, folder, out)
    assert manifest is not None and sorted(u["id"] for u in manifest["unreadable"]) == ["broken", "late"]
    shutil.copy(clip(fake_msrvtt, 13), folder / "a.mp4")  # replaced by another video
    shutil.copy(clip(fake_msrvtt, 14), folder / "broken.mp4")  # repaired
    transient.write_bytes(real)
    os.utime(transient, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    manifest = index_folder(ckpt, folder, out)
    assert manifest is not None and [u["id"] for u in manifest["unreadable"]] == ["late"]
    manifest = index_folder(ckpt, folder, out, retry_failed=True)
    assert manifest is not None and manifest["unreadable"] == [] and manifest["num_indexed"] == 3
    clean = tmp_path / "clean"
    index_folder(ckpt, folder, clean)
    queries = ["a green square moves right", "a blue square moves right"]
    assert same_answers(answers(out, queries), answers(clean, queries))


# ---------------------------------------------------------------------------------------------------- finding 15
def test_finding_15_the_two_stage_report_compares_like_with_like(tmp_path: Path) -> None:
    """The run's registered R@1 and the rows' R@1 are rounded alike, so equal metrics compare equal."""
    from experiments.search.two_stage import _registered_r1, _row

    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    (tmp_path / "run" / "test").mkdir()
    (tmp_path / "run" / "test" / "metrics.json").write_text(json.dumps({"metrics": {"t2v_R1": 200 / 3}}))
    sim = np.eye(3, dtype=np.float32)
    sim[2] = [1.0, 0.5, 0.0]  # query 2 ranks its video last: R@1 = 2/3
    row = _row("full scoring", sim, np.arange(3), None, None, None, 3)
    assert row["t2v_R1"] == _registered_r1(ckpt)["checkpoint_test_t2v_R1"]
