"""Where samples come from: the ``--data SPEC`` of ``interlace analyze`` and ``interlace prune``.

SPEC is one of:

    embedded                      the built-in visual-QA suite (the default)
    embedded:count,relation       ... only these tasks
    PATH.jsonl | PATH.json        rows {"images": [...], "texts": [{"user", "assistant"}], "source"?};
                                  an image is a path (relative to the file), base64 or a data URI
    PATH.parquet | DIR            a parquet file or a directory of shards, images stored the way
                                  ``datasets`` stores them ({"bytes", "path"})
    DIR with metadata.jsonl       ``datasets``' imagefolder layout: "file_name" (or "file_names")
                                  and "texts" per row
    owner/name[:subset][@split]   a Hub dataset in FineVision's schema, streamed
    finevision[:sub1,sub2]        the paper's recipe on HuggingFaceM4/FineVision (see finevision.py)
    pydocs                        real English prose: the Python documentation, as passages
                                  (realtext.py; needs Debian's python3-doc)

A JSON(L) row may also be plain text, ``{"text": "...", "source"?}``: it becomes a plain-text
sample ``{"images": [], "texts": [], "text", "source"}`` that is scored and trained on every token.

Every source yields FineVision-schema samples with RGB PIL images (or plain-text samples), cleaned
by the same rules; unusable rows are skipped and counted. An image path in a row must name a
regular file of at most 64 MiB inside the data's directory (the ``--data`` file's directory, or the
``--data`` directory), symlinks resolved; anything else is a bad row, unless ``images_anywhere`` lets rows point
elsewhere (``--images-anywhere``). Splits: the embedded suite has
its own; a text corpus (pydocs) splits by document into calib, train and a held-out "test"; for
any other data "train" is every row and "calib" a seeded random fraction of the rows (10%, seed
42: the paper calibrates on a random 10% of its training set).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from interlace.data import realtext, vqa
from interlace.data.finevision import FINEVISION_RULES, HubSubsets, finevision_parts
from interlace.data.hub import open_hub
from interlace.data.rows import DataSpecError, LoadStats, RowPart, SampleRules, SampleStream, chain_parts

__all__ = [
    "DataSpec", "DataSpecError", "LoadStats", "SampleRules", "SampleStream",
    "calibration_indices", "iter_samples", "load_samples", "parse_data_spec",
]  # fmt: skip

logger = logging.getLogger(__name__)

KINDS = ("embedded", "json", "parquet", "imagefolder", "hub", "finevision", "text")
SPLITS = ("calib", "train", "test")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
HUB_ID = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)(?::(?P<subset>[\w.-]+))?(?:@(?P<split>[\w.-]+))?")
SPEC_HELP = (
    f"pass 'embedded[:task,...]', 'finevision[:subset,...]', '{realtext.NAME}', "
    "an existing .jsonl/.json/.parquet file or directory, "
    "or a Hub id owner/name[:subset][@split]"
)


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data`` spec.

    Attributes:
        text: the spec as given, used in messages.
        kind: one of KINDS ("text": a plain-text corpus, split by document).
        path: the local file or directory (json, parquet, imagefolder).
        tasks: the embedded tasks to use.
        subsets: the FineVision subsets to use (empty: all).
        repo: the Hub dataset id (hub).
        subset: the Hub dataset's subset, if any (hub).
        split: the Hub dataset's split (hub).
    """

    text: str
    kind: str
    path: Path | None = None
    tasks: tuple[str, ...] = ()
    subsets: tuple[str, ...] = ()
    repo: str | None = None
    subset: str | None = None
    split: str = "train"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"DataSpec kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind in ("json", "parquet", "imagefolder") and self.path is None:
            raise ValueError(f"a {self.kind} DataSpec needs a path")
        if self.kind == "hub" and not self.repo:
            raise ValueError("a hub DataSpec needs a repo")


# ---------------------------------------------------------------------------------------------
# Local files -> parts


def _read_jsonl(path: Path) -> Iterator[Any]:
    with path.open("rb") as lines:  # bytes: a line that is not UTF-8 is one bad row, not a crash
        for line in lines:
            if line.strip():
                try:
                    yield json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # RecursionError: [[[[...]]]]
                    yield None  # a malformed row, counted by the stream


def _count_lines(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(1 for line in lines if line.strip())


def _json_part(path: Path) -> RowPart:
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            # JSON lines under a .json name, as datasets' json loader accepts; read line by line,
            # a line that is not UTF-8 or nests too deep is one bad row.
            rows = None
        if rows is not None:
            rows = [rows] if isinstance(rows, dict) else rows
            if not isinstance(rows, list):
                raise DataSpecError(
                    f"data spec {str(path)!r}: holds a JSON {type(rows).__name__}; write a list of rows or JSON lines"
                )
            return RowPart(path.stem, len(rows), functools.partial(iter, rows), path.parent)
    return RowPart(path.stem, _count_lines(path), functools.partial(_read_jsonl, path), path.parent)


def _read_parquet(path: Path) -> Iterator[dict]:
    import pyarrow.parquet as pq

    shard = pq.ParquetFile(path)
    # Only the schema's columns: FineVision's rating columns are never read.
    columns = [name for name in ("images", "texts", "source") if name in shard.schema_arrow.names]
    for batch in shard.iter_batches(batch_size=64, columns=columns):
        yield from batch.to_pylist()


def _parquet_parts(text: str, root: Path) -> list[RowPart]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [root] if root.is_file() else sorted(root.rglob("*.parquet"))
    parts = []
    for file in files:
        try:
            meta = pq.ParquetFile(file)  # the footer only: row count and schema
        except (pa.ArrowException, OSError) as error:
            raise DataSpecError(
                f"data spec {text!r}: {file} is not a readable parquet file ({error}); remove or rewrite it"
            ) from error
        missing = [name for name in ("images", "texts") if name not in meta.schema_arrow.names]
        if missing:
            raise DataSpecError(
                f"data spec {text!r}: {file.name} has no {' or '.join(map(repr, missing))} column "
                f"(has {', '.join(meta.schema_arrow.names)}); "
                "write FineVision's schema: images, texts=[{user, assistant}]"
            )
        # A shard's default source: its folder under the root (a FineVision copy: the subset).
        folder = "." if root.is_file() else str(file.parent.relative_to(root))
        name = root.stem if root.is_file() else root.name if folder == "." else folder
        parts.append(RowPart(name, meta.metadata.num_rows, functools.partial(_read_parquet, file), file.parent, root if root.is_dir() else None))
    return parts


def _read_imagefolder(metadata: Path) -> Iterator[Any]:
    for row in _read_jsonl(metadata):
        # datasets' imagefolder names a row's images by "file_name" (one) or "file_names" (a list).
        if isinstance(row, dict) and "images" not in row:
            names = row.pop("file_names", None)
            names = [row.pop("file_name")] if names is None and "file_name" in row else names
            if names is not None:
                row["images"] = names
        yield row


def _imagefolder_parts(root: Path) -> list[RowPart]:
    return [
        RowPart(
            metadata.parent.name,
            _count_lines(metadata),
            functools.partial(_read_imagefolder, metadata),
            metadata.parent,
            root,
        )
        for metadata in sorted(root.rglob("metadata.jsonl"))
    ]


def _parts(spec: DataSpec) -> list[RowPart]:
    """The raw rows behind a (non-embedded) spec, in parts; opens nothing but file footers and cards."""
    if spec.kind == "json":
        return [_json_part(spec.path)]
    if spec.kind == "parquet":
        return _parquet_parts(spec.text, spec.path)
    if spec.kind == "imagefolder":
        return _imagefolder_parts(spec.path)
    if spec.kind == "hub":
        rows, size = open_hub(spec.repo, spec.subset, spec.split)
        return [RowPart(spec.subset or spec.repo, size, functools.partial(iter, rows))]
    if spec.kind == "finevision":
        return finevision_parts(HubSubsets(), list(spec.subsets) or None)
    raise AssertionError(f"no reader for kind {spec.kind!r}")


# ---------------------------------------------------------------------------------------------
# Parsing and peeking


def _peek(spec: DataSpec, parts: list[RowPart], rows: int) -> None:
    """Check the first rows' schema, so that a wrong file fails before any model work."""
    if all(part.size == 0 for part in parts):
        raise DataSpecError(f"data spec {spec.text!r}: the dataset is empty; point it at data with rows")
    first = [row for row, _ in itertools.islice(chain_parts(parts), rows)]
    if not first:
        raise DataSpecError(f"data spec {spec.text!r}: the dataset is empty; point it at data with rows")
    if isinstance(first[0], dict) and "text" in first[0] and not first[0].get("texts"):
        if not any(isinstance(row, dict) and isinstance(row.get("text"), str) and row["text"].strip() for row in first):
            raise DataSpecError(
                f"data spec {spec.text!r}: none of the first {len(first)} plain-text rows has a non-empty 'text'; "
                "write rows {'text': '...'}"
            )
        return
    missing = [key for key in ("images", "texts") if not (isinstance(first[0], dict) and key in first[0])]
    if missing:
        found = ", ".join(first[0]) if isinstance(first[0], dict) else f"a {type(first[0]).__name__}"
        hint = " (an imagefolder row names them by 'file_name' or 'file_names')" if spec.kind == "imagefolder" else ""
        raise DataSpecError(
            f"data spec {spec.text!r}: rows lack {' and '.join(map(repr, missing))}{hint}, the first row has {found}; "
            "each row needs images=[...] and texts=[{'user': ..., 'assistant': ...}], or text='...' for plain text"
        )
    answered = any(
        isinstance(row, dict) and isinstance(row.get("texts"), list)
        and any(isinstance(turn, dict) and str(turn.get("assistant") or "").strip() for turn in row["texts"])
        for row in first
    )  # fmt: skip
    if not answered:
        raise DataSpecError(
            f"data spec {spec.text!r}: none of the first {len(first)} rows has an assistant turn; "
            "texts must be a list of {'user': ..., 'assistant': ...} with non-empty answers"
        )


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _local_spec(text: str, path: Path) -> DataSpec:
    if not path.is_file() and not path.is_dir():  # a FIFO or a device would block or read forever
        raise DataSpecError(f"data spec {text!r}: is not a regular file or directory; {SPEC_HELP}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in FILE_SUFFIXES:
            raise DataSpecError(
                f"data spec {text!r}: cannot read {suffix or 'extension-less'} files; use .jsonl, .json or .parquet"
            )
        return DataSpec(text, "parquet" if suffix == ".parquet" else "json", path=path)
    if next(path.rglob("metadata.jsonl"), None) is not None:
        return DataSpec(text, "imagefolder", path=path)
    if next(path.rglob("*.parquet"), None) is not None:
        return DataSpec(text, "parquet", path=path)
    raise DataSpecError(
        f"data spec {text!r}: the directory holds no metadata.jsonl (imagefolder) and no .parquet files; {SPEC_HELP}"
    )


def parse_data_spec(spec: str = "embedded", *, peek_rows: int = 8) -> DataSpec:
    """Parse and cheaply validate a ``--data`` spec (see the module docstring for the forms).

    Local data is checked on its first peek_rows rows (schema and answers, no image decoding);
    Hub specs are checked for syntax only: ``iter_samples`` opens them and checks their columns.

    Raises:
        DataSpecError: a path that does not exist, an unknown task, an unreadable or empty file,
            rows without ``images``/``texts`` (or ``text``), no assistant turns, or a text corpus
            that is not installed; the message says the fix.
    """
    text = spec.strip()
    head, _, names = text.partition(":")
    if head == "embedded":
        tasks = _names(names) or vqa.TASKS
        unknown = [task for task in tasks if task not in vqa.TASKS]
        if unknown:
            raise DataSpecError(
                f"data spec {text!r}: unknown task {', '.join(map(repr, unknown))}; choose from {', '.join(vqa.TASKS)}"
            )
        return DataSpec(text, "embedded", tasks=tasks)
    if head == "finevision":  # subset names are checked against the dataset card when it opens
        return DataSpec(text, "finevision", subsets=_names(names))
    if text == realtext.NAME:
        realtext.find_root()  # cheap: fails now, with the install command, if the corpus is missing
        return DataSpec(text, "text")
    path = Path(text).expanduser()
    try:
        exists = bool(text) and path.exists()
    except OSError as error:  # ENAMETOOLONG: a name longer than the filesystem allows
        shown = text if len(text) <= 80 else f"{text[:60]}...({len(text)} characters)"
        raise DataSpecError(f"data spec {shown!r}: cannot be used as a path ({error.strerror}); {SPEC_HELP}") from None
    if exists:
        parsed = _local_spec(text, path)
        if peek_rows > 0:
            _peek(parsed, _parts(parsed), peek_rows)
        return parsed
    match = HUB_ID.fullmatch(text)
    if match and path.suffix.lower() not in FILE_SUFFIXES and not text.startswith((".", "/", "~")):
        return DataSpec(text, "hub", repo=match["repo"], subset=match["subset"], split=match["split"] or "train")
    raise DataSpecError(f"data spec {text!r}: no such file or directory; {SPEC_HELP}")


# ---------------------------------------------------------------------------------------------
# Splits and loading


def calibration_indices(num_rows: int, fraction: float = 0.1, seed: int = 42) -> np.ndarray:
    """The rows of the calibration split, in a seeded random order (a prefix is a smaller split).

    The split holds max(1, round(fraction * num_rows)) rows drawn without replacement; taking a
    prefix keeps a smaller calibration set spread over the whole data, and nested in larger ones.
    """
    if num_rows < 1 or not 0 < fraction <= 1:
        raise ValueError(f"need num_rows >= 1 and fraction in (0, 1], got {num_rows} and {fraction}")
    return np.random.default_rng(seed).permutation(num_rows)[: max(1, round(fraction * num_rows))]


def _rows_at(parts: list[RowPart], wanted: np.ndarray) -> Iterator[tuple[Any, RowPart]]:
    """The rows at sorted global indices; a part holding none of them is never opened."""
    offset = 0
    for part in parts:
        local = wanted[(wanted >= offset) & (wanted < offset + part.size)] - offset
        offset += part.size
        if len(local) == 0:
            continue
        targets = set(local.tolist())
        for index, row in enumerate(part.open()):
            if index in targets:
                yield row, part
            if index >= local[-1]:
                break


def _sampled_rows(parts: list[RowPart], fraction: float, seed: int) -> Iterator[tuple[Any, RowPart]]:
    """Each row with probability fraction: for streams of unknown length, where no exact draw fits."""
    rng = np.random.default_rng(seed)
    return ((row, part) for row, part in chain_parts(parts) if rng.random() < fraction)


def _select(
    parts: list[RowPart], split: str, n: int | None, fraction: float, seed: int
) -> Iterator[tuple[Any, RowPart]]:
    if split == "train":
        return chain_parts(parts)
    if any(part.size is None for part in parts):
        logger.warning("calibration split of a stream of unknown length: each row joins with probability %s", fraction)
        return _sampled_rows(parts, fraction, seed)
    order = calibration_indices(sum(part.size for part in parts), fraction, seed)
    return _rows_at(parts, np.sort(order[:n] if n is not None else order))


def _embedded_parts(spec: DataSpec, split: str, n: int | None, seed: int) -> list[RowPart]:
    if split == "train":
        if n is None:
            raise DataSpecError(
                f"data spec {spec.text!r}: the embedded training stream is endless; pass n (the number of samples)"
            )
        return [RowPart("embedded", n, lambda: itertools.islice(vqa.train_stream(seed, spec.tasks), n))]
    per_task = vqa.CALIB_RESERVE if n is None else math.ceil(n / len(spec.tasks))
    if per_task > vqa.CALIB_RESERVE:
        raise DataSpecError(
            f"data spec {spec.text!r}: the embedded calibration split has "
            f"{vqa.CALIB_RESERVE * len(spec.tasks)} samples, asked for {n}; pass a smaller n"
        )
    samples = vqa.load_split("calib", per_task, spec.tasks, seed)[:n]
    return [RowPart("embedded", len(samples), functools.partial(iter, samples))]


def _text_parts(split: str, n: int | None, seed: int) -> list[RowPart]:
    samples = realtext.load_passages(split, n, seed)
    return [RowPart(realtext.NAME, len(samples), functools.partial(iter, samples))]


def iter_samples(
    spec: str | DataSpec = "embedded",
    split: Literal["calib", "train", "test"] = "calib",
    n: int | None = None,
    seed: int = 0,
    *,
    calib_fraction: float = 0.1,
    calib_seed: int = 42,
    rules: SampleRules | None = None,
    max_bad_fraction: float = 0.1,
    images_anywhere: bool = False,
) -> SampleStream:
    """A stream of clean FineVision-schema (or plain-text) samples; its ``stats`` count what was skipped.

    Args:
        spec: a ``--data`` spec, or one parsed by parse_data_spec.
        split: "calib" (scoring layers), "train" (healing), or "test" (held out; text corpora only).
        n: at most this many samples; None: the whole split (required for the embedded "train").
            For file and Hub data, calib takes the first n rows of the seeded calibration order
            and train the first n usable rows in file order; rows found broken are not replaced.
        seed: the embedded suite's seed, and the passage order of a text corpus (file and Hub
            data are split by calib_seed instead; a text corpus by document, see realtext.py).
        calib_fraction: the share of file and Hub rows in the calibration split.
        calib_seed: the seed of that split (the paper: 42).
        rules: checks and trimming; None: FINEVISION_RULES for finevision, SampleRules() else.
        max_bad_fraction: fail when more than this share of the rows seen are broken.
        images_anywhere: let rows name image files outside their data file's directory; off,
            such rows are bad rows (``SampleRules.images_anywhere``).

    Raises:
        DataSpecError: a bad spec, a Hub dataset that cannot be opened, too many broken rows, or
            split "test" for data that holds none out.
        TypeError: spec is neither a str nor a DataSpec, or rules is not a SampleRules.
    """
    if not isinstance(spec, str | DataSpec):
        raise TypeError(f"spec must be a data spec str (e.g. 'embedded' or a .jsonl path) or a DataSpec, got {type(spec).__name__}")
    if rules is not None and not isinstance(rules, SampleRules):
        raise TypeError(f"rules must be a SampleRules or None, got {type(rules).__name__}")
    if split not in SPLITS:
        raise ValueError(f"split must be 'calib', 'train' or 'test', got {split!r}")
    if n is not None and n < 1:
        raise ValueError(f"n must be None or >= 1, got {n}")
    if not 0 < calib_fraction <= 1:
        raise ValueError(f"calib_fraction must be in (0, 1], got {calib_fraction}")
    data = spec if isinstance(spec, DataSpec) else parse_data_spec(spec)
    if rules is None:
        rules = FINEVISION_RULES if data.kind == "finevision" else SampleRules()
    if images_anywhere:
        rules = dataclasses.replace(rules, images_anywhere=True)
    if split == "test" and data.kind != "text":
        raise DataSpecError(
            f"data spec {data.text!r}: has no held-out 'test' split (only a text corpus such as "
            f"{realtext.NAME!r} has one); use split 'calib' or 'train'"
        )
    if data.kind == "embedded":
        rows = chain_parts(_embedded_parts(data, split, n, seed))
    elif data.kind == "text":
        rows = chain_parts(_text_parts(split, n, seed))
    else:
        rows = _select(_parts(data), split, n, calib_fraction, calib_seed)
    return SampleStream(rows, rules, label=data.text, limit=n, max_bad_fraction=max_bad_fraction)


def load_samples(
    spec: str | DataSpec = "embedded",
    split: Literal["calib", "train", "test"] = "calib",
    n: int | None = None,
    seed: int = 0,
    *,
    calib_fraction: float = 0.1,
    calib_seed: int = 42,
    rules: SampleRules | None = None,
    max_bad_fraction: float = 0.1,
    images_anywhere: bool = False,
) -> list[dict]:
    """``iter_samples`` as a list (same arguments); use iter_samples to see the skip counts."""
    stream = iter_samples(
        spec,
        split,
        n,
        seed,
        calib_fraction=calib_fraction,
        calib_seed=calib_seed,
        rules=rules,
        max_bad_fraction=max_bad_fraction,
        images_anywhere=images_anywhere,
    )
    return list(stream)
