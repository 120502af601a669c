"""Result pages: a self-contained HTML file for ``query --html`` (thumbnails inlined) and the local search page of
``query --serve`` (a standard-library HTTP server bound to 127.0.0.1)."""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from experiments.search.searcher import SearchResult, VideoSearchIndex

log = logging.getLogger(__name__)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
form{margin-bottom:1.5em} input[name=q]{width:32em;font-size:1.1em;padding:.3em}
table{border-collapse:collapse} td,th{padding:.4em .8em;text-align:left;vertical-align:middle}
tr:nth-child(even){background:#f4f4f4} img{height:64px;display:block} .meta{color:#666;font-size:.9em}
"""


def _duration(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f} s"


def results_table(result: SearchResult, thumbnail_src: Callable[[str], str]) -> str:
    rows = []
    for h in result.hits:
        rows.append(f"<tr class='hit' data-video-id='{html.escape(h.video_id, quote=True)}'><td>{h.rank}</td>"
                    f"<td><img alt='{html.escape(h.video_id, quote=True)}' src='{thumbnail_src(h.thumbnail)}'></td>"
                    f"<td><b>{html.escape(h.video_id)}</b><br><span class='meta'>{html.escape(h.path)}</span></td>"
                    f"<td>{h.score:.4f}</td><td>{_duration(h.duration)}</td></tr>")
    stage = (f"FAISS top {result.first_stage}, re-scored by the method" if result.reranked
             else "FAISS search")
    return (f"<p class='meta'>{len(result.hits)} results for <b>{html.escape(result.query)}</b> in "
            f"{result.seconds * 1000:.1f} ms ({stage})</p><table><tr><th>#</th><th></th><th>video</th><th>score</th>"
            f"<th>duration</th></tr>{''.join(rows)}</table>")


def page(body: str, title: str, query: str = "", k: int = 10, form: bool = False) -> str:
    search_box = (f"<form action='/' method='get'><input name='q' value='{html.escape(query, quote=True)}' "
                  f"placeholder='describe a video' autofocus> <input name='k' type='number' min='1' value='{k}' "
                  "style='width:4em'> <button type='submit'>Search</button></form>") if form else ""
    return ("<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{search_box}{body}</body></html>")


def write_results_page(results: list[SearchResult], index_dir: Path, out: Path) -> None:
    """One HTML file with every query's results; thumbnails inlined as data URIs, so the file travels alone."""

    def inline(relative: str) -> str:
        data = (index_dir / relative).read_bytes()
        return "data:image/jpeg;base64," + base64.b64encode(data).decode()

    body = "".join(f"<h2>{html.escape(r.query)}</h2>{results_table(r, inline)}" for r in results)
    out.write_text(page(body, f"Search: {index_dir.name}"), encoding="utf-8")


def make_handler(searcher: VideoSearchIndex, default_k: int = 10, rerank: int | None = None
                 ) -> type[BaseHTTPRequestHandler]:
    """``GET /?q=...&k=...`` answers with the results page, ``/api?q=`` with JSON, ``/thumbs/<file>`` with a
    thumbnail; nothing else is served."""
    thumbs = (searcher.dir / "thumbs").resolve()
    info = searcher.describe()
    title = f"Search {info['videos']} videos ({info['method']})"

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            params = parse_qs(url.query)
            query = params.get("q", [""])[0].strip()
            try:
                k = max(1, int(params.get("k", [default_k])[0]))
            except ValueError:
                k = default_k
            if url.path.startswith("/thumbs/"):
                file = (thumbs / Path(url.path).name).resolve()
                if file.parent != thumbs or not file.is_file():
                    self._send(404, b"not found", "text/plain")
                    return
                self._send(200, file.read_bytes(), "image/jpeg")
                return
            kwargs = {} if rerank is None else {"rerank": rerank}
            if url.path == "/api":
                hits = [h.__dict__ for h in searcher.search([query], k, **kwargs)[0].hits] if query else []
                self._send(200, json.dumps({"query": query, "hits": hits}).encode(), "application/json")
                return
            if url.path != "/":
                self._send(404, b"not found", "text/plain")
                return
            body = ""
            if query:
                result = searcher.search([query], k, **kwargs)[0]
                body = results_table(result, lambda rel: "/" + rel)
            self._send(200, page(body, title, query, k, form=True).encode(), "text/html; charset=utf-8")

        def log_message(self, format: str, *args: object) -> None:
            log.info("%s %s", self.address_string(), format % args)

    return Handler


def serve(searcher: VideoSearchIndex, port: int = 8765, default_k: int = 10, rerank: int | None = None
          ) -> ThreadingHTTPServer:
    """A server on 127.0.0.1 only (the page shows local file paths; it is not meant for a network)."""
    return ThreadingHTTPServer(("127.0.0.1", port), make_handler(searcher, default_k, rerank))
