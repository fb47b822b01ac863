"""The trainer's training-only questions (scripts/embedded_tasks.py): answers right, fixed ids,
kept out of calib and test, and the curriculum's thinned scenes."""

import sys
from pathlib import Path

import numpy as np
import pytest

from interlace.data import vqa

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
import embedded_tasks  # noqa: E402  (registers the training-only tasks)


def shape(colour, kind):
    return ("shape", colour, kind)


def test_primer_answers_agree_with_an_independent_reading_of_the_scene():
    def line_through_named_object(item, line, index):
        """Check the answer's line runs through the object the question names; count that line."""
        words = item.question.split()
        cell = item.scene.index(shape(words[-3], words[-2]))
        assert line == words[5] and int(index) - 1 == (cell // vqa.GRID if line == "row" else cell % vqa.GRID)
        cells = [(int(index) - 1, c) if line == "row" else (c, int(index) - 1) for c in range(vqa.GRID)]
        return sum(item.scene[r * vqa.GRID + c] is not None for r, c in cells)

    for i in range(100):
        item = vqa.make_item("locate", "train", i)
        _, _, _, colour, kind, _ = item.question.split()
        cell = item.scene.index(shape(colour, kind))
        assert item.scene.count(shape(colour, kind)) == 1
        assert item.answer == f"row {cell // vqa.GRID + 1} column {cell % vqa.GRID + 1}"
        item = vqa.make_item("lookup", "train", i)
        row, col = int(item.question.split()[4]), int(item.question.split()[6])
        assert item.answer == vqa.describe(item.scene[(row - 1) * vqa.GRID + col - 1])
        item = vqa.make_item("exists", "train", i)
        words = item.question[len("is there a ") : -2].split()
        colour = words[0] if words[0] in vqa.COLOURS else None
        kind = words[-1] if words[-1] in vqa.SHAPES else None
        assert item.answer == ("yes" if any(vqa.matches(obj, colour, kind) for obj in item.scene) else "no")
        item = vqa.make_item("neighbour", "train", i)  # "where is [D2 the cell] D1 the C S ?"
        words = item.question[len("where is ") : -2].split()
        cell = item.scene.index(shape(*words[-2:]))
        moves = {"left": (0, -1), "right": (0, 1), "above": (-1, 0), "below": (1, 0)}
        row, col = divmod(cell, vqa.GRID)
        for word in reversed([w for w in words if w in moves]):  # the innermost hop first
            row, col = row + moves[word][0], col + moves[word][1]
        assert 0 <= row < vqa.GRID and 0 <= col < vqa.GRID
        assert item.answer == f"row {row + 1} column {col + 1}"
        item = vqa.make_item("line_at", "train", i)  # "how many things share a L with row R column C ?"
        words = item.question.split()
        line, row, col = words[5], int(words[8]) - 1, int(words[10]) - 1
        others = [(r, c) for r in range(vqa.GRID) for c in range(vqa.GRID) if (r, c) != (row, col) and (r == row if line == "row" else c == col)]
        assert item.answer == str(sum(item.scene[r * vqa.GRID + c] is not None for r, c in others))
        item = vqa.make_item("relation_at", "train", i)  # "what is [D2 the cell] D1 row R column C ?"
        words = item.question[len("what is ") : -2].split()
        row, col = int(words[-3]) - 1, int(words[-1]) - 1
        for word in reversed([w for w in words if w in moves]):
            row, col = row + moves[word][0], col + moves[word][1]
        assert item.answer == vqa.describe(item.scene[row * vqa.GRID + col])
        item = vqa.make_item("line_total", "train", i)  # "how many things are in L N ?"
        line, index = item.question.split()[5], int(item.question.split()[6]) - 1
        cells = [(index, c) if line == "row" else (c, index) for c in range(vqa.GRID)]
        assert item.answer == str(sum(item.scene[r * vqa.GRID + c] is not None for r, c in cells))
        item = vqa.make_item("relation_cot", "train", i)  # relation's question; position, then content
        hops = item.question[len("what is ") : -2].split(" the ")
        cell = item.scene.index(shape(*hops[-1].split()))
        for hop in reversed(hops[:-1]):
            cell = vqa._step(cell, hop.removeprefix("cell "))
        steps = embedded_tasks.COT_STEPS["relation_cot"]
        assert " ".join(item.answer.split()[:steps]) == f"row {cell // vqa.GRID + 1} column {cell % vqa.GRID + 1}"
        assert " ".join(item.answer.split()[steps:]) == vqa.describe(item.scene[cell])
        item = vqa.make_item("line_cot", "train", i)  # line_count's question; the line, then the count
        line, index, n = item.answer.split()
        assert int(n) == line_through_named_object(item, line, index) - 1
        item = vqa.make_item("line_total_cot", "train", i)  # the line, its own count, then line_count's
        line, index, total, n = item.answer.split()
        assert int(total) == line_through_named_object(item, line, index) == int(n) + 1
        item = vqa.make_item("total", "train", i)
        assert item.answer == str(len(item.scene) - item.scene.count(None))
    answers = [vqa.make_item("exists", "train", i).answer for i in range(400)]
    assert 0.4 < answers.count("yes") / len(answers) < 0.6


def test_primers_are_training_only():
    stream = vqa.train_items(tasks=vqa.TASKS + embedded_tasks.PRIMER_TASKS)
    assert {next(stream).task for _ in range(len(vqa.TASKS) + len(embedded_tasks.PRIMER_TASKS))} == set(vqa.TASKS + embedded_tasks.PRIMER_TASKS)
    assert all(s["source"] in vqa.TASKS for s in vqa.load_split("test", 3))
    for split in ("calib", "test"):
        with pytest.raises(ValueError, match="training-only"):
            vqa.make_item("locate", split, 0)


def test_thinned_training_scenes_are_sparser_and_still_answered_right():
    thinned = embedded_tasks.thinned
    for task in vqa.TASKS + embedded_tasks.PRIMER_TASKS:  # digit scenes keep their digits; their shapes thin out
        def shape_count(i, thin, task=task):
            return sum(o is not None and o[0] == "shape" for o in vqa.make_item(task, "train", i, shapes=thinned(thin)).scene)

        shapes = [[shape_count(i, thin) for i in range(200)] for thin in (0.15, 1.0)]
        assert np.mean(shapes[0]) < 0.6 * np.mean(shapes[1]), task
    for i in range(50):  # the answer is still read off the thinned scene
        item = vqa.make_item("locate", "train", i, shapes=thinned(0.15))
        cell = item.scene.index(shape(*item.question.split()[3:5]))
        assert item.answer == f"row {cell // vqa.GRID + 1} column {cell % vqa.GRID + 1}"
    stream = vqa.train_items(shapes=thinned(0.15))
    assert all(sum(o is not None for o in next(stream).scene) <= 8 for _ in range(60))
    for split in ("test", "calib"):
        with pytest.raises(ValueError, match="training split only"):
            vqa.make_item("count", split, 0, shapes=thinned(0.5))
    for thin in (0.0, 1.5):
        with pytest.raises(ValueError, match="thin must be"):
            thinned(thin)
    assert thinned(1.0) is vqa.shape_scene  # the suite's own scenes


def test_registration_keeps_the_ids_fixed():
    # the ids the shipped model's pools were drawn with: the suite is 0..5, the primers follow in order
    assert [task_id for task_id, _ in embedded_tasks.TRAINING_TASKS.values()] == list(range(6, 17))
    for name, (task_id, make) in embedded_tasks.TRAINING_TASKS.items():
        vqa.register_training_task(name, task_id, make)  # a re-import registers the same again
    _, make = embedded_tasks.TRAINING_TASKS["locate"]
    for name, task_id, message in (("locate", 7, "registered with id 6"), ("probe", 6, "belongs to 'locate'")):
        with pytest.raises(ValueError, match=message):
            vqa.register_training_task(name, task_id, make)
