"""Result pages: a self-contained HTML file for ``query --html`` (thumbnails inlined) and the local search page of
``query --serve`` (a standard-library HTTP server bound to 127.0.0.1).

The server answers only requests addressed to it by name (``Host: 127.0.0.1:<port>`` or ``localhost:<port>``), so
a web page elsewhere that points a DNS name at 127.0.0.1 (DNS rebinding) cannot read results or local paths through
the visitor's browser; idle connections are closed after ``idle_timeout_s``; every answer carries a Content Security
Policy that allows no script, no frame and no foreign resource, and ``X-Content-Type-Options: nosniff``. Everything
from the index folder that reaches a page is escaped, and thumbnails are read only from its ``thumbs/`` folder (by
resolved path)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from datamodules.atomic import write_text_atomic
from experiments.search.searcher import SearchResult, VideoSearchIndex

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 20.0  # a connection that sends nothing for this long is closed (slow or stalled clients)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
form{margin-bottom:1.5em} input[name=q]{width:32em;font-size:1.1em;padding:.3em} input[name=k]{width:4em}
table{border-collapse:collapse} td,th{padding:.4em .8em;text-align:left;vertical-align:middle}
tr:nth-child(even){background:#f4f4f4} img{height:64px;display:block} .meta{color:#666;font-size:.9em}
"""
# the page's one inline stylesheet, allowed by its hash; no script, frame, plugin or foreign resource
_STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
SERVER_CSP = (f"default-src 'none'; img-src 'self' data:; style-src '{_STYLE_HASH}'; form-action 'self'; "
              "frame-ancestors 'none'; base-uri 'none'")
FILE_CSP = f"default-src 'none'; img-src data:; style-src '{_STYLE_HASH}'; form-action 'none'; base-uri 'none'"


def _duration(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f} s"


def results_table(result: SearchResult, thumbnail_src: Callable[[str], str]) -> str:
    rows = []
    for h in result.hits:
        rows.append(f"<tr class='hit' data-video-id='{html.escape(h.video_id, quote=True)}'><td>{h.rank}</td>"
                    f"<td><img alt='{html.escape(h.video_id, quote=True)}' "
                    f"src='{html.escape(thumbnail_src(h.thumbnail), quote=True)}'></td>"
                    f"<td><b>{html.escape(h.video_id)}</b><br><span class='meta'>{html.escape(h.path)}</span></td>"
                    f"<td>{h.score:.4f}</td><td>{_duration(h.duration)}</td></tr>")
    stage = (f"FAISS top {result.first_stage}, re-scored by the method" if result.reranked
             else "FAISS search")
    return (f"<p class='meta'>{len(result.hits)} results for <b>{html.escape(result.query)}</b> in "
            f"{result.seconds * 1000:.1f} ms ({stage})</p><table><tr><th>#</th><th></th><th>video</th><th>score</th>"
            f"<th>duration</th></tr>{''.join(rows)}</table>")


def page(body: str, title: str, query: str = "", k: int = 10, form: bool = False, csp: str | None = None) -> str:
    search_box = (f"<form action='/' method='get'><input name='q' value='{html.escape(query, quote=True)}' "
                  f"placeholder='describe a video' autofocus> <input name='k' type='number' min='1' value='{int(k)}'> "
                  "<button type='submit'>Search</button></form>") if form else ""
    policy = f"<meta http-equiv='Content-Security-Policy' content=\"{html.escape(csp)}\">" if csp else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'>{policy}<link rel='icon' href='data:,'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"{search_box}{body}</body></html>")


def thumbnail_file(index_dir: Path, relative: str) -> Path:
    """The thumbnail a row names, only if it is a file of the index's ``thumbs/`` folder once resolved (a row table
    from elsewhere may name any path)."""
    thumbs = (index_dir / "thumbs").resolve()
    file = (index_dir / relative).resolve()
    if file.parent != thumbs or not file.is_file():
        raise ValueError(f"thumbnail {relative!r} is not a file of {thumbs}: refused (the index's videos.jsonl names "
                         "a path outside it; rerun the index command to rewrite it)")
    return file


def write_results_page(results: list[SearchResult], index_dir: Path, out: Path) -> None:
    """One HTML file with every query's results; thumbnails inlined as data URIs, so the file travels alone."""

    def inline(relative: str) -> str:
        data = thumbnail_file(index_dir, relative).read_bytes()
        return "data:image/jpeg;base64," + base64.b64encode(data).decode()

    body = "".join(f"<h2>{html.escape(r.query)}</h2>{results_table(r, inline)}" for r in results)
    text = page(body, f"Search: {index_dir.name}", csp=FILE_CSP)
    write_text_atomic(out, text)


def make_handler(searcher: VideoSearchIndex, default_k: int = 10, rerank: int | None = None,
                 idle_timeout_s: float = IDLE_TIMEOUT_S) -> type[BaseHTTPRequestHandler]:
    """``GET /?q=...&k=...`` answers with the results page, ``/api?q=`` with JSON, ``/thumbs/<file>`` with a
    thumbnail; nothing else is served, and nothing to a request addressed to another host."""
    thumbs = (searcher.dir / "thumbs").resolve()
    info = searcher.describe()
    title = f"Search {info['videos']} videos ({info['method']})"

    class Handler(BaseHTTPRequestHandler):
        timeout = idle_timeout_s  # socket timeout: a stalled or idle connection is closed, its thread ends

        def end_headers(self) -> None:  # every answer, error pages included
            self.send_header("Content-Security-Policy", SERVER_CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cache-Control", "no-store")
            super().end_headers()

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _own_host(self) -> bool:
            port = self.server.server_address[1]
            host = (self.headers.get("Host") or "").strip().lower()
            return host in (f"127.0.0.1:{port}", f"localhost:{port}")

        def do_GET(self) -> None:
            if not self._own_host():
                port = self.server.server_address[1]
                self._send(403, f"this server answers http://127.0.0.1:{port}/ and http://localhost:{port}/ only\n"
                           .encode(), "text/plain; charset=utf-8")
                return
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
            # the request line is the client's text: escaped, so a crafted path cannot drive the terminal
            log.info("%s %s", self.address_string(), (format % args).encode("unicode_escape").decode("ascii"))

    return Handler


def serve(searcher: VideoSearchIndex, port: int = 8765, default_k: int = 10, rerank: int | None = None,
          idle_timeout_s: float = IDLE_TIMEOUT_S) -> ThreadingHTTPServer:
    """A server on 127.0.0.1 only (the page shows local file paths; it is not meant for a network)."""
    return ThreadingHTTPServer(("127.0.0.1", port), make_handler(searcher, default_k, rerank, idle_timeout_s))
