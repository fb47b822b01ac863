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

The embedded model's trainer also asks one-step questions that the suite does not hold; they live
beside it (``scripts/embedded_tasks.py``) and join the training split through
``register_training_task`` with ids of their own, so the suite's items never change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
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
# Scenes and questions. The helpers without a leading underscore are also the building blocks of
# the trainer's training-only question types (scripts/embedded_tasks.py).


def _random_shape(rng: np.random.Generator) -> Obj:
    return ("shape", str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))


def shape_scene(rng: np.random.Generator, low: float, high: float) -> list[Obj]:
    """The suite's scenes: each cell holds a random shape with one density drawn from [low, high]."""
    density = rng.uniform(low, high)
    return [_random_shape(rng) if rng.random() < density else None for _ in range(GRID * GRID)]


# How a question type draws its scene's shapes: shape_scene, or (training split only) a sampler of
# the trainer's own, such as a curriculum's sparser scenes. Every question type takes one, so a
# trainer reshapes scenes without a copy of the questions.
ShapeSampler = Callable[[np.random.Generator, float, float], list[Obj]]


def _unique_shapes(scene: list[Obj]) -> list[int]:
    """Cells whose (colour, shape) appears exactly once, so 'the red circle' names one cell."""
    objects = [obj for obj in scene if obj is not None and obj[0] == "shape"]
    return [i for i, obj in enumerate(scene) if obj is not None and obj[0] == "shape" and objects.count(obj) == 1]


def matches(obj: Obj, colour: str | None, shape: str | None) -> bool:
    """Whether obj is a shape of this colour and kind (None: any)."""
    if obj is None or obj[0] != "shape":
        return False
    return (colour is None or obj[1] == colour) and (shape is None or obj[2] == shape)


def phrase(colour: str | None, shape: str | None) -> str:
    """How a question names a condition: 'red circle', 'red thing', 'circle'."""
    return f"{colour or ''} {shape or 'thing'}".strip()


def condition(rng: np.random.Generator) -> tuple[str | None, str | None]:
    """A random (colour, shape) condition: colour only, shape only, or both."""
    kind = rng.integers(3)
    colour = str(rng.choice(list(COLOURS))) if kind != 1 else None
    shape = str(rng.choice(SHAPES)) if kind != 0 else None
    return colour, shape


def describe(obj: Obj) -> str:
    """A cell's content as an answer: 'red circle', 'digit 7' or 'nothing'."""
    if obj is None:
        return "nothing"
    if obj[0] == "digit":
        return f"digit {obj[1]}"
    return f"{obj[1]} {obj[2]}"


def _task_count(rng, digits, shapes: ShapeSampler) -> Item:
    scene = shapes(rng, 0.2, 0.6)
    colour, shape = condition(rng)
    n = sum(matches(obj, colour, shape) for obj in scene)
    return Item("count", tuple(scene), f"how many {phrase(colour, shape)} are there ?", str(n))


def _task_compare(rng, digits, shapes: ShapeSampler) -> Item:
    while True:
        scene = shapes(rng, 0.3, 0.8)
        a, b = condition(rng), condition(rng)
        na = sum(matches(obj, *a) for obj in scene)
        nb = sum(matches(obj, *b) for obj in scene)
        if a != b and na != nb:
            break
    if rng.random() < 0.5:  # balance yes / no
        a, b, na, nb = b, a, nb, na
    question = f"are there more {phrase(*a)} than {phrase(*b)} ?"
    return Item("compare", tuple(scene), question, "yes" if na > nb else "no")


def _step(cell: int, direction: str) -> int | None:
    row, col = divmod(cell, GRID)
    dr, dc = DIRECTIONS[direction]
    row, col = row + dr, col + dc
    return row * GRID + col if 0 <= row < GRID and 0 <= col < GRID else None


def random_hops(rng: np.random.Generator, anchor: int) -> tuple[list[str], int | None]:
    """One or two random directions from `anchor`, and the cell they reach (None: off the grid)."""
    hops = [str(rng.choice(list(DIRECTIONS))) for _ in range(int(rng.integers(1, 3)))]
    cell: int | None = anchor
    for direction in hops:
        cell = _step(cell, direction)
        if cell is None:
            break
    return hops, cell


def hop_phrase(hops: list[str], anchor: str) -> str:
    """'left of the red cross', or 'below the cell left of the red cross' for two hops."""
    where = f"{hops[0]} {anchor}"
    return f"{hops[1]} the cell {where}" if len(hops) == 2 else where


def hop_question(rng: np.random.Generator, shapes: ShapeSampler) -> tuple[list[Obj], str, int]:
    """A scene, a phrase naming a cell by one or two hops from a unique shape, and that cell."""
    while True:
        scene = shapes(rng, 0.45, 0.85)
        anchors = _unique_shapes(scene)
        if not anchors:
            continue
        anchor = int(rng.choice(anchors))
        hops, cell = random_hops(rng, anchor)
        if cell is not None:
            break
    _, colour, shape = scene[anchor]
    return scene, hop_phrase(hops, f"the {colour} {shape}"), cell


def _task_relation(rng, digits, shapes: ShapeSampler) -> Item:
    scene, where, cell = hop_question(rng, shapes)
    return Item("relation", tuple(scene), f"what is {where} ?", describe(scene[cell]))


def scene_with_anchor(rng: np.random.Generator, low: float, high: float, shapes: ShapeSampler) -> tuple[list[Obj], int]:
    """A shape scene and one cell whose (colour, shape) is unique in it."""
    while True:
        scene = shapes(rng, low, high)
        anchors = _unique_shapes(scene)
        if anchors:
            return scene, int(rng.choice(anchors))


def line_cells(line: str, index: int) -> list[int]:
    """The cells of row `index` or column `index` (0-based)."""
    return [index * GRID + c for c in range(GRID)] if line == "row" else [r * GRID + index for r in range(GRID)]


def _line_index(line: str, cell: int) -> int:
    """Which row or column (0-based) `cell` lies in."""
    return divmod(cell, GRID)[0 if line == "row" else 1]


def line_question(rng: np.random.Generator, scene: list[Obj], cell: int) -> tuple[str, str]:
    """'row' or 'column', and how many other cells of that line through `cell` hold something."""
    line = str(rng.choice(["row", "column"]))
    cells = line_cells(line, _line_index(line, cell))
    return line, str(sum(scene[c] is not None for c in cells if c != cell))


def line_count_question(rng: np.random.Generator, shapes: ShapeSampler) -> tuple[list[Obj], str, str, int, str]:
    """A scene, line_count's question about a unique shape, its line, that line's index, the count."""
    scene, anchor = scene_with_anchor(rng, 0.35, 0.8, shapes)
    line, n = line_question(rng, scene, anchor)
    _, colour, shape = scene[anchor]
    question = f"how many things share a {line} with the {colour} {shape} ?"
    return scene, question, line, _line_index(line, anchor), n


def _task_line_count(rng, digits, shapes: ShapeSampler) -> Item:
    scene, question, _, _, n = line_count_question(rng, shapes)
    return Item("line_count", tuple(scene), question, n)


def _digit_scene(rng, digits: np.ndarray, n_digits: int, shapes: ShapeSampler) -> tuple[list[Obj], list[int]]:
    _, _, labels, _ = _assets()
    scene = shapes(rng, 0.0, 0.4)
    cells = rng.choice(GRID * GRID, size=n_digits, replace=False)
    values = []
    for cell in cells:
        image_index = int(rng.choice(digits))
        scene[int(cell)] = ("digit", int(labels[image_index]), image_index)
        values.append(int(labels[image_index]))
    return scene, values


def _task_digit_sum(rng, digits, shapes: ShapeSampler) -> Item:
    scene, values = _digit_scene(rng, digits, 2, shapes)
    return Item("digit_sum", tuple(scene), "what is the sum of the two digits ?", str(sum(values)))


def _task_digit_max(rng, digits, shapes: ShapeSampler) -> Item:
    scene, values = _digit_scene(rng, digits, 3, shapes)
    return Item("digit_max", tuple(scene), "what is the largest of the three digits ?", str(max(values)))


# A question type makes one item from its own random generator, the split's digit images and a
# shape sampler. Its id is part of every item's seed, so it is fixed for good: the suite's tasks
# are 0..5 in the order below, and a registered training-only task brings its own id.
Maker = Callable[[np.random.Generator, np.ndarray, ShapeSampler], Item]

_MAKERS: dict[str, Maker] = {
    "count": _task_count,
    "compare": _task_compare,
    "relation": _task_relation,
    "line_count": _task_line_count,
    "digit_sum": _task_digit_sum,
    "digit_max": _task_digit_max,
}
assert tuple(_MAKERS) == TASKS
# name -> (id, maker) of the training-only question types, filled by register_training_task.
_TRAINING_TASKS: dict[str, tuple[int, Maker]] = {}


def register_training_task(name: str, task_id: int, make: Maker) -> None:
    """Add a question type to the training split only (calib and test hold the suite's six).

    The id seeds the task's items, so a registrant passes the same id in every run: the same name
    and id again replace the maker (a re-imported module), anything else that clashes is refused.

    Raises:
        ValueError: for a suite task's name, an id below len(TASKS) (the suite's), a registered
            name with another id, or an id another task has.
    """
    owner = next((other for other, (other_id, _) in _TRAINING_TASKS.items() if other_id == task_id), name)
    if name in _MAKERS:
        raise ValueError(f"{name!r} is a suite task; a training-only task needs a name of its own")
    if task_id < len(TASKS):
        raise ValueError(f"task ids 0..{len(TASKS) - 1} are the suite's; give {name!r} an id >= {len(TASKS)}")
    if _TRAINING_TASKS.get(name, (task_id,))[0] != task_id:
        raise ValueError(f"{name!r} is registered with id {_TRAINING_TASKS[name][0]}, not {task_id}")
    if owner != name:
        raise ValueError(f"task id {task_id} belongs to {owner!r}; give {name!r} another")
    _TRAINING_TASKS[name] = (task_id, make)


def make_item(task: str, split: str, index: int, seed: int = 0, shapes: ShapeSampler = shape_scene) -> Item:
    """The index-th candidate item of a task in a split; a pure function of its arguments.

    Args:
        task: a suite task, or (training split only) a registered training-only one.
        split: "train", "calib" or "test".
        index: which candidate; ``_split_items`` skips those that repeat or that another split owns.
        seed: suite seed.
        shapes: how scenes draw their shapes; anything but ``shape_scene`` (e.g. a curriculum's
            sparser scenes) only on the training split.
    """
    if task not in _MAKERS and task not in _TRAINING_TASKS:
        known = ", ".join([*_MAKERS, *_TRAINING_TASKS])
        raise ValueError(f"unknown task {task!r}; choose from {known} (training-only tasks are registered by scripts/embedded_tasks.py)")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if task in _TRAINING_TASKS and split != "train":
        raise ValueError(f"{task!r} is a training-only task; held-out splits hold {', '.join(TASKS)}")
    if shapes is not shape_scene and split != "train":
        raise ValueError(f"a shape sampler other than vqa.shape_scene is for the training split only, not {split!r}")
    task_id, make = (TASKS.index(task), _MAKERS[task]) if task in _MAKERS else _TRAINING_TASKS[task]
    rng = np.random.default_rng([seed, SPLITS.index(split), task_id, index])
    return make(rng, _assets()[3][split], shapes)


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


def _split_items(task: str, split: str, n: int | None, seed: int, start: int = 0, shapes: ShapeSampler = shape_scene) -> Iterator[Item]:
    """Distinct items of one task in one split, skipping keys owned by an earlier split."""
    test, calib = _reserved_keys(seed) if split != "test" else (frozenset(), frozenset())
    blocked = test if split == "calib" else test | calib
    seen: set = set()
    index = start
    while n is None or len(seen) < n:
        item = make_item(task, split, index, seed, shapes)
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


def train_items(seed: int = 0, tasks: tuple[str, ...] = TASKS, shapes: ShapeSampler = shape_scene) -> Iterator[Item]:
    """The endless training stream of items, tasks in turn, disjoint from test and calib.

    ``tasks`` may name registered training-only tasks; ``shapes``: see ``make_item``.
    """
    streams = [_split_items(t, "train", None, seed, shapes=shapes) for t in tasks]
    while True:
        for stream in streams:
            yield next(stream)


def train_stream(seed: int = 0, tasks: tuple[str, ...] = TASKS) -> Iterator[dict]:
    """The endless training stream in FineVision's schema."""
    return (to_sample(item) for item in train_items(seed, tasks))
