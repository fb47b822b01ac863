"""The embedded visual-QA suite: deterministic, disjoint splits, answers right on built scenes."""

import numpy as np
import pytest

from interlace.data import vqa


def shape(colour, kind):
    return ("shape", colour, kind)


def scene_from(cells: dict[int, tuple]) -> tuple:
    return tuple(cells.get(i) for i in range(vqa.GRID * vqa.GRID))


def test_same_seed_same_samples_and_pixels():
    a, b = vqa.load_split("test", 5), vqa.load_split("test", 5)
    assert [s["texts"] for s in a] == [s["texts"] for s in b]
    assert all(np.array_equal(np.asarray(x["images"][0]), np.asarray(y["images"][0])) for x, y in zip(a, b))
    other = vqa.load_split("test", 5, seed=1)
    assert [s["texts"] for s in a] != [s["texts"] for s in other]


def test_schema_is_finevision_like():
    sample = vqa.load_split("calib", 1)[0]
    assert set(sample) == {"images", "texts", "source"}
    assert sample["images"][0].size == (vqa.IMAGE_SIZE, vqa.IMAGE_SIZE)
    assert set(sample["texts"][0]) == {"user", "assistant"}
    assert sample["source"] in vqa.TASKS


def test_splits_never_overlap():
    test = {vqa.make_item(t, "test", i).key for t in vqa.TASKS for i in range(vqa.TEST_RESERVE)}
    calib = set()
    for task in vqa.TASKS:
        calib |= {item.key for item in vqa._split_items(task, "calib", 200, seed=0)}
    stream = vqa.train_items()
    train = {next(stream).key for _ in range(3000)}
    assert not test & calib and not test & train and not calib & train
    assert len(vqa.load_split("test", 500)) == 500 * len(vqa.TASKS)


def test_test_digits_come_from_a_held_out_pool():
    *_, pools = vqa._assets()
    assert not set(pools["test"]) & set(pools["train"])
    for i in range(50):
        item = vqa.make_item("digit_sum", "test", i)
        assert all(obj[2] in set(pools["test"]) for obj in item.scene if obj and obj[0] == "digit")


def test_every_task_has_varied_answers():
    for task in vqa.TASKS:
        answers = {vqa.make_item(task, "test", i).answer for i in range(200)}
        assert len(answers) >= 2, task


def test_render_puts_each_object_in_its_own_cell():
    scene = scene_from({0: shape("red", "square"), 5: shape("blue", "circle")})
    pixels = np.asarray(vqa.render(scene))
    c = vqa.CELL
    assert tuple(pixels[c // 2, c // 2]) == vqa.COLOURS["red"]
    assert tuple(pixels[c + c // 2, c + c // 2]) == vqa.COLOURS["blue"]
    assert pixels[2 * c :, :].max() == 0  # rows 2 and 3 are empty


@pytest.mark.parametrize(
    "cells, colour, kind, expected",
    [
        ({0: shape("red", "square"), 1: shape("red", "circle"), 2: shape("blue", "square")}, "red", None, 2),
        ({0: shape("red", "square"), 1: shape("red", "circle"), 2: shape("blue", "square")}, None, "square", 2),
        ({0: shape("red", "square"), 1: shape("red", "circle"), 2: shape("blue", "square")}, "red", "circle", 1),
        ({0: ("digit", 3, 0)}, None, None, 0),  # digits are not things to count
    ],
)
def test_count_condition(cells, colour, kind, expected):
    scene = scene_from(cells)
    assert sum(vqa._matches(obj, colour, kind) for obj in scene) == expected


def test_generated_answers_agree_with_an_independent_reading_of_the_scene():
    for i in range(100):
        item = vqa.make_item("digit_sum", "test", i)
        assert int(item.answer) == sum(obj[1] for obj in item.scene if obj and obj[0] == "digit")
        item = vqa.make_item("digit_max", "test", i)
        assert int(item.answer) == max(obj[1] for obj in item.scene if obj and obj[0] == "digit")
        item = vqa.make_item("line_count", "test", i)
        words = item.question.split()
        line, colour, kind = words[5], words[-3], words[-2]
        anchor = item.scene.index(shape(colour, kind))
        row, col = divmod(anchor, vqa.GRID)
        same = [j for j, obj in enumerate(item.scene) if obj and j != anchor and divmod(j, vqa.GRID)[0 if line == "row" else 1] == (row if line == "row" else col)]
        assert int(item.answer) == len(same)


def test_relation_two_hops_on_a_built_scene():
    # red square at (1, 1); right of it (1, 2) is empty; below that (2, 2) is a green cross.
    scene = scene_from({5: shape("red", "square"), 10: shape("green", "cross")})
    cell = vqa._step(vqa._step(5, "right of"), "below")
    assert cell == 10 and vqa._describe(scene[cell]) == "green cross"
    assert vqa._step(3, "right of") is None  # off the board


def test_relation_answers_name_the_cell_reached():
    for i in range(100):
        item = vqa.make_item("relation", "test", i)
        words = item.question[len("what is ") : -2].split(" the ")
        colour, kind = words[-1].split()
        cell = item.scene.index(shape(colour, kind))
        for hop in reversed(words[:-1]):
            cell = vqa._step(cell, hop.removeprefix("cell "))
        assert vqa._describe(item.scene[cell]) == item.answer


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown task"):
        vqa.make_item("colour", "test", 0)
    with pytest.raises(ValueError, match="n_per_task"):
        vqa.load_split("test", 0)
    with pytest.raises(ValueError, match="train_stream"):
        vqa.load_split("train", 5)


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
        assert item.answer == vqa._describe(item.scene[(row - 1) * vqa.GRID + col - 1])
        item = vqa.make_item("exists", "train", i)
        words = item.question[len("is there a ") : -2].split()
        colour = words[0] if words[0] in vqa.COLOURS else None
        kind = words[-1] if words[-1] in vqa.SHAPES else None
        assert item.answer == ("yes" if any(vqa._matches(obj, colour, kind) for obj in item.scene) else "no")
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
        assert item.answer == vqa._describe(item.scene[row * vqa.GRID + col])
        item = vqa.make_item("line_total", "train", i)  # "how many things are in L N ?"
        line, index = item.question.split()[5], int(item.question.split()[6]) - 1
        cells = [(index, c) if line == "row" else (c, index) for c in range(vqa.GRID)]
        assert item.answer == str(sum(item.scene[r * vqa.GRID + c] is not None for r, c in cells))
        item = vqa.make_item("relation_cot", "train", i)  # relation's question; position, then content
        hops = item.question[len("what is ") : -2].split(" the ")
        cell = item.scene.index(shape(*hops[-1].split()))
        for hop in reversed(hops[:-1]):
            cell = vqa._step(cell, hop.removeprefix("cell "))
        steps = vqa.COT_STEPS["relation_cot"]
        assert " ".join(item.answer.split()[:steps]) == f"row {cell // vqa.GRID + 1} column {cell % vqa.GRID + 1}"
        assert " ".join(item.answer.split()[steps:]) == vqa._describe(item.scene[cell])
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
    stream = vqa.train_items(tasks=vqa.TASKS + vqa.PRIMER_TASKS)
    assert {next(stream).task for _ in range(len(vqa.TASKS) + len(vqa.PRIMER_TASKS))} == set(vqa.TASKS + vqa.PRIMER_TASKS)
    assert all(s["source"] in vqa.TASKS for s in vqa.load_split("test", 3))
    for split in ("calib", "test"):
        with pytest.raises(ValueError, match="training-only"):
            vqa.make_item("locate", split, 0)


def test_held_out_items_do_not_depend_on_the_primers():
    # Adding training-only tasks must leave the held-out split as it was, so scores stay comparable.
    rng = np.random.default_rng([0, vqa.SPLITS.index("test"), vqa.TASKS.index("relation"), 3])
    assert vqa.make_item("relation", "test", 3) == vqa._MAKERS["relation"](rng, vqa._assets()[3]["test"], 1.0)


def test_thinned_training_scenes_are_sparser_and_still_answered_right():
    for task in vqa.TASKS + vqa.PRIMER_TASKS:  # digit scenes keep their digits; their shapes thin out
        shapes = [[sum(o is not None and o[0] == "shape" for o in vqa.make_item(task, "train", i, thin=thin).scene) for i in range(200)] for thin in (0.15, 1.0)]
        assert np.mean(shapes[0]) < 0.6 * np.mean(shapes[1]), task
    for i in range(50):  # the answer is still read off the thinned scene
        item = vqa.make_item("locate", "train", i, thin=0.15)
        cell = item.scene.index(shape(*item.question.split()[3:5]))
        assert item.answer == f"row {cell // vqa.GRID + 1} column {cell % vqa.GRID + 1}"
    stream = vqa.train_items(thin=0.15)
    assert all(sum(o is not None for o in next(stream).scene) <= 8 for _ in range(60))
    for split, thin in (("test", 0.5), ("calib", 0.5), ("train", 0.0), ("train", 1.5)):
        with pytest.raises(ValueError, match="thin must be"):
            vqa.make_item("count", split, 0, thin=thin)
