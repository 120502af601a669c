"""SynthVTR's vocabulary: what a scene can contain and the words the captions use for it.

The names (``BACKGROUNDS``, ``SHAPES``, ``COLOURS``, ``MOTIONS``, ``EVENTS``) are the values stored in the
specs, facts and per-frame metadata; the ``*_WORDS`` / ``SCENE_NOUNS`` tables give several synonyms per
value, so a sentence encoder cannot match captions by surface form. The simulated captioner
(``lightning_modules/captioning/backends/simulated.py``) phrases its captions with the same tables.
"""

from __future__ import annotations

BACKGROUNDS: tuple[str, ...] = ("grass", "snow", "night", "indoor", "sand", "water")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond")
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 220, 30),
    "green": (40, 170, 50),
    "blue": (30, 80, 230),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGB)
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "static", "grow", "shrink", "spin")
EVENTS: tuple[str, ...] = ("appear", "disappear", "change")
# What a family's mutant may change relative to its base (``SynthVTRConfig.mutations``).
MUTATIONS: tuple[str, ...] = (
    "background", "colour", "shape", "motion", "event_type", "event_to", "event_obj",
)
# What a caption fragment may describe (``SynthVTRConfig.aspects``).
ASPECTS: tuple[str, ...] = (
    "event", "object_scene", "object_motion", "end_state", "start_scene", "two_objects", "scene_shape_motion",
)

COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "amber", "tangerine"),
    "yellow": ("yellow", "golden", "lemon yellow"),
    "green": ("green", "emerald", "lime green"),
    "blue": ("blue", "azure", "cobalt blue"),
    "purple": ("purple", "violet", "plum coloured"),
    "white": ("white", "ivory", "snow white"),
    "black": ("black", "jet black", "ebony"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc", "dot", "round shape"),
    "square": ("square", "box", "block", "tile"),
    "triangle": ("triangle", "wedge", "three sided shape", "pyramid shape"),
    "star": ("star", "five pointed star", "star shape"),
    "diamond": ("diamond", "rhombus", "lozenge", "diamond shape"),
}
MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("moves left", "slides to the left", "drifts leftward", "travels from right to left",
             "glides left"),
    "right": ("moves right", "slides to the right", "drifts rightward", "travels from left to right",
              "glides right"),
    "up": ("moves up", "rises", "floats upward", "climbs toward the top", "drifts up"),
    "down": ("moves down", "sinks", "falls", "drops toward the bottom", "drifts down"),
    "static": ("stays still", "does not move", "remains in place", "sits motionless", "stays put"),
    "grow": ("grows", "gets bigger", "expands", "swells in size", "grows larger"),
    "shrink": ("shrinks", "gets smaller", "contracts", "dwindles", "shrinks in size"),
    "spin": ("spins", "rotates", "twirls", "spins in place", "keeps rotating"),
}
SCENE_WORDS: dict[str, tuple[str, ...]] = {
    "grass": ("on the grass", "on a lawn", "in a green field", "on a grassy meadow", "in a park"),
    "snow": ("in the snow", "on snowy ground", "on a snowfield", "in a winter landscape", "on fresh snow"),
    "night": ("against the night sky", "under the stars", "at night", "in the dark sky", "on a starry night"),
    "indoor": ("indoors", "on a wooden floor", "inside a room", "on wooden planks", "on a parquet floor"),
    "sand": ("on the sand", "in the desert", "on a sandy beach", "among sand dunes", "on dry sand"),
    "water": ("on the water", "over the waves", "on a lake", "on the sea", "above rippling water"),
}
SCENE_NOUNS: dict[str, tuple[str, ...]] = {
    "grass": ("grassy field", "lawn", "meadow"),
    "snow": ("snowy field", "snowfield", "winter landscape"),
    "night": ("night sky", "starry sky", "dark sky"),
    "indoor": ("wooden floor", "room", "parquet floor"),
    "sand": ("desert", "beach", "dune field"),
    "water": ("lake", "sea", "stretch of water"),
}
