"""A simulated captioner for SynthVTR: captions from the generator's per-frame ground truth.

It stands in for a VLM on the embedded benchmark, with the three properties that make caption methods
measurable there:

* **Prompt sensitivity.** The prompt is parsed for attribute words and the caption describes exactly
  those attributes (:func:`requested_attributes`): ``colour`` (colour/color/hue), ``shape``
  (shape/form/geometry), ``motion`` (motion/moving/movement/move/action/dynamic), ``position``
  (position/where/location/placement/layout), ``background`` (background/scene/setting/environment) and
  ``event`` (event/change/appear/disappear/happen/transition; video-level kinds only). "every detail",
  "comprehensive", "exhaustive" or "everything" ask for all of them; a prompt naming none of them (a
  generic "describe this image") gets the default subset ``shape, colour, background``.
* **Detail level** 1..3 caps how much a caption says: objects described (1, 2, all) and attributes kept
  (2, 4, all six; kept in the order shape, colour, motion, background, event, position).
* **Hallucination.** Every attribute slot (an object's colour, shape, motion or position, the background,
  the event) is independently replaced by a wrong value with probability ``hallucination_rate``. Each
  record carries ``hallucination_rate``, ``detail`` and ``seed`` and, per caption, the number of
  ``hallucinated`` slots out of its ``slots``, so the files show what was simulated.

``supplement`` (conical embedding optimisation) follows three more prompt rules, one per level of the slides'
prompts A/B/C (:func:`supplement_request`):

* a prompt asking for what is *not* in the original ("not evident", "additional", "beyond", "new information")
  with the video's text (``CaptionRequest.context_text``, a ``{text}`` prompt) describes the attributes that
  text does *not* mention (:func:`mentioned_attributes`), i.e. it supplements instead of rephrasing;
* "detail"/"detailed"/"details" asks for every attribute;
* "brief"/"succinct"/"concise"/"short" describes one object only.

A prompt with none of these ("Describe this video.", prompt C) gets the default subset as above.

Everything is deterministic from ``(seed, video_id, frame index, caption number)``; a slot's
hallucination draw does not depend on the prompt, so two prompts compared on the same seed differ only in
what they ask for. ``narration`` describes one frame (no event: one frame cannot show it); ``multi`` and
``supplement`` describe the video from its sampled frames (objects tracked by shape and motion, the event
read off the first and last sampled frame). The ``K`` captions of ``multi`` take different perspectives:
caption 0 the full request, the others a random part of the requested attributes focused on different
objects.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

from datamodules.synthvtr import (
    BACKGROUNDS,
    COLOUR_WORDS,
    COLOURS,
    EVENTS,
    MOTION_WORDS,
    MOTIONS,
    SCENE_NOUNS,
    SCENE_WORDS,
    SHAPE_WORDS,
    SHAPES,
    load_frame_metadata,
)
from lightning_modules.captioning.backends.base import CaptionBackend, CaptionOutput, CaptionRequest

ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "motion", "background", "event", "position")
OBJECT_ATTRIBUTES = ("shape", "colour", "motion", "position")
DEFAULT_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "background")
POSITIONS: tuple[str, ...] = ("top left", "top", "top right", "left", "center", "right",
                              "bottom left", "bottom", "bottom right")
_KEYWORDS: dict[str, str] = {
    "colour": r"colou?rs?|colou?red|hues?",
    "shape": r"shapes?|forms?|geometr\w*",
    "motion": r"motions?|moving|movements?|moves?|actions?|dynamics?",
    "position": r"positions?|where|locations?|placements?|layout|located",
    "background": r"backgrounds?|scenes?|settings?|environments?|surroundings?",
    "event": r"events?|changes?|changing|appears?|appearing|disappears?|happens?|happening|transitions?",
}
_ALL = re.compile(r"every detail|all details|comprehensive|exhaustive|everything", re.IGNORECASE)
_OBJECTS_PER_DETAIL = {1: 1, 2: 2, 3: 99}
_ATTRIBUTES_PER_DETAIL = {1: 2, 2: 4, 3: 6}


def requested_attributes(prompt: str, kind: str = "multi") -> tuple[str, ...]:
    """Attributes a prompt asks for, in the canonical order (event dropped for ``narration``)."""
    if _ALL.search(prompt):
        found = list(ATTRIBUTES)
    else:
        found = [a for a in ATTRIBUTES if re.search(rf"\b(?:{_KEYWORDS[a]})\b", prompt, re.IGNORECASE)]
    if kind == "narration":
        found = [a for a in found if a != "event"]
    return tuple(found) if found else DEFAULT_ATTRIBUTES


_SUPPLEMENT = re.compile(r"not evident|additional|beyond the original|new information", re.IGNORECASE)
_DETAILED = re.compile(r"\bdetail(?:s|ed)?\b", re.IGNORECASE)
_BRIEF = re.compile(r"\b(?:brief|briefly|succinct|succinctly|concise|short)\b", re.IGNORECASE)
_EVENT_WORDS = re.compile(r"\b(?:appears?|disappears?|vanish\w*|pops into view|shows up|comes into view|"
                          r"out of (?:view|sight)|turns|changes colou?r|switches from|becomes|goes from)\b")


def _mentions(text: str, phrases: Any) -> bool:
    return any(re.search(rf"\b{re.escape(p)}\b", text) for p in phrases)


def mentioned_attributes(text: str) -> set[str]:
    """Attributes a SynthVTR text speaks of, read off the generator's own word tables."""
    text = text.lower()
    found = set()
    if _mentions(text, (w for words in COLOUR_WORDS.values() for w in words)):
        found.add("colour")
    if _mentions(text, (w for words in SHAPE_WORDS.values() for w in words)):
        found.add("shape")
    if _mentions(text, (w for words in MOTION_WORDS.values() for w in words)):
        found.add("motion")
    if _mentions(text, (w for table in (SCENE_WORDS, SCENE_NOUNS) for words in table.values() for w in words)):
        found.add("background")
    if _EVENT_WORDS.search(text):
        found.add("event")
    if _mentions(text, [_position_phrase(p) for p in POSITIONS]):
        found.add("position")
    return found


def supplement_request(prompt: str, context_text: str | None) -> tuple[tuple[str, ...], int | None]:
    """The attributes a ``supplement`` prompt asks for and the object cap it sets (None: the detail level's).

    The context text is cut out of the prompt first, so its words never count as the prompt's request.
    """
    instruction = prompt.replace(context_text, " ") if context_text else prompt
    objects = 1 if _BRIEF.search(instruction) else None
    if context_text and _SUPPLEMENT.search(instruction):
        missing = tuple(a for a in ATTRIBUTES if a not in mentioned_attributes(context_text))
        return (missing or DEFAULT_ATTRIBUTES), objects
    if _DETAILED.search(instruction):
        return ATTRIBUTES, objects
    return requested_attributes(instruction, "supplement"), objects


def _rng(*parts: Any) -> random.Random:
    # str seeds hash with sha512: stable across runs, platforms and python versions
    return random.Random(":".join(str(p) for p in parts))


def _position_phrase(pos: str) -> str:
    if pos == "center":
        return "in the center"
    if pos in ("left", "right"):
        return f"on the {pos}"
    return f"at the {pos}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class Simulated(CaptionBackend):
    """Ground-truth captioner with hallucination, detail and prompt sensitivity (SynthVTR only).

    Args:
        root: SynthVTR dataset folder (holding ``synthvtr/frames.jsonl``); default: the data module's root.
        hallucination_rate: probability that each attribute slot is replaced by a wrong value.
        detail: 1..3, objects (1, 2, all) and attributes (2, 4, 6) a caption may mention.
        seed: seed of the wording and of the hallucination draws.
        delay_s: sleep per request, to simulate a slow model (tests use it to kill a run midway).
    """

    needs_pixels = False

    def __init__(self, root: str | None = None, hallucination_rate: float = 0.2, detail: int = 2, seed: int = 0,
                 delay_s: float = 0.0) -> None:
        if not 0.0 <= hallucination_rate <= 1.0:
            raise ValueError(f"hallucination_rate must be in [0, 1], got {hallucination_rate}")
        if detail not in (1, 2, 3):
            raise ValueError(f"detail must be 1, 2 or 3, got {detail}")
        self.root = root
        self.hallucination_rate = hallucination_rate
        self.detail = detail
        self.seed = seed
        self.delay_s = delay_s
        self._frames: dict[str, list[dict[str, Any]]] | None = None

    @property
    def model_name(self) -> str:
        return f"simulated(p={self.hallucination_rate:g},detail={self.detail},seed={self.seed})"

    def record_extras(self) -> dict[str, Any]:
        return {"hallucination_rate": self.hallucination_rate, "detail": self.detail, "seed": self.seed}

    def setup(self, device: Any, datamodule: Any | None = None) -> None:
        root = self.root or (str(datamodule.root) if datamodule is not None else None)
        if root is None:
            raise ValueError("Simulated needs the SynthVTR root (init arg `root`, or a data module with .root)")
        path = Path(root)
        if not (path / "synthvtr" / "frames.jsonl").is_file() and not (path / "frames.jsonl").is_file():
            raise FileNotFoundError(f"Simulated: no SynthVTR frame metadata under {path} (synthvtr/frames.jsonl); "
                                    "the simulated captioner only works on SynthVTR")
        self._frames = load_frame_metadata(path)

    # ------------------------------------------------------------------ generation
    def generate(self, requests: list[CaptionRequest]) -> list[CaptionOutput]:
        if self._frames is None:
            self.setup(None)
        out = []
        for req in requests:
            if self.delay_s:
                time.sleep(self.delay_s)
            frames = self._frames[req.video_id]  # type: ignore[index]
            bad = [f for f in req.frame_indices if not 0 <= f < len(frames)]
            if bad:
                raise IndexError(f"{req.video_id}: frame indices {bad} outside the {len(frames)} metadata frames")
            captions, halluc, slots = [], [], []
            for k in range(req.num_captions):
                text, n_bad, n_slots = self.caption_with_slots(req, frames, k)
                captions.append(text)
                halluc.append(n_bad)
                slots.append(n_slots)
            out.append(CaptionOutput(captions, {"hallucinated": halluc, "slots": slots}))
        return out

    def attributes_for(self, prompt: str, kind: str) -> tuple[str, ...]:
        """Requested attributes trimmed to what ``detail`` allows."""
        return requested_attributes(prompt, kind)[:_ATTRIBUTES_PER_DETAIL[self.detail]]

    def caption(self, req: CaptionRequest, frames: list[dict[str, Any]], k: int = 0) -> tuple[str, int]:
        """Caption number ``k`` of a request and its number of hallucinated slots."""
        text, n_bad, _ = self.caption_with_slots(req, frames, k)
        return text, n_bad

    def caption_with_slots(self, req: CaptionRequest, frames: list[dict[str, Any]],
                           k: int = 0) -> tuple[str, int, int]:
        """Caption number ``k``, its hallucinated slots and its attribute slots in all."""
        attrs = self.attributes_for(req.prompt, req.kind)
        n_obj = _OBJECTS_PER_DETAIL[self.detail]
        if req.kind == "supplement":
            wanted, cap = supplement_request(req.prompt, req.context_text)
            attrs = wanted[:_ATTRIBUTES_PER_DETAIL[self.detail]]
            n_obj = min(n_obj, cap) if cap is not None else n_obj
        where = req.frame_indices[0] if req.kind == "narration" else "video"
        key = (self.seed, req.video_id, where, k)
        words = _rng(*key, "words")
        if req.kind == "narration":
            frame = frames[req.frame_indices[0]]
            objects = [dict(o) for o in frame["objects"]]
            background, event = frame["background"], None
        else:
            objects, background, event = self._video_view([frames[f] for f in req.frame_indices])
        if req.kind == "multi" and k > 0:  # another perspective: other objects first, part of the attributes
            view = _rng(*key, "view")
            if objects:
                shift = k % len(objects)
                objects = objects[shift:] + objects[:shift]
            keep = view.randint(max(1, (len(attrs) + 1) // 2), len(attrs))
            chosen = set(view.sample(attrs, keep))
            if "shape" in attrs:
                chosen.add("shape")
            attrs = tuple(a for a in attrs if a in chosen)
        slots = [0, 0]  # hallucinated, all

        def value(true: Any, options: tuple[Any, ...], *slot: Any) -> Any:
            r = _rng(*key, "slot", *slot)
            slots[1] += 1
            if r.random() < self.hallucination_rate:
                slots[0] += 1
                return r.choice([o for o in options if o != true])
            return true

        phrases = [self._object_phrase(o, i, attrs, req.kind, value, words) for i, o in enumerate(objects[:n_obj])]
        scene = value(background, BACKGROUNDS, "background") if "background" in attrs else None
        text = self._join(phrases, scene, words, req.kind)
        if "event" in attrs and event is not None:
            text += words.choice((", then ", " and then ", "; later ", ", and after that ")) + self._event_phrase(
                event, value, words)
        return text, slots[0], slots[1]

    @staticmethod
    def _video_view(frames: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str, tuple[str, ...] | None]:
        """Objects seen in the sampled frames (first sighting, tracked by shape+motion) and the event."""
        tracks: dict[tuple[str, str], dict[str, Any]] = {}
        for fr in frames:
            for o in fr["objects"]:
                tracks.setdefault((o["shape"], o["motion"]), dict(o))
        first = {(o["colour"], o["shape"], o["motion"]) for o in frames[0]["objects"]}
        last = {(o["colour"], o["shape"], o["motion"]) for o in frames[-1]["objects"]}
        came, went = sorted(last - first), sorted(first - last)
        event: tuple[str, ...] | None = None
        if len(came) == 1 and len(went) == 1 and came[0][1:] == went[0][1:]:
            event = ("change", went[0][1], went[0][0], came[0][0])
        elif came:
            event = ("appear", came[0][1], came[0][0])
        elif went:
            event = ("disappear", went[0][1], went[0][0])
        return list(tracks.values()), frames[0]["background"], event

    @staticmethod
    def _object_phrase(o: dict[str, Any], i: int, attrs: tuple[str, ...], kind: str, value: Any,
                       words: random.Random) -> str:
        parts = []
        if "colour" in attrs:
            parts.append(words.choice(COLOUR_WORDS[value(o["colour"], COLOURS, i, "colour")]))
        if "shape" in attrs:
            parts.append(words.choice(SHAPE_WORDS[value(o["shape"], SHAPES, i, "shape")]))
        else:
            parts.append("object")
        np_ = f"{_article(parts[0])} {' '.join(parts)}"
        if "position" in attrs:
            np_ += " " + _position_phrase(value(o["pos"], POSITIONS, i, "position"))
        if "motion" in attrs:
            verb = words.choice(MOTION_WORDS[value(o["motion"], MOTIONS, i, "motion")])
            np_ += f" that {verb}"
        return np_

    @staticmethod
    def _join(phrases: list[str], scene: str | None, words: random.Random, kind: str) -> str:
        if not phrases:
            body = f"an empty {words.choice(SCENE_NOUNS[scene])}" if scene else "an empty scene"
            scene = None
        elif len(phrases) == 1:
            body = phrases[0]
        else:
            body = ", ".join(phrases[:-1]) + " and " + phrases[-1]
        if scene is not None:
            body = f"{body} {words.choice(SCENE_WORDS[scene])}"
        prefixes = (("a photo of ", "an image of ", "a picture showing ", "")
                    if kind == "narration" else ("a video of ", "a clip showing ", "in this video there is ", ""))
        return words.choice(prefixes) + body

    @staticmethod
    def _event_phrase(event: tuple[str, ...], value: Any, words: random.Random) -> str:
        kind = value(event[0], EVENTS, "event")
        shape = words.choice(SHAPE_WORDS[event[1]])
        colour = event[2]
        if kind == "change":
            to = event[3] if event[0] == "change" else words.choice([c for c in COLOURS if c != colour])
            return f"the {words.choice(COLOUR_WORDS[colour])} {shape} turns {words.choice(COLOUR_WORDS[to])}"
        verb = "appears" if kind == "appear" else words.choice(("disappears", "vanishes"))
        return f"{_article(colour)} {words.choice(COLOUR_WORDS[colour])} {shape} {verb}"
