"""What a SynthVTR video shows, in words: per-frame metadata, the video's facts and its captions.

* **Frame metadata** (:func:`frame_metadata`): per frame the background and the visible objects (colour
  after any change, shape, normalised x / y / radius, a 3x3 position word, motion); the renderer draws
  from the same states, and the simulated captioner (``lightning_modules/captioning/backends/simulated.py``)
  reads them instead of pixels.
* **Facts** (:func:`video_facts`): every atomic statement a caption may make about the video.
* **Captions** (:func:`make_captions`): template captions with synonyms, each describing only *part* of
  the video (``SynthVTRConfig.detail`` aspects joined), each with the facts it asserts. A video is
  consistent with a caption iff it has all the caption's facts, which sets the retrieval ceiling
  (``datamodules/synthvtr/oracle.py``).

Semantics depend only on the seed and the semantic knobs, never on ``image_size``, ``fps``, ``crf`` or
``preset``, so text features can be reused across resolutions.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, NamedTuple

from datamodules.synthvtr.config import SynthVTRConfig
from datamodules.synthvtr.lexicon import COLOUR_WORDS, MOTION_WORDS, SCENE_NOUNS, SCENE_WORDS, SHAPE_WORDS
from datamodules.synthvtr.specs import VideoSpec, clip_time, object_state, trajectory

# Sentence templates, several per aspect (the words that fill them come from lexicon.py).
_EVENT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "appear": ("{np} appears", "{np} pops into view", "{np} shows up", "{np} comes into view",
               "suddenly {np} appears", "{np} appears halfway through"),
    "disappear": ("{np} disappears", "{np} vanishes", "{np} blinks out of sight", "{np} goes out of view",
                  "{np} vanishes halfway through"),
    "change": ("{np} turns {c2}", "{np} changes colour to {c2}", "{np} changes color to {c2}",
               "the {s} switches from {c1} to {c2}", "{np} becomes {c2}", "the {s} goes from {c1} to {c2}"),
}
_START_TEMPLATES = ("at the start {np} is {scene}", "the video opens with {np} {scene}",
                    "at first {np} is {scene}", "{np} is {scene} at the beginning",
                    "it begins with {np} {scene}")
_START_EMPTY = ("at first the {noun} is empty", "the video opens on an empty {noun}",
                "it begins with an empty {noun}", "nothing is visible at first {scene}")
_END_TEMPLATES = ("the video ends with {np}", "at the end {np} is visible",
                  "{np} is visible in the final frame", "by the end {np} is on screen",
                  "it ends with {np} in view")
_END_EMPTY = ("the video ends with an empty scene", "by the end nothing is left",
              "at the end the screen is empty", "finally nothing remains")
_TWO_TEMPLATES = ("{np1} and {np2} are shown", "there is {np1} and {np2}", "{np1} is seen with {np2}",
                  "{np1} shares the scene with {np2}", "both {np1} and {np2} are there")
_OBJ_SCENE_TEMPLATES = ("{np} {scene}", "{np} is {scene}", "there is {np} {scene}", "{scene} there is {np}",
                        "{np} can be seen {scene}")
_OBJ_MOTION_TEMPLATES = ("{np} {motion}", "{np} {motion}", "there is {np} that {motion}")
_SCENE_SHAPE_TEMPLATES = ("{scene} {np} {motion}", "{np} {motion} {scene}")
_PREFIXES = ("", "", "", "", "a video where ", "a clip in which ", "an animation where ", "in this clip ")
_SAME_TIME_JOIN = (" and ", " while ", " and also ")
_LATER_JOIN = (" then ", " and then ", " after that ", " later ")
# Temporal rank of each aspect: fragments are ordered by it so that "then" reads true.
_ASPECT_RANK = {"start_scene": 0, "object_scene": 1, "two_objects": 1, "object_motion": 1,
                "scene_shape_motion": 1, "event": 2, "end_state": 3}


def position_word(x: float, y: float) -> str:
    """The 3x3 position word of a normalised point: "top left", "top", ..., "center", ..., "bottom right"."""
    col = ("left", "center", "right")[min(2, max(0, int(x * 3)))]
    row = ("top", "middle", "bottom")[min(2, max(0, int(y * 3)))]
    if row == "middle":
        return col
    return row if col == "center" else f"{row} {col}"


def frame_metadata(spec: VideoSpec, config: SynthVTRConfig) -> list[dict[str, Any]]:
    """Per frame: background and visible objects (colour after any change, shape, x, y, r, pos, motion).

    The renderer draws from exactly these states, so a simulated captioner reading them sees what the
    pixels show (occlusion aside, which the non-overlap sampling makes rare).
    """
    frames = []
    for f in range(config.num_frames):
        u = clip_time(f, config.num_frames)
        objs = []
        for i, o in enumerate(spec.objects):
            visible, colour = object_state(spec, i, u)
            if not visible:
                continue
            x, y, r, _ = trajectory(o, u, config.object_radius, config.motion_amplitude)
            objs.append({"colour": colour, "shape": o.shape, "x": round(x, 4), "y": round(y, 4),
                         "r": round(r, 4), "pos": position_word(x, y), "motion": o.motion})
        frames.append({"frame": f, "time": round(f / config.fps, 4), "background": spec.background,
                       "objects": objs})
    return frames


class _ObjectView(NamedTuple):
    """One object over the whole clip, as the facts and captions describe it."""

    colour: str  # initial colour
    shape: str
    motion: str
    colours: tuple[str, ...]  # every colour shown while visible
    start: str | None  # colour at the first frame, None if invisible
    end: str | None  # colour at the last frame, None if invisible


def _object_views(spec: VideoSpec) -> list[_ObjectView]:
    out = []
    for i, o in enumerate(spec.objects):
        vis0, c0 = object_state(spec, i, 0.0)
        vis1, c1 = object_state(spec, i, 1.0)
        colours = tuple(dict.fromkeys([o.colour] + ([c1] if c1 != o.colour else [])))
        out.append(_ObjectView(o.colour, o.shape, o.motion, colours, c0 if vis0 else None, c1 if vis1 else None))
    return out


def video_facts(spec: VideoSpec) -> frozenset[str]:
    """Every atomic fact a caption may assert about this video.

    ``bg:B``; ``obj:C:S`` and ``mot:C:S:M`` for every colour an object shows; ``mots:S:M`` (uncoloured);
    ``start:C:S`` / ``end:C:S`` for what is visible at the first / last frame, ``start_n:K`` /
    ``end_n:K`` for how many (captions only assert K = 0: "the clip ends on an empty scene");
    ``appear:C:S`` / ``disappear:C:S`` / ``change:S:C1:C2`` for the event.
    """
    views = _object_views(spec)
    facts = {f"bg:{spec.background}"}
    for v in views:
        for c in v.colours:
            facts.add(f"obj:{c}:{v.shape}")
            facts.add(f"mot:{c}:{v.shape}:{v.motion}")
        facts.add(f"mots:{v.shape}:{v.motion}")
        if v.start is not None:
            facts.add(f"start:{v.start}:{v.shape}")
        if v.end is not None:
            facts.add(f"end:{v.end}:{v.shape}")
    facts.add(f"start_n:{sum(v.start is not None for v in views)}")
    facts.add(f"end_n:{sum(v.end is not None for v in views)}")
    ev, target = spec.event, views[spec.event.obj]
    if ev.kind == "change":
        facts.add(f"change:{target.shape}:{target.colour}:{ev.to_colour}")
    else:
        facts.add(f"{ev.kind}:{target.colour}:{target.shape}")
    return frozenset(facts)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(rng: random.Random, colour: str | None, shape: str) -> str:
    """A noun phrase with a random synonym and determiner; ``colour=None`` gives an uncoloured one."""
    words = ([rng.choice(COLOUR_WORDS[colour])] if colour else []) + [rng.choice(SHAPE_WORDS[shape])]
    det = "the" if rng.random() < 0.2 else _article(words[0])
    return " ".join([det, *words])


Fragment = tuple[str, frozenset[str]]


def _aspect(name: str, spec: VideoSpec, views: list[_ObjectView], rng: random.Random) -> Fragment | None:
    """One caption fragment for aspect ``name`` and the facts it asserts (``None`` if not applicable)."""
    bg = spec.background
    scene = rng.choice(SCENE_WORDS[bg])
    if name == "event":
        ev, v = spec.event, views[spec.event.obj]
        tpl = rng.choice(_EVENT_TEMPLATES[ev.kind])
        if ev.kind == "change":
            assert ev.to_colour is not None
            text = tpl.format(np=_noun_phrase(rng, v.colour, v.shape), s=rng.choice(SHAPE_WORDS[v.shape]),
                              c1=rng.choice(COLOUR_WORDS[v.colour]),
                              c2=rng.choice(COLOUR_WORDS[ev.to_colour]))
            return text, frozenset({f"change:{v.shape}:{v.colour}:{ev.to_colour}"})
        return tpl.format(np=_noun_phrase(rng, v.colour, v.shape)), frozenset({f"{ev.kind}:{v.colour}:{v.shape}"})
    if name == "object_scene":
        v = rng.choice(views)
        c = rng.choice(v.colours)
        text = rng.choice(_OBJ_SCENE_TEMPLATES).format(np=_noun_phrase(rng, c, v.shape), scene=scene)
        return text, frozenset({f"obj:{c}:{v.shape}", f"bg:{bg}"})
    if name == "object_motion":
        v = rng.choice(views)
        c = rng.choice(v.colours)
        text = rng.choice(_OBJ_MOTION_TEMPLATES).format(np=_noun_phrase(rng, c, v.shape),
                                                        motion=rng.choice(MOTION_WORDS[v.motion]))
        return text, frozenset({f"mot:{c}:{v.shape}:{v.motion}"})
    if name in ("end_state", "start_scene"):
        # One of the objects visible at the first / last frame, or the fact that none is.
        which = "end" if name == "end_state" else "start"
        items = [(getattr(v, which), v.shape) for v in views if getattr(v, which) is not None]
        facts = {f"bg:{bg}"} if name == "start_scene" else set()
        if not items:
            tpl = rng.choice(_END_EMPTY if which == "end" else _START_EMPTY)
            facts.add(f"{which}_n:0")
            return tpl.format(noun=rng.choice(SCENE_NOUNS[bg]), scene=scene), frozenset(facts)
        c, sh = rng.choice(items)
        facts.add(f"{which}:{c}:{sh}")
        tpl = rng.choice(_END_TEMPLATES if which == "end" else _START_TEMPLATES)
        return tpl.format(np=_noun_phrase(rng, c, sh), scene=scene), frozenset(facts)
    if name == "two_objects":
        if len(views) < 2:
            return None
        a, b = rng.sample(views, 2)
        ca, cb = rng.choice(a.colours), rng.choice(b.colours)
        text = rng.choice(_TWO_TEMPLATES).format(np1=_noun_phrase(rng, ca, a.shape), np2=_noun_phrase(rng, cb, b.shape))
        return text, frozenset({f"obj:{ca}:{a.shape}", f"obj:{cb}:{b.shape}"})
    if name == "scene_shape_motion":
        v = rng.choice(views)
        text = rng.choice(_SCENE_SHAPE_TEMPLATES).format(scene=scene, np=_noun_phrase(rng, None, v.shape),
                                                         motion=rng.choice(MOTION_WORDS[v.motion]))
        return text, frozenset({f"bg:{bg}", f"mots:{v.shape}:{v.motion}"})
    raise ValueError(f"unknown aspect {name!r}")


def make_captions(spec: VideoSpec, config: SynthVTRConfig) -> list[Fragment]:
    """``captions_per_video`` captions of ``detail`` aspects each (see ``SynthVTRConfig``), joined in
    temporal order (start, during, event, end) so that "then" reads true; with probability
    ``one_sided_fraction`` a caption is instead one fragment about the start or the end of the video only.

    Each caption is lower case without punctuation (MSR-VTT style, and safe in a CSV) and comes with the
    union of its fragments' facts. Repeated sentences within a video are avoided when possible.
    """
    rng = random.Random(f"synthvtr:{config.seed}:captions:{spec.index}")
    views = _object_views(spec)
    names = [a for a in config.aspects if a != "two_objects" or len(views) >= 2] or ["object_scene"]
    one_sided = config.one_sided_aspects()
    out: list[Fragment] = []
    used: set[str] = set()
    for _ in range(config.captions_per_video):
        # Drawn only when the knob is on, so captions with one_sided_fraction=0 are those of synthvtr-1.1.
        sided = config.one_sided_fraction > 0 and rng.random() < config.one_sided_fraction
        for attempt in range(20):
            if sided:
                chosen = [rng.choice(one_sided)]
            elif config.distinct_aspects:
                chosen = rng.sample(names, min(config.detail, len(names)))
            else:
                chosen = list(dict.fromkeys(rng.choice(names) for _ in range(config.detail)))
            chosen.sort(key=lambda a: _ASPECT_RANK[a])
            parts = [(a, f) for a in chosen if (f := _aspect(a, spec, views, rng)) is not None]
            text = parts[0][1][0]
            for (prev, _), (name, frag) in itertools.pairwise(parts):
                later = _ASPECT_RANK[name] > _ASPECT_RANK[prev]
                text += rng.choice(_LATER_JOIN if later else _SAME_TIME_JOIN) + frag[0]
            text = rng.choice(_PREFIXES) + text
            frags = [f for _, f in parts]
            if text not in used or attempt == 19:
                break
        used.add(text)
        out.append((text, frozenset().union(*(f[1] for f in frags))))
    return out
