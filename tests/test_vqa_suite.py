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
    assert sum(vqa.matches(obj, colour, kind) for obj in scene) == expected


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
        axis, index = (0, row) if line == "row" else (1, col)
        same = [j for j, obj in enumerate(item.scene) if obj and j != anchor and divmod(j, vqa.GRID)[axis] == index]
        assert int(item.answer) == len(same)


def test_relation_two_hops_on_a_built_scene():
    # red square at (1, 1); right of it (1, 2) is empty; below that (2, 2) is a green cross.
    scene = scene_from({5: shape("red", "square"), 10: shape("green", "cross")})
    cell = vqa._step(vqa._step(5, "right of"), "below")
    assert cell == 10 and vqa.describe(scene[cell]) == "green cross"
    assert vqa._step(3, "right of") is None  # off the board


def test_relation_answers_name_the_cell_reached():
    for i in range(100):
        item = vqa.make_item("relation", "test", i)
        words = item.question[len("what is ") : -2].split(" the ")
        colour, kind = words[-1].split()
        cell = item.scene.index(shape(colour, kind))
        for hop in reversed(words[:-1]):
            cell = vqa._step(cell, hop.removeprefix("cell "))
        assert vqa.describe(item.scene[cell]) == item.answer


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown task"):
        vqa.make_item("colour", "test", 0)
    with pytest.raises(ValueError, match="n_per_task"):
        vqa.load_split("test", 0)
    with pytest.raises(ValueError, match="train_stream"):
        vqa.load_split("train", 5)


def test_held_out_items_do_not_depend_on_the_primers():
    # Adding training-only tasks must leave the held-out split as it was, so scores stay comparable.
    rng = np.random.default_rng([0, vqa.SPLITS.index("test"), vqa.TASKS.index("relation"), 3])
    assert vqa.make_item("relation", "test", 3) == vqa._MAKERS["relation"](rng, vqa._assets()[3]["test"], vqa.shape_scene)


def test_other_shape_samplers_are_for_the_training_split_only():
    def sparse(rng, low, high):
        return vqa.shape_scene(rng, low / 2, high / 2)

    assert vqa.make_item("count", "train", 0, shapes=sparse) != vqa.make_item("count", "train", 0)
    for split in ("test", "calib"):
        with pytest.raises(ValueError, match="training split only"):
            vqa.make_item("count", split, 0, shapes=sparse)


def test_registered_tasks_keep_clear_of_the_suite():
    def make(rng, digits, shapes):
        return vqa.Item("probe", (None,) * 16, "?", "0")

    for name, task_id, message in (("count", 40, "suite task"), ("probe", 5, "ids 0..5 are the suite's")):
        with pytest.raises(ValueError, match=message):
            vqa.register_training_task(name, task_id, make)
    with pytest.raises(ValueError, match="unknown task"):
        vqa.make_item("probe", "train", 0)  # a refused task is not registered
