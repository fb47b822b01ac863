"""`--data SPEC`: every spec kind on fixtures built from embedded-suite samples, the calibration
split, the FineVision recipe on a local tree in the Hub layout, and bad-row accounting."""

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from interlace.data import vqa
from interlace.data.finevision import HubSubsets, finevision_samples, recipe_take
from interlace.data.rows import (
    EARLY_CHECK_ROWS,
    RowPart,
    RowSkipped,
    SampleRules,
    SampleStream,
    cut_turns,
    decode_image,
    fit_pixels,
)
from interlace.data.sources import (
    DataSpec,
    DataSpecError,
    calibration_indices,
    iter_samples,
    load_samples,
    parse_data_spec,
)

RATINGS = {"relevance_ratings": [5], "relevance_min": 5, "formatting_ratings": [4], "formatting_min": 4}


def suite_samples(n: int) -> list[dict]:
    """n distinct embedded-suite samples (training items: no reserved-key scan, so fast)."""
    return [vqa.to_sample(vqa.make_item(vqa.TASKS[i % len(vqa.TASKS)], "train", i)) for i in range(n)]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def pixels(sample: dict) -> list[np.ndarray]:
    return [np.asarray(image) for image in sample["images"]]


def same(a: list[dict], b: list[dict]) -> bool:
    return [s["texts"] for s in a] == [s["texts"] for s in b] and all(
        all(np.array_equal(x, y) for x, y in zip(pixels(p), pixels(q), strict=True)) for p, q in zip(a, b, strict=True)
    )


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def jsonl_rows(samples: list[dict], folder: Path, how: str = "mixed") -> list[dict]:
    """Rows with each image as a relative path, base64 text or a data URI (in turn when mixed)."""
    folder.mkdir(exist_ok=True)
    rows = []
    for index, sample in enumerate(samples):
        data = png(sample["images"][0])
        kind = ("path", "base64", "uri")[index % 3] if how == "mixed" else how
        if kind == "path":
            (folder / f"{index}.png").write_bytes(data)
            entry = f"{folder.name}/{index}.png"
        else:
            entry = ("data:image/png;base64," if kind == "uri" else "") + base64.b64encode(data).decode()
        rows.append({"images": [entry], "texts": sample["texts"], "source": sample["source"]})
    return rows


def write_parquet(path: Path, rows: list[dict]) -> Path:
    """Rows with images as PIL / bytes, written by `datasets` with FineVision's rating columns."""
    from datasets import Dataset, Features, List, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "images": List(ImageFeature()),
            "texts": List({"user": Value("string"), "assistant": Value("string")}),
            "source": Value("string"),
            **{name: List(Value("int64")) if name.endswith("ratings") else Value("int64") for name in RATINGS},
        }
    )
    table = {key: [row.get(key, RATINGS.get(key)) for row in rows] for key in features}
    table["images"] = [
        [{"bytes": png(i) if isinstance(i, Image.Image) else i, "path": None} for i in row["images"]] for row in rows
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(table, features=features).to_parquet(str(path))
    return path


def write_hub_tree(root: Path, subsets: dict[str, list[dict]], declare_sizes: bool = True) -> Path:
    """A local directory in FineVision's Hub layout: SUBSET/train-*.parquet and a dataset card."""
    card: dict = {"configs": [], "dataset_info": []}
    for name, rows in subsets.items():
        write_parquet(root / name / "train-00000-of-00001.parquet", rows)
        card["configs"].append({"config_name": name, "data_files": [{"split": "train", "path": f"{name}/train-*"}]})
        if declare_sizes:
            split = {"name": "train", "num_bytes": 1, "num_examples": len(rows)}
            card["dataset_info"].append({"config_name": name, "splits": [split]})
    (root / "README.md").write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n")
    return root


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    return suite_samples(50)


def texts_of(samples: list[dict]) -> list[str]:
    return [s["texts"][0]["user"] + "|" + s["texts"][0]["assistant"] + "|" + s["source"] for s in samples]


# ---------------------------------------------------------------------------------------------
# Parsing and errors


def test_parse_embedded_finevision_and_hub_ids():
    assert parse_data_spec().tasks == vqa.TASKS
    assert parse_data_spec("embedded:count, relation").tasks == ("count", "relation")
    assert parse_data_spec("finevision:ai2d,chartqa").subsets == ("ai2d", "chartqa")
    hub = parse_data_spec("HuggingFaceM4/the_cauldron:ai2d@test")
    assert (hub.kind, hub.repo, hub.subset, hub.split) == ("hub", "HuggingFaceM4/the_cauldron", "ai2d", "test")
    assert parse_data_spec("owner/name").split == "train"


def test_each_local_kind_is_recognised(tmp_path, samples):
    jsonl = write_jsonl(tmp_path / "d.jsonl", jsonl_rows(samples[:3], tmp_path / "img"))
    parquet = write_parquet(tmp_path / "p" / "x.parquet", samples[:3])
    folder = tmp_path / "f"
    write_jsonl(folder / "metadata.jsonl", [{"file_name": "a.png", "texts": samples[0]["texts"]}])
    (folder / "a.png").write_bytes(png(samples[0]["images"][0]))
    kinds = {str(p): parse_data_spec(str(p)).kind for p in (jsonl, parquet, parquet.parent, folder)}
    assert list(kinds.values()) == ["json", "parquet", "parquet", "imagefolder"]


def _bad_specs(tmp_path: Path, samples: list[dict]) -> dict[str, tuple[str, str]]:
    """spec -> (words the message must hold, why)."""
    image = base64.b64encode(png(samples[0]["images"][0])).decode()
    write_jsonl(tmp_path / "empty.jsonl", [])
    write_jsonl(tmp_path / "notexts.jsonl", [{"images": [image], "question": "q"}])
    write_jsonl(tmp_path / "noanswer.jsonl", [{"images": [image], "texts": [{"user": "q", "assistant": ""}]}] * 3)
    write_jsonl(tmp_path / "nofile" / "metadata.jsonl", [{"texts": samples[0]["texts"]}])
    (tmp_path / "data.csv").write_text("a,b\n")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    return {
        str(tmp_path / "missing.jsonl"): ("no such file", "a path that does not exist"),
        "./not/here": ("no such file", "a relative path, not a Hub id"),
        str(tmp_path / "empty.jsonl"): ("is empty", "an empty dataset"),
        str(tmp_path / "notexts.jsonl"): ("lack 'texts'", "rows without texts"),
        str(tmp_path / "noanswer.jsonl"): ("assistant turn", "no assistant turns"),
        str(tmp_path / "nofile"): ("'file_name'", "imagefolder rows without file_name"),
        str(tmp_path / "data.csv"): (".jsonl, .json or .parquet", "an unsupported file type"),
        str(tmp_path / "nothing"): ("no metadata.jsonl", "a directory with no data"),
        str(tmp_path / "broken.parquet"): ("not a readable parquet", "a corrupt parquet file"),
        "embedded:count,nope": ("unknown task 'nope'", "an unknown embedded task"),
    }


def test_bad_specs_fail_with_one_line_that_names_spec_and_problem(tmp_path, samples):
    for spec, (words, why) in _bad_specs(tmp_path, samples).items():
        with pytest.raises(DataSpecError) as caught:
            parse_data_spec(spec)
        message = str(caught.value)
        assert isinstance(caught.value, ValueError)
        assert "\n" not in message, why
        assert repr(spec) in message and words in message, f"{why}: {message}"


def test_parquet_without_texts_column_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"images": [[{"bytes": b"x", "path": None}]], "caption": ["c"]}), tmp_path / "c.parquet")
    with pytest.raises(DataSpecError, match=r"no 'texts' column .*has images, caption"):
        parse_data_spec(str(tmp_path / "c.parquet"))


# ---------------------------------------------------------------------------------------------
# Reading each kind


def test_jsonl_images_as_paths_base64_and_data_uris(tmp_path, samples):
    spec = write_jsonl(tmp_path / "d.jsonl", jsonl_rows(samples[:9], tmp_path / "img"))
    loaded = load_samples(str(spec), "train")
    assert same(loaded, samples[:9]) and [s["source"] for s in loaded] == [s["source"] for s in samples[:9]]
    assert all(set(s) == {"images", "texts", "source"} and s["images"][0].mode == "RGB" for s in loaded)


def test_json_array_file_and_default_source(tmp_path, samples):
    rows = [{k: v for k, v in r.items() if k != "source"} for r in jsonl_rows(samples[:4], tmp_path / "img", "base64")]
    (tmp_path / "mine.json").write_text(json.dumps(rows))
    loaded = load_samples(str(tmp_path / "mine.json"), "train")
    assert same(loaded, samples[:4]) and {s["source"] for s in loaded} == {"mine"}


def test_parquet_file_and_shard_directory_ignore_extra_columns(tmp_path, samples):
    write_parquet(tmp_path / "shards" / "train-0.parquet", samples[:5])
    write_parquet(tmp_path / "shards" / "train-1.parquet", samples[5:12])
    loaded = load_samples(str(tmp_path / "shards"), "train")
    assert same(loaded, samples[:12])
    assert all(set(s) == {"images", "texts", "source"} for s in loaded)
    assert same(load_samples(str(tmp_path / "shards" / "train-1.parquet"), "train", n=3), samples[5:8])


def test_imagefolder_with_file_name_and_file_names(tmp_path, samples):
    for index, sample in enumerate(samples[:4]):
        (tmp_path / f"{index}.png").write_bytes(png(sample["images"][0]))
    single = [{"file_name": f"../{i}.png", "texts": samples[i]["texts"]} for i in range(3)]
    several = [{"file_names": ["../3.png", "../0.png"], "texts": samples[3]["texts"]}]
    for name, rows, expected in [("one", single, samples[:3]), ("two", several, samples[3:4])]:
        folder = write_jsonl(tmp_path / name / "metadata.jsonl", rows).parent
        loaded = load_samples(str(folder), "train", images_anywhere=True)  # the images sit beside the folder
        assert [s["texts"] for s in loaded] == [s["texts"] for s in expected]
        assert all(np.array_equal(pixels(s)[0], pixels(e)[0]) for s, e in zip(loaded, expected, strict=True))
        assert {s["source"] for s in loaded} == {name}
    assert [len(s["images"]) for s in load_samples(str(tmp_path / "two"), "train", images_anywhere=True)] == [2]


def test_imagefolder_fixture_is_one_datasets_reads(tmp_path, samples):
    import datasets

    folder = tmp_path / "folder"
    write_jsonl(
        folder / "metadata.jsonl",
        [{"file_names": [f"{i}.png", f"{i}.png"], "texts": samples[i]["texts"]} for i in range(3)],
    )
    for index, sample in enumerate(samples[:3]):
        (folder / f"{index}.png").write_bytes(png(sample["images"][0]))
    theirs = list(datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", streaming=True))
    ours = load_samples(str(folder), "train")
    assert [r["texts"] for r in theirs] == [s["texts"] for s in ours] == [s["texts"] for s in samples[:3]]
    assert all(np.array_equal(np.asarray(r["images"][1]), pixels(s)[1]) for r, s in zip(theirs, ours, strict=True))


def test_hub_code_path_on_a_local_tree_in_hub_layout(tmp_path, samples):
    tree = write_hub_tree(tmp_path / "hub", {"a": samples[:6], "b": samples[6:9]})
    spec = DataSpec("me/data:b", "hub", repo=str(tree), subset="b", split="train")
    assert same(load_samples(spec, "train"), samples[6:9])
    calib = load_samples(spec, "calib")
    assert len(calib) == 1 and same(calib, [samples[6 + int(calibration_indices(3)[0])]])
    with pytest.raises(DataSpecError, match="cannot open it as a Hub dataset") as caught:
        iter_samples(DataSpec("me/data:zz", "hub", repo=str(tree), subset="zz"), "train")
    assert "\n" not in str(caught.value)
    with pytest.raises(DataSpecError, match=r"'nobody/nothing@train': cannot open it as a Hub dataset"):
        iter_samples("nobody/nothing", "train")  # HF_HUB_OFFLINE=1 (conftest): fails fast, one line


# ---------------------------------------------------------------------------------------------
# Splits


def test_calibration_indices_are_a_seeded_nested_ten_percent():
    order = calibration_indices(1000)
    assert len(order) == 100 and len(set(order.tolist())) == 100 and order.min() >= 0 and order.max() < 1000
    assert np.array_equal(order, calibration_indices(1000, 0.1, 42))
    assert np.array_equal(order, np.random.default_rng(42).permutation(1000)[:100])
    assert not np.array_equal(order, calibration_indices(1000, 0.1, 7))
    assert np.array_equal(calibration_indices(1000, 0.2)[:100], order)  # prefixes nest
    assert len(calibration_indices(5)) == 1 and len(calibration_indices(15)) == 2


def test_calib_is_ten_percent_of_rows_seed_42_and_train_is_all(tmp_path, samples):
    spec = str(write_jsonl(tmp_path / "d.jsonl", jsonl_rows(samples, tmp_path / "img", "base64")))
    train, calib = load_samples(spec, "train"), load_samples(spec, "calib")
    assert same(train, samples)
    expected = [samples[i] for i in sorted(calibration_indices(50, 0.1, 42))]
    assert len(calib) == 5 and same(calib, expected)
    assert texts_of(load_samples(spec, "calib")) == texts_of(calib)  # deterministic
    assert texts_of(load_samples(spec, "calib", calib_seed=1)) != texts_of(calib)
    assert len(load_samples(spec, "calib", calib_fraction=0.3)) == 15
    first3 = [samples[i] for i in sorted(calibration_indices(50)[:3])]
    assert same(load_samples(spec, "calib", n=3), first3)  # n: a prefix of the seeded order
    assert same(load_samples(spec, "train", n=7), samples[:7])


def test_embedded_calib_and_train_match_the_suite():
    calib = load_samples("embedded", "calib", n=8)
    assert same(calib, vqa.load_split("calib", 2)[:8])
    train = load_samples("embedded:count,digit_sum", "train", n=5)
    stream = vqa.train_stream(0, ("count", "digit_sum"))
    assert same(train, [next(stream) for _ in range(5)])
    assert {s["source"] for s in train} == {"count", "digit_sum"}
    with pytest.raises(DataSpecError, match="endless; pass n"):
        iter_samples("embedded", "train")


# ---------------------------------------------------------------------------------------------
# The FineVision recipe


def turn(i: int) -> dict:
    return {"user": f"question {i}", "assistant": f"answer {i}"}


def test_finevision_recipe_on_a_local_tree(tmp_path, samples):
    small = samples[0]["images"][0]
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    alpha = [
        {"images": [small] * 4, "texts": [turn(0)], "source": "alpha"},  # > 3 images: dropped
        {"images": [small] * 3, "texts": [turn(1), turn(2), turn(3)], "source": "alpha"},  # 6 messages
        {"images": [big], "texts": [turn(4)], "source": "alpha"},  # 307200 pixels
    ] + [{"images": [small], "texts": [turn(99)], "source": "alpha"}] * 297  # 300 rows: 1% = 3
    beta = [{"images": [small], "texts": [turn(10 + i)], "source": "beta"} for i in range(20)]  # 1% < 1: 1
    tree = write_hub_tree(tmp_path / "fv", {"alpha": alpha, "beta": beta})

    stream = finevision_samples(repo=str(tree))
    loaded = list(stream)
    assert [[t["user"] for t in s["texts"]] for s in loaded] == [
        ["question 1", "question 2"],
        ["question 4"],
        ["question 10"],
    ]
    assert stream.stats.kept == 3 and stream.stats.skipped == {"too_many_images": 1} and stream.stats.bad == 0
    width, height = loaded[1]["images"][0].size
    assert width * height <= 50176 and abs(width / height - 640 / 480) < 0.01 and width * height > 0.97 * 50176
    assert loaded[0]["images"][0].size == small.size and all(set(s) == {"images", "texts", "source"} for s in loaded)

    only_beta = list(finevision_samples(["beta"], fraction=0.25, repo=str(tree)))
    assert [s["texts"][0]["user"] for s in only_beta] == [f"question {10 + i}" for i in range(5)]
    with pytest.raises(DataSpecError, match="no subset 'gamma'; choose from alpha, beta"):
        finevision_samples(["gamma"], repo=str(tree))


def test_finevision_subsets_without_declared_sizes_and_downloaded(tmp_path, samples):
    rows = [{"images": [samples[i]["images"][0]], "texts": samples[i]["texts"], "source": "s"} for i in range(10)]
    tree = write_hub_tree(tmp_path / "fv", {"s": rows}, declare_sizes=False)
    assert len(list(finevision_samples(repo=str(tree), take_if_unknown=4))) == 4
    source = HubSubsets(str(tree), streaming=False, cache_dir=str(tmp_path / "cache"))
    assert same(list(finevision_samples(fraction=0.5, source=source)), samples[:5])


class ListSubsets:
    """An in-memory SubsetSource that records which subsets were opened."""

    def __init__(self, subsets: dict[str, list]) -> None:
        self.subsets, self.opened = subsets, []

    def sizes(self) -> dict[str, int | None]:
        return {name: len(rows) for name, rows in self.subsets.items()}

    def open(self, subset: str) -> list:
        self.opened.append(subset)
        return self.subsets[subset]


def test_recipe_take_and_injected_source():
    assert [recipe_take(n) for n in (1, 99, 100, 199, 250, 24_343)] == [1, 1, 1, 1, 2, 243]
    image = png(Image.new("RGB", (4, 4)))
    source = ListSubsets({name: [{"images": [image], "texts": [turn(i)]} for i in range(200)] for name in "xyz"})
    loaded = list(finevision_samples(["z", "x"], source=source))
    assert [(s["source"], s["texts"][0]["user"]) for s in loaded] == [
        ("z", "question 0"),
        ("z", "question 1"),
        ("x", "question 0"),
        ("x", "question 1"),
    ]
    assert source.opened == ["z", "x"]


def test_finevision_spec_fails_cleanly_without_the_hub():
    with pytest.raises(DataSpecError, match="cannot list the subsets of 'HuggingFaceM4/FineVision'") as caught:
        iter_samples("finevision", "train")
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------
# Bad rows


def test_cut_turns_keeps_whole_turns():
    texts = [turn(i) for i in range(4)]
    assert [len(cut_turns(texts, m)) for m in (2, 3, 4, 5, 8, None)] == [1, 1, 2, 2, 4, 4]
    with pytest.raises(RowSkipped, match="empty_texts"):
        cut_turns([{"user": "q", "assistant": "  "}], None)
    with pytest.raises(RowSkipped, match="malformed"):
        cut_turns("q: a", None)


def test_fit_pixels_caps_area_and_keeps_aspect():
    image = Image.new("RGB", (100, 50))
    assert fit_pixels(image, 5000) is image
    assert fit_pixels(image, 1250).size == (50, 25)
    assert np.prod(fit_pixels(Image.new("RGB", (60000, 1)), 50176).size) <= 50176


def test_decode_image_rejects_empty_and_corrupt_bytes():
    good = png(Image.new("L", (3, 2)))
    assert decode_image(good).mode == "RGB"
    for data, reason in [
        (b"", "empty_image"),
        (good[: len(good) // 2], "unreadable_image"),
        (b"GIF89a nope", "unreadable_image"),
    ]:
        with pytest.raises(RowSkipped, match=reason):
            decode_image(data)
    with pytest.raises(RowSkipped, match="empty_image"):
        decode_image(Image.new("RGB", (0, 4)))


def _bad_rows(tmp_path: Path, samples: list[dict]) -> list:
    rows = jsonl_rows(samples[:15], tmp_path / "img", "mixed")
    good = rows[1]["images"][0]
    (tmp_path / "img" / "zero.png").write_bytes(b"")
    corrupt = base64.b64encode(png(samples[0]["images"][0])[:40]).decode()
    return rows + [
        {"images": [corrupt], "texts": samples[0]["texts"]},  # unreadable_image
        {"images": ["img/zero.png"], "texts": samples[0]["texts"]},  # empty_image (0-byte file)
        {"images": ["img/gone.png"], "texts": samples[0]["texts"]},  # missing_image
        {"images": [good], "texts": [{"user": "q", "assistant": "long " * 10_000}]},  # too_long
        {"images": [good], "texts": []},  # empty_texts
        "{not json",  # malformed
    ]


def test_bad_rows_are_skipped_and_counted(tmp_path, samples):
    spec = str(write_jsonl(tmp_path / "d.jsonl", _bad_rows(tmp_path, samples)))
    stream = iter_samples(spec, "train", max_bad_fraction=0.5)
    assert same(list(stream), samples[:15])
    reasons = ("unreadable_image", "empty_image", "missing_image", "too_long", "empty_texts", "malformed")
    assert stream.stats.skipped == dict.fromkeys(reasons, 1) and (
        stream.stats.kept,
        stream.stats.bad,
        stream.stats.seen,
    ) == (15, 6, 21)


def test_too_many_bad_rows_fail_with_the_counts(tmp_path, samples):
    spec = str(write_jsonl(tmp_path / "d.jsonl", _bad_rows(tmp_path, samples)))
    with pytest.raises(DataSpecError) as caught:
        load_samples(spec, "train")
    message = str(caught.value)
    assert "6 of 21 rows are bad" in message and "missing_image 1" in message and "max_bad_fraction=0.1" in message
    assert "\n" not in message


def test_max_bad_fraction_is_a_strict_upper_bound():
    part = RowPart("p", None, list)
    good = {"images": [], "texts": [turn(0)]}

    def stream(n_good: int, n_bad: int) -> SampleStream:
        return SampleStream([(good, part)] * n_good + [(None, part)] * n_bad, SampleRules(), label="p")

    at_limit = stream(18, 2)  # 2 of 20: exactly 10% is allowed
    assert len(list(at_limit)) == 18 and at_limit.stats.bad == 2
    with pytest.raises(DataSpecError, match="2 of 19 rows are bad"):
        list(stream(17, 2))


def test_token_budget_and_a_broken_endless_stream_fails_early():
    image = png(Image.new("RGB", (2, 2)))
    rows = [{"images": [image], "texts": [{"user": "one two three", "assistant": "four"}]}] * 3
    words = SampleRules(max_text_length=3, text_length=lambda text: len(text.split()))
    part = RowPart("p", 3, lambda: rows)
    with pytest.raises(DataSpecError, match=r"3 of 3 rows are bad.*too_long 3"):
        list(SampleStream(((row, part) for row in rows), words, label="p"))

    def endless():
        while True:
            yield None, part

    with pytest.raises(DataSpecError, match=f"of {EARLY_CHECK_ROWS} rows are bad"):
        next(SampleStream(endless(), SampleRules(), label="p"))


def test_sample_rules_report_every_bad_field():
    with pytest.raises(
        ValueError, match="max_messages must be None or >= 2, got 1; max_pixels must be None or >= 1, got 0"
    ):
        SampleRules(max_messages=1, max_pixels=0)
