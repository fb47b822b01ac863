"""The embedded visual-QA suite: grid scenes of coloured shapes and handwritten digits.

Each image is a GRID x GRID board of CELL x CELL pixel cells, so with a vision patch size of CELL
every object falls in exactly one patch and becomes one image token (vision stays easy). The
questions are multi-step so the language decoder needs its depth: counting under a condition,
comparing two counts, lookups that chain two spatial relations, counting along a row or column,
adding and comparing real handwritten digits (scikit-learn's ``load_digits``).

Samples use FineVision's conversation schema (``images``, ``texts`` = [{"user", "assistant"}],
``source``) so one loader serves both. Splits are deterministic and disjoint: the held-out test
split owns its (scene, question) keys and its own pool of digit images; calibration skips test
keys; the training stream skips both.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

GRID = 4
CELL = 8
IMAGE_SIZE = GRID * CELL

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (60, 100, 255),
    "yellow": (240, 220, 40),
}
SHAPES = ("square", "circle", "triangle", "cross")
DIRECTIONS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}
TASKS = ("count", "compare", "relation", "line_count", "digit_sum", "digit_max")
# Training-only questions, each a primitive that the evaluated tasks chain: find an object by
# content (locate), read a cell by position (lookup), test a conjunction (exists), name the cell a
# relation question points to (neighbour: relation without reading the cell), count a line through
# a cell named by position (line_at: line_count without finding the object), count everything
# (total: count without selecting), read a cell a hop or two from one named by position
# (relation_at: relation without finding its anchor), count the objects of a row or column named
# by number (line_total: line_at without leaving its cell out). Three more ask a suite question
# but answer it with its intermediate steps spelled out first (relation_cot: "row 2 column 3 red
# cross", line_cot: "row 2 1", line_total_cot: "row 2 2 1" with the line's own count before the
# answer), for a trainer that drops those words a few at a time (COT_STEPS) until the answer is
# the suite's own, so the decoder learns to do the steps silently. The embedded trainer mixes them
# in on request (--primers, optionally first: --primer-steps); never in calibration or test.
PRIMER_TASKS = (
    "locate", "lookup", "exists", "neighbour", "line_at", "total", "relation_at", "line_total",
    "relation_cot", "line_cot", "line_total_cot",
)
COT_STEPS = {"relation_cot": 4, "line_cot": 2, "line_total_cot": 3}  # words before the suite's answer
SPLITS = ("train", "calib", "test")
SUITE_VERSION = 2  # bump when generation changes, so cached training pools are rebuilt

# Keys reserved for the held-out splits: the training stream never emits them, whatever size
# of test or calibration set a caller asks for up to these bounds.
TEST_RESERVE = 1000
CALIB_RESERVE = 500

# An object is ("shape", colour, shape) or ("digit", value, digit_image_index); None is empty.
Obj = tuple[str, str | int, str | int] | None
Scene = tuple[Obj, ...]


@dataclass(frozen=True)
class Item:
    """One question about one scene, before rendering."""

    task: str
    scene: Scene
    question: str
    answer: str

    @property
    def key(self) -> tuple:
        return (self.task, self.scene, self.question)


# ---------------------------------------------------------------------------------------------
# Rendering


def _shape_masks() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:CELL, 0:CELL]
    square = (yy >= 1) & (yy <= 6) & (xx >= 1) & (xx <= 6)
    circle = (yy - 3.5) ** 2 + (xx - 3.5) ** 2 <= 3.3**2
    triangle = (yy >= 1) & (yy <= 6) & (np.abs(xx - 3.5) <= (yy - 0.5) * 0.6)
    cross = ((yy >= 3) & (yy <= 4) & (xx >= 1) & (xx <= 6)) | ((xx >= 3) & (xx <= 4) & (yy >= 1) & (yy <= 6))
    return {"square": square, "circle": circle, "triangle": triangle, "cross": cross}


@functools.cache
def _assets() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Shape masks, digit images (N, 8, 8) in [0, 1], their labels, and digit pools per split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(1234).permutation(len(labels))
    n_test = len(labels) // 5
    pools = {"test": np.sort(order[:n_test]), "train": np.sort(order[n_test:])}
    pools["calib"] = pools["train"]
    return _shape_masks(), images, labels, pools


def render(scene: Scene) -> Image.Image:
    """Draw a scene as an RGB image of IMAGE_SIZE x IMAGE_SIZE pixels on black."""
    masks, digit_images, _, _ = _assets()
    pixels = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for index, obj in enumerate(scene):
        if obj is None:
            continue
        row, col = divmod(index, GRID)
        cell = pixels[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL]
        if obj[0] == "shape":
            cell[masks[obj[2]]] = COLOURS[obj[1]]
        else:
            cell[:] = (digit_images[obj[2]][..., None] * 255).astype(np.uint8)
    return Image.fromarray(pixels)


# ---------------------------------------------------------------------------------------------
# Scenes and questions


def _random_shape(rng: np.random.Generator) -> Obj:
    return ("shape", str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))


def _shape_scene(rng: np.random.Generator, low: float = 0.3, high: float = 0.8, thin: float = 1.0) -> list[Obj]:
    density = rng.uniform(low * thin, high * thin)
    return [_random_shape(rng) if rng.random() < density else None for _ in range(GRID * GRID)]


def _unique_shapes(scene: list[Obj]) -> list[int]:
    """Cells whose (colour, shape) appears exactly once, so 'the red circle' names one cell."""
    shapes = [obj for obj in scene if obj is not None and obj[0] == "shape"]
    return [i for i, obj in enumerate(scene) if obj is not None and obj[0] == "shape" and shapes.count(obj) == 1]


def _matches(obj: Obj, colour: str | None, shape: str | None) -> bool:
    if obj is None or obj[0] != "shape":
        return False
    return (colour is None or obj[1] == colour) and (shape is None or obj[2] == shape)


def _phrase(colour: str | None, shape: str | None) -> str:
    return f"{colour or ''} {shape or 'thing'}".strip()


def _condition(rng: np.random.Generator) -> tuple[str | None, str | None]:
    kind = rng.integers(3)
    colour = str(rng.choice(list(COLOURS))) if kind != 1 else None
    shape = str(rng.choice(SHAPES)) if kind != 0 else None
    return colour, shape


def _describe(obj: Obj) -> str:
    if obj is None:
        return "nothing"
    if obj[0] == "digit":
        return f"digit {obj[1]}"
    return f"{obj[1]} {obj[2]}"


def _task_count(rng, digits, thin) -> Item:
    scene = _shape_scene(rng, 0.2, 0.6, thin)
    colour, shape = _condition(rng)
    n = sum(_matches(obj, colour, shape) for obj in scene)
    return Item("count", tuple(scene), f"how many {_phrase(colour, shape)} are there ?", str(n))


def _task_compare(rng, digits, thin) -> Item:
    while True:
        scene = _shape_scene(rng, thin=thin)
        a, b = _condition(rng), _condition(rng)
        na = sum(_matches(obj, *a) for obj in scene)
        nb = sum(_matches(obj, *b) for obj in scene)
        if a != b and na != nb:
            break
    if rng.random() < 0.5:  # balance yes / no
        a, b, na, nb = b, a, nb, na
    question = f"are there more {_phrase(*a)} than {_phrase(*b)} ?"
    return Item("compare", tuple(scene), question, "yes" if na > nb else "no")


def _step(cell: int, direction: str) -> int | None:
    row, col = divmod(cell, GRID)
    dr, dc = DIRECTIONS[direction]
    row, col = row + dr, col + dc
    return row * GRID + col if 0 <= row < GRID and 0 <= col < GRID else None


def _hops(rng: np.random.Generator, anchor: int) -> tuple[list[str], int | None]:
    """One or two random directions from `anchor`, and the cell they reach (None: off the grid)."""
    hops = [str(rng.choice(list(DIRECTIONS))) for _ in range(int(rng.integers(1, 3)))]
    cell: int | None = anchor
    for direction in hops:
        cell = _step(cell, direction)
        if cell is None:
            break
    return hops, cell


def _hop_phrase(hops: list[str], anchor: str) -> str:
    """'left of the red cross', or 'below the cell left of the red cross' for two hops."""
    where = f"{hops[0]} {anchor}"
    return f"{hops[1]} the cell {where}" if len(hops) == 2 else where


def _hop_question(rng: np.random.Generator, thin: float) -> tuple[list[Obj], str, int]:
    """A scene, a phrase naming a cell by one or two hops from a unique shape, and that cell."""
    while True:
        scene = _shape_scene(rng, 0.45, 0.85, thin)
        anchors = _unique_shapes(scene)
        if not anchors:
            continue
        anchor = int(rng.choice(anchors))
        hops, cell = _hops(rng, anchor)
        if cell is not None:
            break
    _, colour, shape = scene[anchor]
    return scene, _hop_phrase(hops, f"the {colour} {shape}"), cell


def _task_relation(rng, digits, thin) -> Item:
    scene, where, cell = _hop_question(rng, thin)
    return Item("relation", tuple(scene), f"what is {where} ?", _describe(scene[cell]))


def _scene_with_anchor(rng: np.random.Generator, low: float, high: float, thin: float) -> tuple[list[Obj], int]:
    """A shape scene and one cell whose (colour, shape) is unique in it."""
    while True:
        scene = _shape_scene(rng, low, high, thin)
        anchors = _unique_shapes(scene)
        if anchors:
            return scene, int(rng.choice(anchors))


def _line_cells(line: str, index: int) -> list[int]:
    """The cells of row `index` or column `index` (0-based)."""
    return [index * GRID + c for c in range(GRID)] if line == "row" else [r * GRID + index for r in range(GRID)]


def _line_index(line: str, cell: int) -> int:
    """Which row or column (0-based) `cell` lies in."""
    return divmod(cell, GRID)[0 if line == "row" else 1]


def _line_question(rng: np.random.Generator, scene: list[Obj], cell: int) -> tuple[str, str]:
    """'row' or 'column', and how many other cells of that line through `cell` hold something."""
    line = str(rng.choice(["row", "column"]))
    cells = _line_cells(line, _line_index(line, cell))
    return line, str(sum(scene[c] is not None for c in cells if c != cell))


def _line_count_question(rng: np.random.Generator, thin: float) -> tuple[list[Obj], str, str, int, str]:
    """A scene, line_count's question about a unique shape, its line, that line's index, the count."""
    scene, anchor = _scene_with_anchor(rng, 0.35, 0.8, thin)
    line, n = _line_question(rng, scene, anchor)
    _, colour, shape = scene[anchor]
    question = f"how many things share a {line} with the {colour} {shape} ?"
    return scene, question, line, _line_index(line, anchor), n


def _task_line_count(rng, digits, thin) -> Item:
    scene, question, _, _, n = _line_count_question(rng, thin)
    return Item("line_count", tuple(scene), question, n)


def _digit_scene(rng, digits: np.ndarray, n_digits: int, thin: float) -> tuple[list[Obj], list[int]]:
    _, _, labels, _ = _assets()
    scene = _shape_scene(rng, 0.0, 0.4, thin)
    cells = rng.choice(GRID * GRID, size=n_digits, replace=False)
    values = []
    for cell in cells:
        image_index = int(rng.choice(digits))
        scene[int(cell)] = ("digit", int(labels[image_index]), image_index)
        values.append(int(labels[image_index]))
    return scene, values


def _task_digit_sum(rng, digits, thin) -> Item:
    scene, values = _digit_scene(rng, digits, 2, thin)
    return Item("digit_sum", tuple(scene), "what is the sum of the two digits ?", str(sum(values)))


def _task_digit_max(rng, digits, thin) -> Item:
    scene, values = _digit_scene(rng, digits, 3, thin)
    return Item("digit_max", tuple(scene), "what is the largest of the three digits ?", str(max(values)))


def _where(cell: int) -> str:
    row, col = divmod(cell, GRID)
    return f"row {row + 1} column {col + 1}"


def _task_locate(rng, digits, thin) -> Item:
    scene, anchor = _scene_with_anchor(rng, 0.3, 0.85, thin)
    _, colour, shape = scene[anchor]
    return Item("locate", tuple(scene), f"where is the {colour} {shape} ?", _where(anchor))


def _task_lookup(rng, digits, thin) -> Item:
    scene = _shape_scene(rng, 0.3, 0.85, thin)
    cell = int(rng.integers(GRID * GRID))
    return Item("lookup", tuple(scene), f"what is at {_where(cell)} ?", _describe(scene[cell]))


def _task_neighbour(rng, digits, thin) -> Item:
    """Relation's question asking for the cell's position instead of its content."""
    scene, where, cell = _hop_question(rng, thin)
    return Item("neighbour", tuple(scene), f"where is {where} ?", _where(cell))


def _task_line_at(rng, digits, thin) -> Item:
    """line_count with its cell named by position instead of content."""
    scene = _shape_scene(rng, 0.35, 0.8, thin)
    cell = int(rng.integers(GRID * GRID))
    line, n = _line_question(rng, scene, cell)
    return Item("line_at", tuple(scene), f"how many things share a {line} with {_where(cell)} ?", n)


def _task_relation_at(rng, digits, thin) -> Item:
    """relation with its anchor named by position: the hops and the read, without the find."""
    scene = _shape_scene(rng, 0.45, 0.85, thin)
    while True:
        anchor = int(rng.integers(GRID * GRID))
        hops, cell = _hops(rng, anchor)
        if cell is not None:
            break
    return Item("relation_at", tuple(scene), f"what is {_hop_phrase(hops, _where(anchor))} ?", _describe(scene[cell]))


def _task_total(rng, digits, thin) -> Item:
    """Counting without selecting: every object in the scene."""
    scene = _shape_scene(rng, 0.2, 0.6, thin)
    return Item("total", tuple(scene), "how many things are there ?", str(sum(obj is not None for obj in scene)))


def _task_line_total(rng, digits, thin) -> Item:
    """Counting one line named by number: line_at with no cell to leave out."""
    scene = _shape_scene(rng, 0.35, 0.8, thin)
    line, index = str(rng.choice(["row", "column"])), int(rng.integers(GRID))
    n = sum(scene[c] is not None for c in _line_cells(line, index))
    return Item("line_total", tuple(scene), f"how many things are in {line} {index + 1} ?", str(n))


def _task_relation_cot(rng, digits, thin) -> Item:
    """relation, answered with the cell's position first: neighbour's answer, then relation's."""
    scene, where, cell = _hop_question(rng, thin)
    return Item("relation_cot", tuple(scene), f"what is {where} ?", f"{_where(cell)} {_describe(scene[cell])}")


def _task_line_cot(rng, digits, thin) -> Item:
    """line_count, answered with the line's name first: 'row 2' then the count."""
    scene, question, line, index, n = _line_count_question(rng, thin)
    return Item("line_cot", tuple(scene), question, f"{line} {index + 1} {n}")


def _task_line_total_cot(rng, digits, thin) -> Item:
    """line_count, answered with the line, its count (line_total's answer), then that count less the
    named object: leaving one cell out becomes a step of its own."""
    scene, question, line, index, n = _line_count_question(rng, thin)
    return Item("line_total_cot", tuple(scene), question, f"{line} {index + 1} {int(n) + 1} {n}")


def _task_exists(rng, digits, thin) -> Item:
    scene = _shape_scene(rng, 0.2, 0.6, thin)
    want = rng.random() < 0.5  # balance yes / no
    for _ in range(100):
        colour, shape = _condition(rng)
        present = any(_matches(obj, colour, shape) for obj in scene)
        if present == want:
            break
    return Item("exists", tuple(scene), f"is there a {_phrase(colour, shape)} ?", "yes" if present else "no")


_MAKERS = {
    "count": _task_count,
    "compare": _task_compare,
    "relation": _task_relation,
    "line_count": _task_line_count,
    "digit_sum": _task_digit_sum,
    "digit_max": _task_digit_max,
    "locate": _task_locate,
    "lookup": _task_lookup,
    "exists": _task_exists,
    "neighbour": _task_neighbour,
    "line_at": _task_line_at,
    "total": _task_total,
    "relation_at": _task_relation_at,
    "line_total": _task_line_total,
    "relation_cot": _task_relation_cot,
    "line_cot": _task_line_cot,
    "line_total_cot": _task_line_total_cot,
}
assert tuple(_MAKERS) == TASKS + PRIMER_TASKS


def make_item(task: str, split: str, index: int, seed: int = 0, thin: float = 1.0) -> Item:
    """The index-th candidate item of a task in a split; a pure function of its arguments.

    ``thin`` < 1 scales every scene's shape density down (training only): a curriculum can start
    on scenes with one or two objects, where finding the object a question names is easy.
    """
    if task not in _MAKERS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(_MAKERS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if task in PRIMER_TASKS and split != "train":
        raise ValueError(f"{task!r} is a training-only primer task; held-out splits hold {', '.join(TASKS)}")
    if not 0 < thin <= 1 or (thin != 1 and split != "train"):
        raise ValueError(f"thin must be in (0, 1], and 1 outside the training split; got {thin} for {split!r}")
    rng = np.random.default_rng([seed, SPLITS.index(split), tuple(_MAKERS).index(task), index])
    return _MAKERS[task](rng, _assets()[3][split], thin)


# ---------------------------------------------------------------------------------------------
# Splits


@functools.cache
def _reserved_keys(seed: int) -> tuple[frozenset, frozenset]:
    """Keys of the reserved test and calibration items, used to keep the splits disjoint."""
    test = frozenset(make_item(t, "test", i, seed).key for t in TASKS for i in range(TEST_RESERVE))
    calib = frozenset(
        item.key
        for t in TASKS
        for item in (make_item(t, "calib", i, seed) for i in range(CALIB_RESERVE))
        if item.key not in test
    )
    return test, calib


def _split_items(task: str, split: str, n: int, seed: int, start: int = 0, thin: float = 1.0) -> Iterator[Item]:
    """Distinct items of one task in one split, skipping keys owned by an earlier split."""
    test, calib = _reserved_keys(seed) if split != "test" else (frozenset(), frozenset())
    blocked = test if split == "calib" else test | calib
    seen: set = set()
    index = start
    while n is None or len(seen) < n:
        item = make_item(task, split, index, seed, thin)
        index += 1
        if item.key in blocked or item.key in seen:
            continue
        seen.add(item.key)
        yield item


def to_sample(item: Item) -> dict:
    """An item in FineVision's schema: images, texts (user/assistant turns), source."""
    return {"images": [render(item.scene)], "texts": [{"user": item.question, "assistant": item.answer}], "source": item.task}


def load_split(split: str, n_per_task: int, tasks: tuple[str, ...] = TASKS, seed: int = 0) -> list[dict]:
    """A finite split: n_per_task samples of each task, tasks interleaved.

    Args:
        split: "calib" or "test" (the training split is a stream: use ``train_stream``).
        n_per_task: samples per task; at most TEST_RESERVE for test and CALIB_RESERVE for calib.
        tasks: which task types to include.
        seed: suite seed; the shipped model was trained and evaluated with seed 0.
    """
    limits = {"test": TEST_RESERVE, "calib": CALIB_RESERVE}
    if split not in limits:
        raise ValueError(f"load_split serves 'calib' and 'test', got {split!r}; use train_stream for training data")
    if not 0 < n_per_task <= limits[split]:
        raise ValueError(f"n_per_task for {split} must be in 1..{limits[split]}, got {n_per_task}")
    per_task = [list(_split_items(t, split, n_per_task, seed)) for t in tasks]
    return [to_sample(items[i]) for i in range(n_per_task) for items in per_task]


def train_items(seed: int = 0, tasks: tuple[str, ...] = TASKS, thin: float = 1.0) -> Iterator[Item]:
    """The endless training stream of items, tasks in turn, disjoint from test and calib.

    ``thin`` < 1: sparser scenes (see ``make_item``), for a curriculum.
    """
    streams = [_split_items(t, "train", None, seed, thin=thin) for t in tasks]
    while True:
        for stream in streams:
            yield next(stream)


def train_stream(seed: int = 0, tasks: tuple[str, ...] = TASKS) -> Iterator[dict]:
    """The endless training stream in FineVision's schema."""
    return (to_sample(item) for item in train_items(seed, tasks))
