"""``python -m experiments.search {index,query}``; see ``experiments/search/__init__.py`` and the README's "Search
your own videos"."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.search.searcher import DEFAULT_RERANK
from experiments.search.vector_index import EXACT_BELOW


def terminal_safe(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\u202e``, ...): file names and ids come
    from others' folders and index files, and control or bidi characters in them would drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _captions(values: Sequence[str]) -> dict[str, str]:
    """``kind=STORE`` pairs; a bare ``STORE`` is the narration (NarVid's per-frame captions)."""
    out = {}
    for value in values:
        kind, sep, path = value.partition("=")
        if not sep:
            kind, path = "narration", value
        if kind in out:
            raise SystemExit(f"--captions: {kind!r} given twice")
        out[kind] = path
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.search", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    ix = sub.add_parser("index", help="encode a folder of videos once and build the FAISS index")
    ix.add_argument("--ckpt", required=True, help="checkpoint written by python main.py fit")
    ix.add_argument("--videos", required=True, help="folder of videos (searched recursively)")
    ix.add_argument("--out", required=True, help="index folder (rerun the same command to resume or update)")
    ix.add_argument("--captions", nargs="*", default=[], metavar="KIND=STORE",
                    help="auxiliary caption stores the method was trained with, e.g. narration=captions.jsonl")
    ix.add_argument("--batch-size", type=int, default=16)
    ix.add_argument("--num-workers", type=int, default=2)
    ix.add_argument("--accelerator", default="auto")
    ix.add_argument("--devices", default="1", help="devices for encoding (Lightning: a number or 'auto')")
    ix.add_argument("--precision", default="32-true", help="e.g. bf16-mixed on GPUs")
    ix.add_argument("--index-type", choices=["auto", "flat", "ivf", "hnsw"], default="auto",
                    help="auto: exact below --exact-below videos, IVF above")
    ix.add_argument("--exact-below", type=int, default=EXACT_BELOW)
    ix.add_argument("--nlist", type=int, default=None, help="IVF cells (default about 4 sqrt(N))")
    ix.add_argument("--nprobe", type=int, default=32, help="IVF cells scanned per query")
    ix.add_argument("--hnsw-m", type=int, default=32)
    ix.add_argument("--ef-search", type=int, default=128)
    ix.add_argument("--num-frames", type=int, default=None, help="default: the checkpoint's data setting")
    ix.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's data setting")
    ix.add_argument("--reader", choices=["decord", "pyav", "frames"], default=None)
    ix.add_argument("--no-progress", action="store_true")
    ix.add_argument("--retry-failed", action="store_true",
                    help="also retry the videos that failed to decode before (a changed file is always re-encoded)")

    q = sub.add_parser("query", help="rank the indexed videos for text queries, or serve a search page")
    q.add_argument("--index", required=True)
    q.add_argument("queries", nargs="*", help="one or more text queries")
    q.add_argument("-k", type=int, default=10)
    q.add_argument("--ckpt", default=None, help="default: the checkpoint recorded in the index (must be that file)")
    q.add_argument("--rerank", type=int, default=DEFAULT_RERANK,
                   help="first-stage candidates re-scored by a query-dependent method (0: first stage only)")
    q.add_argument("--nprobe", type=int, default=None)
    q.add_argument("--ef-search", type=int, default=None)
    q.add_argument("--html", default=None, help="also write the results as an HTML page with thumbnails")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    q.add_argument("--serve", action="store_true", help="serve a search page on http://127.0.0.1:PORT/")
    q.add_argument("--port", type=int, default=8765)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # which CPU build it loaded, on every start
    if args.command == "index":
        from experiments.search.indexer import build_index

        devices = int(args.devices) if args.devices.isdigit() else args.devices
        manifest = build_index(args.ckpt, args.videos, args.out, _captions(args.captions), args.batch_size,
                               args.num_workers, args.accelerator, devices, args.precision, args.index_type,
                               args.exact_below, args.nlist, args.nprobe, args.hnsw_m, args.ef_search,
                               args.num_frames, args.image_size, args.reader, progress=not args.no_progress,
                               retry_failed=args.retry_failed)
        if manifest is not None:
            print(terminal_safe(
                f"indexed {manifest['num_indexed']} of {manifest['num_videos']} videos into {args.out} "
                f"({manifest['index']['type']} index, {manifest['num_unreadable']} unreadable"
                + (f": {[u['id'] for u in manifest['unreadable'][:5]]}" if manifest["unreadable"] else "") + ")"))
        return 0
    from experiments.search.searcher import VideoSearchIndex

    searcher = VideoSearchIndex(args.index, args.ckpt, args.nprobe, args.ef_search)
    if args.serve:
        from experiments.search.page import serve

        server = serve(searcher, args.port, args.k, args.rerank)

        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        # Ctrl-C and a plain kill (SIGTERM, e.g. from a service manager) both stop the server cleanly; a process
        # started in the background may inherit an ignored SIGINT, so its handler is set here too
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        print(terminal_safe(f"serving {args.index} on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)"),
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return 0
    if not args.queries:
        print("query: give at least one text query, or --serve", file=sys.stderr)
        return 2
    results = searcher.search(args.queries, args.k, args.rerank)
    if args.json:
        print(json.dumps([{"query": r.query, "seconds": r.seconds, "hits": [h.__dict__ for h in r.hits]}
                          for r in results], indent=1))
    else:
        for r in results:
            stage = f", FAISS top {r.first_stage} re-scored" if r.reranked else ""
            print(terminal_safe(f"{r.query!r}: {r.seconds * 1000:.1f} ms{stage}"))
            for h in r.hits:
                duration = "?" if h.duration is None else f"{h.duration:.1f} s"
                print(terminal_safe(f"  {h.rank:>3}  {h.score:8.4f}  {duration:>8}  {h.path}"))
    if args.html:
        from experiments.search.page import write_results_page

        write_results_page(results, Path(args.index), Path(args.html))
        print(terminal_safe(f"wrote {args.html}"))
    return 0
