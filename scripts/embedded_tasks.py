"""Training-only questions for the embedded model, and the sparse scenes of its curricula.

Importing this module registers eleven question types into the suite's training split
(``vqa.register_training_task``); calibration and test never hold them. Each is a primitive that
the suite's tasks chain: find an object by content (locate), read a cell by position (lookup),
test a conjunction (exists), name the cell a relation question points to (neighbour: relation
without reading the cell), count a line through a cell named by position (line_at: line_count
without finding the object), count everything (total: count without selecting), read a cell a hop
or two from one named by position (relation_at: relation without finding its anchor), count the
objects of a row or column named by number (line_total: line_at without leaving its cell out).

Three more ask a suite question but answer it with its intermediate steps spelled out first
(relation_cot: "row 2 column 3 red cross", line_cot: "row 2 1", line_total_cot: "row 2 2 1" with
the line's own count before the answer), for a trainer that drops those words a few at a time
(COT_STEPS, ``train_embedded.py --cot-drop``) until the answer is the suite's own, so the decoder
learns to do the steps silently.

The ids below are part of every item's seed: they are the ones these tasks had when the shipped
model was trained, so its training pools are rebuilt byte for byte. Never renumber them.
"""

from __future__ import annotations

import numpy as np

from interlace.data import vqa
from interlace.data.vqa import Item, ShapeSampler

GRID = vqa.GRID


def _where(cell: int) -> str:
    row, col = divmod(cell, GRID)
    return f"row {row + 1} column {col + 1}"


def _task_locate(rng, digits, shapes: ShapeSampler) -> Item:
    scene, anchor = vqa.scene_with_anchor(rng, 0.3, 0.85, shapes)
    _, colour, shape = scene[anchor]
    return Item("locate", tuple(scene), f"where is the {colour} {shape} ?", _where(anchor))


def _task_lookup(rng, digits, shapes: ShapeSampler) -> Item:
    scene = shapes(rng, 0.3, 0.85)
    cell = int(rng.integers(GRID * GRID))
    return Item("lookup", tuple(scene), f"what is at {_where(cell)} ?", vqa.describe(scene[cell]))


def _task_exists(rng, digits, shapes: ShapeSampler) -> Item:
    scene = shapes(rng, 0.2, 0.6)
    want = rng.random() < 0.5  # balance yes / no
    for _ in range(100):
        colour, shape = vqa.condition(rng)
        present = any(vqa.matches(obj, colour, shape) for obj in scene)
        if present == want:
            break
    return Item("exists", tuple(scene), f"is there a {vqa.phrase(colour, shape)} ?", "yes" if present else "no")


def _task_neighbour(rng, digits, shapes: ShapeSampler) -> Item:
    """Relation's question asking for the cell's position instead of its content."""
    scene, where, cell = vqa.hop_question(rng, shapes)
    return Item("neighbour", tuple(scene), f"where is {where} ?", _where(cell))


def _task_line_at(rng, digits, shapes: ShapeSampler) -> Item:
    """line_count with its cell named by position instead of content."""
    scene = shapes(rng, 0.35, 0.8)
    cell = int(rng.integers(GRID * GRID))
    line, n = vqa.line_question(rng, scene, cell)
    return Item("line_at", tuple(scene), f"how many things share a {line} with {_where(cell)} ?", n)


def _task_total(rng, digits, shapes: ShapeSampler) -> Item:
    """Counting without selecting: every object in the scene."""
    scene = shapes(rng, 0.2, 0.6)
    return Item("total", tuple(scene), "how many things are there ?", str(sum(obj is not None for obj in scene)))


def _task_relation_at(rng, digits, shapes: ShapeSampler) -> Item:
    """relation with its anchor named by position: the hops and the read, without the find."""
    scene = shapes(rng, 0.45, 0.85)
    while True:
        anchor = int(rng.integers(GRID * GRID))
        hops, cell = vqa.random_hops(rng, anchor)
        if cell is not None:
            break
    return Item("relation_at", tuple(scene), f"what is {vqa.hop_phrase(hops, _where(anchor))} ?", vqa.describe(scene[cell]))


def _task_line_total(rng, digits, shapes: ShapeSampler) -> Item:
    """Counting one line named by number: line_at with no cell to leave out."""
    scene = shapes(rng, 0.35, 0.8)
    line, index = str(rng.choice(["row", "column"])), int(rng.integers(GRID))
    n = sum(scene[c] is not None for c in vqa.line_cells(line, index))
    return Item("line_total", tuple(scene), f"how many things are in {line} {index + 1} ?", str(n))


def _task_relation_cot(rng, digits, shapes: ShapeSampler) -> Item:
    """relation, answered with the cell's position first: neighbour's answer, then relation's."""
    scene, where, cell = vqa.hop_question(rng, shapes)
    return Item("relation_cot", tuple(scene), f"what is {where} ?", f"{_where(cell)} {vqa.describe(scene[cell])}")


def _task_line_cot(rng, digits, shapes: ShapeSampler) -> Item:
    """line_count, answered with the line's name first: 'row 2' then the count."""
    scene, question, line, index, n = vqa.line_count_question(rng, shapes)
    return Item("line_cot", tuple(scene), question, f"{line} {index + 1} {n}")


def _task_line_total_cot(rng, digits, shapes: ShapeSampler) -> Item:
    """line_count, answered with the line, its count (line_total's answer), then that count less the
    named object: leaving one cell out becomes a step of its own."""
    scene, question, line, index, n = vqa.line_count_question(rng, shapes)
    return Item("line_total_cot", tuple(scene), question, f"{line} {index + 1} {int(n) + 1} {n}")


# name -> (fixed task id, maker); ids 0..5 are the suite's (vqa.TASKS).
TRAINING_TASKS = {
    "locate": (6, _task_locate),
    "lookup": (7, _task_lookup),
    "exists": (8, _task_exists),
    "neighbour": (9, _task_neighbour),
    "line_at": (10, _task_line_at),
    "total": (11, _task_total),
    "relation_at": (12, _task_relation_at),
    "line_total": (13, _task_line_total),
    "relation_cot": (14, _task_relation_cot),
    "line_cot": (15, _task_line_cot),
    "line_total_cot": (16, _task_line_total_cot),
}
PRIMER_TASKS = tuple(TRAINING_TASKS)
COT_STEPS = {"relation_cot": 4, "line_cot": 2, "line_total_cot": 3}  # words before the suite's answer

for _name, (_task_id, _make) in TRAINING_TASKS.items():
    vqa.register_training_task(_name, _task_id, _make)


def thinned(thin: float) -> ShapeSampler:
    """Scenes with every shape density scaled by ``thin`` (training only), for a curriculum: it can
    start on scenes with one or two objects, where finding the object a question names is easy.

    Raises:
        ValueError: unless 0 < thin <= 1.
    """
    if not 0 < thin <= 1:
        raise ValueError(f"thin must be in (0, 1], got {thin}")
    if thin == 1:
        return vqa.shape_scene

    def sample(rng: np.random.Generator, low: float, high: float) -> list[vqa.Obj]:
        return vqa.shape_scene(rng, low * thin, high * thin)

    return sample
