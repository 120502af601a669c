"""Video specs: what each SynthVTR video shows, sampled family by family from the seed.

A family is a random base spec plus ``family_size - 1`` mutants that each change exactly one thing (the
background, one object's colour / shape / motion, the event type, the event's target colour or the object
it hits), so every test video has its hard negatives in the pool. Objects are distinct (colour, shape)
pairs placed so that their trajectories do not overlap; the event (appear, disappear, change colour)
happens at ``t`` in ``SynthVTRConfig.event_window`` of the clip. Everything is deterministic from
``SynthVTRConfig.seed`` (python ``random.Random`` seeded with strings, stable across platforms and python
versions).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from datamodules.synthvtr.config import SynthVTRConfig
from datamodules.synthvtr.lexicon import BACKGROUNDS, COLOURS, EVENTS, MOTIONS, SHAPES

_HORIZONTAL = ("left", "right")
_VERTICAL = ("up", "down")
# Polygons reach a little beyond the nominal radius (the star's tips); used for bounds and overlap tests.
_SHAPE_EXTENT = 1.15
_OVERLAP_GRID = 11  # trajectory samples for the non-overlap test (independent of num_frames on purpose)


@dataclass(frozen=True)
class ObjectSpec:
    """One object: its identity, its motion and the centre of its trajectory (normalised, y down)."""

    colour: str
    shape: str
    motion: str
    anchor: tuple[float, float] = (0.5, 0.5)


@dataclass(frozen=True)
class EventSpec:
    """The mid-video event: ``kind`` on object ``obj`` at normalised time ``t`` (``to_colour`` for change)."""

    kind: str
    obj: int
    t: float
    to_colour: str | None = None


@dataclass(frozen=True)
class VideoSpec:
    """Everything needed to render a video and to derive its facts, captions and frame metadata."""

    video_id: str
    index: int
    family: int
    member: int  # 0 = the family's base spec
    split: str
    background: str
    objects: tuple[ObjectSpec, ...]
    event: EventSpec
    render_seed: int
    mutation: str | None = None  # which single thing this mutant changed relative to the base

    def key(self) -> str:
        """Semantic identity (order of objects, anchors, timing and texture excluded): must be unique."""
        objs = sorted((o.colour, o.shape, o.motion, i == self.event.obj) for i, o in enumerate(self.objects))
        return json.dumps([self.background, objs, self.event.kind, self.event.to_colour])

    def to_json(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id, "index": self.index, "family": self.family, "member": self.member,
            "split": self.split, "mutation": self.mutation, "background": self.background,
            "objects": [{"colour": o.colour, "shape": o.shape, "motion": o.motion, "anchor": list(o.anchor)}
                        for o in self.objects],
            "event": {"kind": self.event.kind, "obj": self.event.obj, "t": self.event.t,
                      "to_colour": self.event.to_colour},
            "render_seed": self.render_seed,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VideoSpec:
        return cls(
            video_id=d["video_id"], index=d["index"], family=d["family"], member=d["member"],
            split=d["split"], background=d["background"],
            objects=tuple(ObjectSpec(o["colour"], o["shape"], o["motion"], tuple(o["anchor"]))  # type: ignore[arg-type]
                          for o in d["objects"]),
            event=EventSpec(d["event"]["kind"], d["event"]["obj"], d["event"]["t"], d["event"]["to_colour"]),
            render_seed=d["render_seed"], mutation=d.get("mutation"),
        )


def _motions_for(shape: str) -> tuple[str, ...]:
    """A spinning circle looks static, so circles never spin."""
    return tuple(m for m in MOTIONS if not (shape == "circle" and m == "spin"))


def _identities(spec_objects: Sequence[ObjectSpec], event: EventSpec) -> list[set[tuple[str, str]]]:
    """Per object, every (colour, shape) it shows during the clip."""
    out = [{(o.colour, o.shape)} for o in spec_objects]
    if event.kind == "change" and event.to_colour is not None:
        out[event.obj].add((event.to_colour, spec_objects[event.obj].shape))
    return out


def _semantics_valid(objects: Sequence[ObjectSpec], event: EventSpec) -> bool:
    """Objects must be distinguishable by (colour, shape) at all times, so captions are unambiguous."""
    if not 0 <= event.obj < len(objects):
        return False
    if any(o.motion not in _motions_for(o.shape) for o in objects):
        return False
    if event.kind == "change":
        if event.to_colour is None or event.to_colour == objects[event.obj].colour:
            return False
    elif event.to_colour is not None:
        return False
    ids = _identities(objects, event)
    seen: set[tuple[str, str]] = set()
    for s in ids:
        if s & seen:
            return False
        seen |= s
    return True


def trajectory(obj: ObjectSpec, u: float, radius: float,
               amplitude: float) -> tuple[float, float, float, float]:
    """Normalised (x, y, r, angle in degrees) of ``obj`` at clip time ``u`` in [0, 1].

    Motions are defined over the whole clip (not per second) so that a clip means the same at any length.
    """
    ax, ay = obj.anchor
    x, y, r, angle = ax, ay, radius, 0.0
    half = amplitude / 2
    if obj.motion == "left":
        x = ax + half - amplitude * u
    elif obj.motion == "right":
        x = ax - half + amplitude * u
    elif obj.motion == "up":
        y = ay + half - amplitude * u
    elif obj.motion == "down":
        y = ay - half + amplitude * u
    elif obj.motion == "grow":
        r = radius * (0.5 + u)
    elif obj.motion == "shrink":
        r = radius * (1.5 - u)
    elif obj.motion == "spin":
        angle = 360.0 * u
    return x, y, r, angle


def clip_time(frame: int, num_frames: int) -> float:
    """Normalised clip time in [0, 1] of frame ``frame`` out of ``num_frames``."""
    return frame / (num_frames - 1)


def object_state(spec: VideoSpec, index: int, u: float) -> tuple[bool, str]:
    """(visible, colour) of object ``index`` at clip time ``u``: the event takes effect at ``u >= t``."""
    o, ev = spec.objects[index], spec.event
    after = u >= ev.t
    if ev.obj != index:
        return True, o.colour
    if ev.kind == "appear":
        return after, o.colour
    if ev.kind == "disappear":
        return not after, o.colour
    return True, (ev.to_colour or o.colour) if after else o.colour


def _anchor_bounds(motion: str, radius: float,
                   amplitude: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """Anchor ranges that keep the object fully inside the frame for its whole trajectory."""
    rmax = radius * (1.5 if motion in ("grow", "shrink") else 1.0) * _SHAPE_EXTENT
    half = amplitude / 2

    def rng_for(moving: bool) -> tuple[float, float]:
        lo, hi = rmax + (half if moving else 0.0), 1.0 - rmax - (half if moving else 0.0)
        return (lo, hi) if lo <= hi else (0.5, 0.5)

    return rng_for(motion in _HORIZONTAL), rng_for(motion in _VERTICAL)


def _in_bounds(obj: ObjectSpec, radius: float, amplitude: float) -> bool:
    (xl, xh), (yl, yh) = _anchor_bounds(obj.motion, radius, amplitude)
    return xl - 1e-9 <= obj.anchor[0] <= xh + 1e-9 and yl - 1e-9 <= obj.anchor[1] <= yh + 1e-9


def _overlap_margin(objects: Sequence[ObjectSpec], radius: float, amplitude: float) -> float:
    """Smallest gap between any two objects over the clip (negative = they touch or overlap)."""
    if len(objects) < 2:
        return 1.0
    us = [k / (_OVERLAP_GRID - 1) for k in range(_OVERLAP_GRID)]
    paths = [[trajectory(o, u, radius, amplitude) for u in us] for o in objects]
    margin = math.inf
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            for a, b in zip(paths[i], paths[j], strict=True):
                gap = math.hypot(a[0] - b[0], a[1] - b[1]) - (a[2] + b[2]) * _SHAPE_EXTENT
                margin = min(margin, gap)
    return margin


def _place(objects: list[ObjectSpec], free: Sequence[int], rng: random.Random, radius: float,
           amplitude: float, tries: int = 60) -> list[ObjectSpec]:
    """Sample anchors for the objects in ``free`` (others keep theirs) so that nothing ever overlaps.

    Rejection sampling; if no candidate is overlap-free the one with the largest gap is kept (rare,
    only with 3-4 objects), since a light overlap does not change any fact.
    """
    best, best_margin = list(objects), -math.inf
    for _ in range(tries):
        cand = list(objects)
        for i in free:
            (xl, xh), (yl, yh) = _anchor_bounds(cand[i].motion, radius, amplitude)
            anchor = (round(rng.uniform(xl, xh), 4), round(rng.uniform(yl, yh), 4))
            cand[i] = dataclasses.replace(cand[i], anchor=anchor)
        margin = _overlap_margin(cand, radius, amplitude)
        if margin > best_margin:
            best, best_margin = cand, margin
        if margin >= 0.02:
            break
    return best


def _sample_event(objects: Sequence[ObjectSpec], rng: random.Random,
                  window: tuple[float, float]) -> EventSpec:
    kind = rng.choice(EVENTS)
    obj = rng.randrange(len(objects))
    t = round(rng.uniform(*window), 3)
    to = None
    if kind == "change":
        taken = {(o.colour, o.shape) for k, o in enumerate(objects) if k != obj}
        options = [c for c in COLOURS if c != objects[obj].colour and (c, objects[obj].shape) not in taken]
        to = rng.choice(options)
    return EventSpec(kind, obj, t, to)


def _sample_base(rng: random.Random, cfg: SynthVTRConfig) -> tuple[str, list[ObjectSpec], EventSpec]:
    n = rng.randint(cfg.min_objects, cfg.max_objects)
    objects: list[ObjectSpec] = []
    taken: set[tuple[str, str]] = set()
    while len(objects) < n:
        colour, shape = rng.choice(COLOURS), rng.choice(SHAPES)
        if (colour, shape) in taken:
            continue
        taken.add((colour, shape))
        objects.append(ObjectSpec(colour, shape, rng.choice(_motions_for(shape))))
    event = _sample_event(objects, rng, cfg.event_window)
    objects = _place(objects, range(n), rng, cfg.object_radius, cfg.motion_amplitude)
    return rng.choice(BACKGROUNDS), objects, event


def _applicable_mutations(objects: Sequence[ObjectSpec], event: EventSpec,
                          allowed: Sequence[str]) -> list[str]:
    out = []
    for kind in allowed:
        if kind == "event_to" and event.kind != "change":
            continue
        if kind == "event_obj" and len(objects) < 2:
            continue
        out.append(kind)
    return out


def _mutate(background: str, objects: list[ObjectSpec], event: EventSpec, kind: str, rng: random.Random,
            cfg: SynthVTRConfig) -> tuple[str, list[ObjectSpec], EventSpec] | None:
    """Change exactly one semantic attribute; ``None`` if the random choice made an invalid spec."""
    objects = list(objects)
    if kind == "background":
        background = rng.choice([b for b in BACKGROUNDS if b != background])
    elif kind in ("colour", "shape", "motion"):
        i = rng.randrange(len(objects))
        o = objects[i]
        if kind == "colour":
            objects[i] = dataclasses.replace(o, colour=rng.choice([c for c in COLOURS if c != o.colour]))
        elif kind == "shape":
            options = [s for s in SHAPES if s != o.shape and o.motion in _motions_for(s)]
            objects[i] = dataclasses.replace(o, shape=rng.choice(options))
        else:
            objects[i] = dataclasses.replace(o, motion=rng.choice([m for m in _motions_for(o.shape)
                                                                   if m != o.motion]))
            # The trajectory changed: keep the anchor if it still fits, else re-place only this object.
            if not _in_bounds(objects[i], cfg.object_radius, cfg.motion_amplitude) or (
                    _overlap_margin(objects, cfg.object_radius, cfg.motion_amplitude) < 0.02):
                objects = _place(objects, [i], rng, cfg.object_radius, cfg.motion_amplitude)
    elif kind == "event_type":
        new_kind = rng.choice([k for k in EVENTS if k != event.kind])
        to = None
        if new_kind == "change":
            to = rng.choice([c for c in COLOURS if c != objects[event.obj].colour])
        event = dataclasses.replace(event, kind=new_kind, to_colour=to)
    elif kind == "event_to":
        options = [c for c in COLOURS if c not in (event.to_colour, objects[event.obj].colour)]
        event = dataclasses.replace(event, to_colour=rng.choice(options))
    elif kind == "event_obj":
        event = dataclasses.replace(event, obj=rng.choice([k for k in range(len(objects)) if k != event.obj]))
    else:
        raise ValueError(f"unknown mutation {kind!r}")
    return (background, objects, event) if _semantics_valid(objects, event) else None


def build_specs(config: SynthVTRConfig) -> list[VideoSpec]:
    """All video specs, family by family (base first), with the family-level train/test split."""
    rng = random.Random(f"synthvtr:{config.seed}:specs")
    seen: set[str] = set()
    test = set(rng.sample(range(config.num_families), config.test_families))
    specs: list[VideoSpec] = []

    def make(fam: int, member: int, bg: str, objs: Sequence[ObjectSpec], ev: EventSpec,
             mutation: str | None) -> VideoSpec:
        index = len(specs)
        return VideoSpec(video_id=f"synth{index:05d}", index=index, family=fam, member=member,
                         split="test" if fam in test else "train", background=bg, objects=tuple(objs),
                         event=ev, render_seed=rng.getrandbits(32), mutation=mutation)

    for fam in range(config.num_families):
        for _ in range(10_000):
            bg, objs, ev = _sample_base(rng, config)
            base = make(fam, 0, bg, objs, ev, None)
            kinds = _applicable_mutations(objs, ev, config.mutations)
            if base.key() not in seen and (kinds or config.family_size == 1):
                break
        else:  # pragma: no cover - only with absurdly many families
            raise RuntimeError("could not sample a new unique base spec; the spec space is exhausted")
        seen.add(base.key())
        specs.append(base)
        # Cycle through the applicable mutation kinds in a shuffled order, so one family's hard
        # negatives differ from the base in different ways.
        queue: list[str] = []
        attempts = 0
        while len(specs) - base.index < config.family_size:
            attempts += 1
            if attempts > 2000:  # pragma: no cover - only with a tiny mutation set and huge families
                raise RuntimeError(f"family {fam}: could not find {config.family_size - 1} unique mutants")
            if not queue:
                queue = rng.sample(kinds, len(kinds))
            kind = queue.pop()
            mutated = _mutate(bg, list(objs), ev, kind, rng, config)
            if mutated is None:
                continue
            cand = make(fam, len(specs) - base.index, *mutated, kind)
            if cand.key() not in seen:
                seen.add(cand.key())
                specs.append(cand)
    return specs
