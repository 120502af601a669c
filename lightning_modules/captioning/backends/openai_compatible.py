"""Captions (and text) from an OpenAI-compatible chat-completions API: GPT-4o as in ExCae, or a local vLLM.

Request (one per caption request, ``POST {base_url}/chat/completions``, JSON)::

    {"model": "gpt-4o",
     "messages": [{"role": "system", "content": "<system_prompt>"},            # only when configured
                  {"role": "user", "content": [
                      {"type": "text", "text": "<prompt>"},
                      {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,...",
                                                          "detail": "low"}},  # one per frame
                      ...]}],
     "max_tokens": 512, "temperature": 0.7, "n": 1}

Headers: ``Authorization: Bearer <key>`` (omitted when ``api_key_env`` is null, e.g. a local vLLM) and
``Content-Type: application/json``. The key is read from the environment variable named by
``api_key_env`` when the run starts; it is never an init argument, so it is never in a config, a
checkpoint, a log line or an exception message. Surrounding whitespace (a trailing newline from a file) is
stripped; a key with whitespace or a non-printable character inside is refused with an error that names the
variable, never the value. Redirects are refused (urllib would resend the key to whatever host a 30x names, and
take that host's answer as the caption), and a key sent over plain ``http://`` to a host other than this machine
gives a warning.

``multi`` captions: ``multi_strategy: list`` asks once (ExCae's "Generate 10 captions ...") and parses
the numbered list in the answer; ``n`` asks for ``n`` choices of one caption each. Failures with status
408/409/429/5xx, timeouts and connection errors are retried with exponential backoff and jitter
(``Retry-After`` honoured); other 4xx fail at once with the server's message. ``requests_per_minute``
spaces request starts; ``concurrency`` requests run in parallel threads.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any, Literal

from lightning_modules.captioning.backends.base import (
    CaptionBackend,
    CaptionOutput,
    CaptionRequest,
    TextGenerator,
    encode_image,
    parse_caption_list,
)

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class APIError(RuntimeError):
    """The API answered with an error that retrying does not fix (or retries ran out)."""


class InsecureTransportWarning(UserWarning):
    """An API key is about to travel unencrypted to another machine."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """No redirect is followed: urllib would resend the Authorization header to the new location (another host,
    possibly) and accept its answer as the API's. A chat-completions POST is never legitimately redirected."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        target = urllib.parse.urlsplit(newurl)
        raise APIError(f"{req.full_url}: the server answered HTTP {code}, a redirect to "
                       f"{target.scheme}://{target.netloc}{target.path}; redirects are not followed (the API key "
                       "would go along): set base_url to the API's final address")


_OPENER = urllib.request.build_opener(_RefuseRedirects)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_api_key(variable: str) -> str:
    """The key an environment variable holds, stripped of surrounding whitespace and checked (printable ASCII, no
    whitespace inside: an HTTP header would otherwise reject it with a message that quotes it). Errors name the
    variable, never the value."""
    key = os.environ.get(variable, "").strip()
    if not key:
        raise APIError(f"environment variable {variable} is not set or empty (it must hold the API key; set "
                       "api_key_env: null for a server without authentication)")
    bad = next((i for i, c in enumerate(key) if not ("!" <= c <= "~")), None)
    if bad is not None:
        kind = "whitespace" if key[bad].isspace() else "a non-printable or non-ASCII character"
        raise APIError(f"environment variable {variable} holds {kind} at position {bad} of its {len(key)} "
                       "characters; an API key is printable ASCII without spaces (the value is not shown): set it "
                       "again, e.g. export " + variable + "=\"$(tr -d '[:space:]' < keyfile)\"")
    return key


class OpenAICompatible(CaptionBackend, TextGenerator):
    """OpenAI-compatible chat-completions client for captions and text.

    Args:
        model: model name sent in the request (``gpt-4o``, or the model a vLLM server serves).
        base_url: API root ending in ``/v1`` (``http://127.0.0.1:8000/v1`` for a local vLLM).
        api_key_env: environment variable holding the key; ``null`` sends no key.
        system_prompt: optional system message.
        max_tokens: completion length limit.
        temperature: sampling temperature.
        top_p: nucleus sampling (omitted when null).
        image_detail: ``low`` (85 tokens per image on GPT-4o), ``high`` or ``auto``.
        image_format: ``jpeg`` or ``png`` data URLs.
        jpeg_quality: JPEG quality of the frames.
        multi_strategy: ``list`` (one answer, parsed into captions) or ``n`` (n choices).
        max_list_attempts: for ``list``: asks again while fewer than the wanted captions were parsed.
        timeout_s: per-request timeout.
        max_retries: retries of a retryable failure.
        backoff_s: first retry delay (doubles each time, with jitter).
        max_backoff_s: cap of the retry delay.
        requests_per_minute: rate limit of request starts (null: none).
        concurrency: parallel requests.
        extra_body: extra JSON fields merged into every request (e.g. vLLM's ``top_k``).
    """

    def __init__(self, model: str = "gpt-4o", base_url: str = "https://api.openai.com/v1",
                 api_key_env: str | None = "OPENAI_API_KEY", system_prompt: str | None = None,
                 max_tokens: int = 512, temperature: float = 0.7, top_p: float | None = None,
                 image_detail: Literal["low", "high", "auto"] = "low", image_format: Literal["jpeg", "png"] = "jpeg",
                 jpeg_quality: int = 90, multi_strategy: Literal["list", "n"] = "list", max_list_attempts: int = 3,
                 timeout_s: float = 120.0, max_retries: int = 6, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 requests_per_minute: float | None = None, concurrency: int = 4,
                 extra_body: dict[str, Any] | None = None) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.image_detail = image_detail
        self.image_format = image_format
        self.jpeg_quality = jpeg_quality
        self.multi_strategy = multi_strategy
        self.max_list_attempts = max_list_attempts
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.requests_per_minute = requests_per_minute
        self.concurrency = max(1, concurrency)
        self.extra_body = dict(extra_body or {})
        self._key: str | None = None
        self._key_loaded = False
        self._rate_lock = threading.Lock()
        self._next_start = 0.0
        self.num_requests = 0  # HTTP requests sent (retries included)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatible(model={self.model!r}, base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    @property
    def model_name(self) -> str:
        return self.model

    def setup(self, device: Any = None, datamodule: Any | None = None) -> None:
        self._load_key()

    def _load_key(self) -> None:
        if self._key_loaded:
            return
        if self.api_key_env:
            self._key = read_api_key(self.api_key_env)
            url = urllib.parse.urlsplit(self.base_url)
            if url.scheme == "http" and not _is_loopback(url.hostname):
                warnings.warn(f"the API key from {self.api_key_env} will be sent unencrypted to {self.base_url} "
                              "(http:// to another machine): anyone on the way can read it; use https:// or a "
                              "server on this machine", InsecureTransportWarning, stacklevel=2)
        self._key_loaded = True

    def _redact(self, text: str) -> str:
        """An error text without the key (a server may echo the header it refused)."""
        return text.replace(self._key, "<api key>") if self._key else text

    # ------------------------------------------------------------------ captions
    def generate(self, requests: list[CaptionRequest]) -> list[CaptionOutput]:
        self._load_key()
        if self.concurrency == 1 or len(requests) == 1:
            return [self._one(r) for r in requests]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, req: CaptionRequest) -> CaptionOutput:
        content: list[dict[str, Any]] = [{"type": "text", "text": req.prompt}]
        for img in req.images:
            url = encode_image(img, self.image_format, self.jpeg_quality)
            content.append({"type": "image_url", "image_url": {"url": url, "detail": self.image_detail}})
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        messages.append({"role": "user", "content": content})
        want = req.num_captions
        if want == 1:
            return CaptionOutput([self._chat(messages)[0].strip()])
        if self.multi_strategy == "n":
            return CaptionOutput([c.strip() for c in self._chat(messages, n=want)][:want])
        captions: list[str] = []
        for _ in range(self.max_list_attempts):
            parsed = parse_caption_list(self._chat(messages)[0])
            captions = parsed if len(parsed) > len(captions) else captions
            if len(captions) >= want:
                break
        return CaptionOutput(captions[:want])

    # ------------------------------------------------------------------ text (prompt engineer)
    def complete(self, conversations: list[list[dict[str, str]]], max_new_tokens: int | None = None,
                 temperature: float | None = None) -> list[str]:
        self._load_key()
        return [self._chat(conv, max_tokens=max_new_tokens, temperature=temperature)[0] for conv in conversations]

    # ------------------------------------------------------------------ HTTP
    def request_body(self, messages: list[dict[str, Any]], n: int = 1, max_tokens: int | None = None,
                     temperature: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "max_tokens": max_tokens or self.max_tokens,
                                "temperature": self.temperature if temperature is None else temperature, "n": n}
        if self.top_p is not None:
            body["top_p"] = self.top_p
        body.update(self.extra_body)
        return body

    def _chat(self, messages: list[dict[str, Any]], n: int = 1, max_tokens: int | None = None,
              temperature: float | None = None) -> list[str]:
        data = json.dumps(self.request_body(messages, n, max_tokens, temperature)).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        url = f"{self.base_url}/chat/completions"
        delay = self.backoff_s
        last = ""
        for attempt in range(self.max_retries + 1):
            self._wait_for_rate()
            self.num_requests += 1
            retry_after: float | None = None
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with _OPENER.open(req, timeout=self.timeout_s) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                choices = payload.get("choices") or []
                if not choices:
                    raise APIError(self._redact(f"{url}: response without choices: {str(payload)[:300]}"))
                return [(c.get("message") or {}).get("content") or "" for c in choices]
            except urllib.error.HTTPError as exc:
                body = exc.read().decode("utf-8", "replace")[:500]
                last = self._redact(f"HTTP {exc.code}: {body}")
                if exc.code not in _RETRY_STATUS:
                    raise APIError(f"{url}: {last}") from None
                header = exc.headers.get("Retry-After") if exc.headers else None
                retry_after = float(header) if header and header.replace(".", "", 1).isdigit() else None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = self._redact(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}")
            if attempt == self.max_retries:
                break
            sleep = retry_after if retry_after is not None else delay * (0.5 + random.random())
            time.sleep(min(self.max_backoff_s, sleep))
            delay = min(self.max_backoff_s, delay * 2)
        raise APIError(f"{url}: giving up after {self.max_retries + 1} attempts; last error {last}")

    def _wait_for_rate(self) -> None:
        if not self.requests_per_minute:
            return
        interval = 60.0 / self.requests_per_minute
        with self._rate_lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + interval
        if start > now:
            time.sleep(start - now)
