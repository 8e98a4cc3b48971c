"""The embedded `shapes` dataset: procedurally drawn scenes with captions and ground truth.

Every scene is a pure function of (seed, index), so the dataset is reproducible bit for bit and
tests can assert on what a caption should say. Three kinds of scene:

- single: one object ("a big red circle on a white background", "... in the top left")
- group:  two or three identical objects ("three small blue squares")
- pair:   two different objects and their relation ("a red circle to the left of a green star")
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

SIZE = 128  # pixels, square
_SUPERSAMPLE = 2  # draw at 2x then downsample: anti-aliased edges like a photo

COLOURS = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 70, 215),
    "yellow": (240, 205, 35),
    "purple": (135, 55, 170),
    "orange": (245, 135, 25),
}
BACKGROUNDS = {"white": (242, 242, 242), "black": (22, 22, 22), "gray": (125, 125, 125)}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": (10, 14), "big": (24, 30)}  # radius range in output pixels
COUNT_WORDS = {2: "two", 3: "three"}
POSITIONS = {  # name -> centre (fractions of the side)
    "top left": (0.27, 0.27),
    "top right": (0.73, 0.27),
    "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73),
    "center": (0.5, 0.5),
}
RELATIONS = {"to the left of": "to the right of", "above": "below"}


@dataclass
class Obj:
    shape: str
    colour: str
    size: str
    x: float  # centre, output pixels
    y: float
    radius: float


@dataclass
class Scene:
    image: Image.Image
    captions: list[str]
    truth: dict = field(default_factory=dict)


def _a(word: str) -> str:
    """'a red', 'an orange'."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def plural(shape: str) -> str:
    return shape + "s"


def scene(seed: int, index: int) -> Scene:
    """Draw scene `index` of the dataset with this `seed` (deterministic)."""
    rng = random.Random(f"shapes-{seed}-{index}")
    kind = rng.choices(["single", "group", "pair"], weights=[4, 3, 3])[0]
    background = rng.choice(list(BACKGROUNDS))
    if kind == "single":
        objects, captions, extra = _single(rng, background)
    elif kind == "group":
        objects, captions, extra = _group(rng, background)
    else:
        objects, captions, extra = _pair(rng, background)
    truth = {
        "kind": kind,
        "background": background,
        "objects": [
            {"shape": o.shape, "colour": o.colour, "size": o.size, "x": round(o.x, 1), "y": round(o.y, 1)}
            for o in objects
        ],
        **extra,
    }
    return Scene(image=_render(objects, background, rng), captions=captions, truth=truth)


def split_of(index: int) -> str:
    """80 / 10 / 10 train / val / test, interleaved so every split covers every kind of scene."""
    return {8: "val", 9: "test"}.get(index % 10, "train")


# --- scene kinds ----------------------------------------------------------------------------------


def _pick_object(rng: random.Random, size: str | None = None) -> tuple[str, str, str]:
    return rng.choice(SHAPES), rng.choice(list(COLOURS)), size or rng.choice(list(SIZES))


def _single(rng: random.Random, bg: str):
    shape, colour, size = _pick_object(rng)
    position = rng.choice(list(POSITIONS))
    fx, fy = POSITIONS[position]
    radius = rng.uniform(*SIZES[size])
    jitter = 6
    obj = Obj(shape, colour, size, fx * SIZE + rng.uniform(-jitter, jitter), fy * SIZE + rng.uniform(-jitter, jitter), radius)
    where = "in the center" if position == "center" else f"in the {position}"
    templates = [
        f"{_a(size)} {colour} {shape} on a {bg} background",
        f"{_a(colour)} {shape}",
        f"{_a(colour)} {shape} {where}",
        f"a {bg} background with {_a(size)} {colour} {shape}",
        f"there is {_a(size)} {colour} {shape} {where}",
        f"{_a(size)} {colour} {shape}",
        f"one {colour} {shape} on {bg}",
    ]
    return [obj], _five(rng, templates), {"position": position}


def _group(rng: random.Random, bg: str):
    count = rng.choice([2, 3])
    shape, colour, _ = _pick_object(rng)
    size = "small"
    objects = [Obj(shape, colour, size, x, y, rng.uniform(*SIZES[size])) for x, y in _spread(rng, count, 17)]
    n, shapes = COUNT_WORDS[count], plural(shape)
    templates = [
        f"{n} {colour} {shapes}",
        f"{n} small {colour} {shapes} on a {bg} background",
        f"there are {n} {colour} {shapes}",
        f"a {bg} background with {n} {colour} {shapes}",
        f"{n} {shapes} that are {colour}",
        f"{n} {colour} {shapes} on {bg}",
    ]
    return objects, _five(rng, templates), {"count": count}


def _pair(rng: random.Random, bg: str):
    (s1, c1, z1), (s2, c2, z2) = _pick_object(rng, "big"), _pick_object(rng, "big")
    while (s2, c2) == (s1, c1):
        s2, c2, z2 = _pick_object(rng, "big")
    relation = rng.choice(list(RELATIONS))
    r1, r2 = rng.uniform(17, 24), rng.uniform(17, 24)
    a, b = (0.28 * SIZE, 0.72 * SIZE), (rng.uniform(0.3, 0.7) * SIZE,) * 2
    if relation == "to the left of":  # object 1 on the left, both at the same height
        (x1, x2), (y1, y2) = a, b
    else:  # "above": object 1 on top
        (y1, y2), (x1, x2) = a, b
    objects = [Obj(s1, c1, z1, x1, y1, r1), Obj(s2, c2, z2, x2, y2, r2)]
    inverse = RELATIONS[relation]
    templates = [
        f"{_a(c1)} {s1} {relation} {_a(c2)} {s2}",
        f"{_a(c2)} {s2} {inverse} {_a(c1)} {s1}",
        f"{_a(c1)} {s1} and {_a(c2)} {s2}",
        f"{_a(c1)} {s1} and {_a(c2)} {s2} on a {bg} background",
        f"{_a(c2)} {s2} and {_a(c1)} {s1}",
        f"{_a(c1)} {s1} {relation} {_a(c2)} {s2} on {bg}",
    ]
    return objects, _five(rng, templates), {"relation": relation}


def _five(rng: random.Random, templates: list[str]) -> list[str]:
    """Five distinct captions; the first template (the most complete) is always among them."""
    return [templates[0]] + rng.sample(templates[1:], 4)


def _spread(rng: random.Random, count: int, min_gap: float) -> list[tuple[float, float]]:
    """`count` centres far enough apart that small objects never overlap."""
    while True:
        points = [(rng.uniform(20, SIZE - 20), rng.uniform(20, SIZE - 20)) for _ in range(count)]
        if all(math.dist(p, q) > 2 * min_gap for i, p in enumerate(points) for q in points[i + 1 :]):
            return points


# --- drawing --------------------------------------------------------------------------------------


def _render(objects: list[Obj], bg: str, rng: random.Random) -> Image.Image:
    s = _SUPERSAMPLE
    image = Image.new("RGB", (SIZE * s, SIZE * s), _jitter(BACKGROUNDS[bg], rng, 8))
    draw = ImageDraw.Draw(image)
    for o in objects:
        fill = _jitter(COLOURS[o.colour], rng, 12)
        x, y, r = o.x * s, o.y * s, o.radius * s
        if o.shape == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        elif o.shape == "square":
            side = r * 0.9
            draw.rectangle([x - side, y - side, x + side, y + side], fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(x, y - r), (x + r * 0.95, y + r * 0.75), (x - r * 0.95, y + r * 0.75)], fill=fill)
        else:  # star: five points, inner radius 0.45 r
            points = []
            for k in range(10):
                rad = r if k % 2 == 0 else r * 0.45
                angle = -math.pi / 2 + k * math.pi / 5
                points.append((x + rad * math.cos(angle), y + rad * math.sin(angle)))
            draw.polygon(points, fill=fill)
    return image.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)
