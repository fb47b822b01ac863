"""The sample schema every data source yields, and the cleaning that turns raw rows into it.

A sample is ``{"images": [PIL.Image (RGB)], "texts": [{"user": str, "assistant": str}, ...],
"source": str}`` (FineVision's conversation schema; its per-turn rating columns are ignored). A row
``{"text": str}`` (no or empty ``texts``, no images) is a *plain-text* sample, ``{"images": [],
"texts": [], "text": str, "source": str}``: a passage to calibrate on or train on every token of.
Every data source (see ``interlace.data.sources``) yields raw rows in *parts* (a file, a shard, a
subset); ``clean_row`` turns a row into a sample or a skip reason, and ``SampleStream`` counts the
skips so that broken data fails loudly with its counts instead of training on whatever survived.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

# Broken rows count towards max_bad_fraction; filtered rows are dropped by the rules on purpose.
BAD_REASONS = (
    "malformed", "empty_texts", "too_long", "missing_image", "empty_image", "unreadable_image",
    "outside_image", "irregular_image", "oversized_image",
)  # fmt: skip
FILTER_REASONS = ("too_many_images",)
# A long stream is checked for bad rows as it goes once it has seen this many rows, so a broken
# dataset (a FineVision subset, a shard) fails minutes into a run rather than at the end of the epoch.
EARLY_CHECK_ROWS = 1000
# The largest image file a row may name: far above any real photo (a 4K PNG is ~25 MiB), far below
# what would exhaust memory when a row names a disk image or a log by mistake.
MAX_IMAGE_BYTES = 64 * 2**20


class DataSpecError(ValueError):
    """A data spec, or the data behind it, that cannot be used; the message says how to fix it."""


class RowSkipped(Exception):
    """A raw row that cannot become a sample; ``reason`` is one of BAD_REASONS or FILTER_REASONS."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class LoadStats:
    """What a SampleStream kept and what it skipped, by reason."""

    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def seen(self) -> int:
        return self.kept + sum(self.skipped.values())

    @property
    def bad(self) -> int:
        """Rows skipped because they are broken, not those the recipe filters out on purpose."""
        return sum(count for reason, count in self.skipped.items() if reason in BAD_REASONS)

    def summary(self) -> str:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items()))
        return f"kept {self.kept} of {self.seen} rows" + (f", skipped {reasons}" if reasons else "")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SampleRules:
    """How raw rows are checked and trimmed into samples.

    Attributes:
        max_images: drop samples with more images (a filter, not a bad row); None: no limit.
        max_messages: keep the whole user+assistant turns that fit in this many messages, so 5
            keeps 2 turns: a trailing question without its answer adds no training signal (the
            loss covers assistant tokens only). None: keep every turn.
        max_pixels: downscale larger images to at most this many pixels, keeping the aspect ratio.
        max_text_length: skip conversations longer than this after the cut, as measured by
            text_length; the default of 32768 characters is about the paper's 8192-token limit.
        text_length: how text is measured: ``len`` (characters) or a tokenizer's token count.
        max_image_bytes: the largest image file a row may name (64 MiB); a larger one is a bad
            row ("oversized_image"), refused before it is read.
        images_anywhere: let rows name image files outside their data file's directory
            (absolute paths, ``..``, symlinks leading out). Off, such a row is a bad row
            ("outside_image"): a data file cannot make the run read arbitrary files.
    """

    max_images: int | None = None
    max_messages: int | None = None
    max_pixels: int | None = None
    max_text_length: int | None = 32768
    text_length: Callable[[str], int] = len
    max_image_bytes: int = MAX_IMAGE_BYTES
    images_anywhere: bool = False

    def __post_init__(self) -> None:
        lows = {"max_images": 0, "max_messages": 2, "max_pixels": 1, "max_text_length": 1, "max_image_bytes": 1}
        errors = [
            f"{name} must be None or >= {low}, got {getattr(self, name)!r}"
            for name, low in lows.items()
            if getattr(self, name) is not None and not getattr(self, name) >= low
        ]
        if errors:
            raise ValueError("; ".join(errors))


# ---------------------------------------------------------------------------------------------
# One row -> one sample


def cut_turns(texts: Any, max_messages: int | None) -> list[dict]:
    """The whole user+assistant turns that fit in max_messages messages, as plain str dicts.

    Raises:
        RowSkipped: "malformed" if texts is not a list of dicts, "empty_texts" if no kept turn
            has a non-empty answer.
    """
    if not isinstance(texts, list) or not all(isinstance(turn, dict) for turn in texts):
        raise RowSkipped("malformed")
    kept = texts if max_messages is None else texts[: max_messages // 2]
    turns = [{"user": str(t.get("user") or ""), "assistant": str(t.get("assistant") or "")} for t in kept]
    if not any(turn["assistant"].strip() for turn in turns):
        raise RowSkipped("empty_texts")
    return turns


def _from_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RowSkipped("unreadable_image") from error


def _read_image_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes, checked before and after opening.

    ``os.stat`` first refuses devices, FIFOs, sockets and directories without opening them
    (``/dev/zero`` reads forever, a FIFO blocks); opening with O_NONBLOCK and checking ``fstat``
    again closes the race of a path swapped between the two, and the read stops at max_bytes + 1.

    Raises:
        RowSkipped: "irregular_image" for anything but a regular file, "oversized_image" for a
            file over max_bytes.
        OSError: the file is missing or unreadable.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise RowSkipped("irregular_image")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RowSkipped("irregular_image")
        if info.st_size > max_bytes:
            raise RowSkipped("oversized_image")
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew since fstat
        raise RowSkipped("oversized_image")
    return data


def _could_be_path(text: str) -> bool:
    """Whether text fits Linux's limits on a path (4096 bytes, 255 per name): longer text is base64."""
    return len(text) < 4096 and all(len(part) <= 255 for part in text.split("/"))


def _inside(path: Path, base_dir: Path | None) -> bool:
    """Whether path, symlinks resolved, lies inside base_dir (never, without a base_dir)."""
    if base_dir is None:
        return False
    try:
        return path.resolve().is_relative_to(base_dir.resolve())
    except (OSError, RuntimeError):  # a name too long, a symlink loop
        return False


def resolve_image(
    entry: Any, base_dir: Path | None = None, *, root: Path | None = None, anywhere: bool = False, max_bytes: int = MAX_IMAGE_BYTES
) -> bytes | Image.Image:
    """The encoded bytes (or the PIL image) behind one entry of a row's ``images``.

    Accepts a PIL image, bytes, datasets' ``{"bytes": ..., "path": ...}`` (bytes may be base64
    text in JSON), a data URI, base64 text, or a file path (relative ones against base_dir).

    Args:
        entry: one element of a row's ``images``.
        base_dir: the data file's directory, where relative paths point from.
        root: the directory a path must lie inside, unless anywhere (None: base_dir); for a
            ``--data DIR`` it is DIR, so that a nested metadata.jsonl may name a sibling folder.
        anywhere: accept paths outside root (absolute ones, ``..``, symlinks leading out).
        max_bytes: the largest image file read.

    Raises:
        RowSkipped: "missing_image" for a path that is not a file, "outside_image" for one
            outside root, "irregular_image" for a device, FIFO, socket or directory,
            "oversized_image" for a file over max_bytes, "malformed" for other types.
    """
    if isinstance(entry, Image.Image | bytes):
        return entry
    if isinstance(entry, dict):  # datasets stores images as {"bytes": ..., "path": ...}
        data = entry.get("bytes")
        if data is not None:
            return data if isinstance(data, bytes) else _from_base64(str(data))
        entry = entry.get("path")
        if not entry:
            raise RowSkipped("missing_image")
    if not isinstance(entry, str | Path):
        raise RowSkipped("malformed")
    text = str(entry)
    if text.startswith("data:"):
        return _from_base64(text.partition(",")[2])
    if not _could_be_path(text):  # base64 text of a real image: skip resolving 10**5 "/"-separated parts
        return _from_base64(text)
    path = Path(text).expanduser() if anywhere else Path(text)
    path = base_dir / path if base_dir is not None and not path.is_absolute() else path
    outside = not anywhere and not _inside(path, base_dir if root is None else root)
    if not outside:
        try:
            return _read_image_file(path, max_bytes)
        except OSError:  # not a file (or, for base64 text, a name too long to be one): try base64
            pass
    try:  # base64 text may look like an absolute path: a JPEG's starts with "/9j/"
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:  # neither a file nor base64
        raise RowSkipped("outside_image" if outside else "missing_image") from error


def decode_image(data: bytes | Image.Image) -> Image.Image:
    """A fully decoded RGB image.

    Raises:
        RowSkipped: "empty_image" for no bytes or a zero-size image, "unreadable_image" when PIL
            cannot decode it (corrupt or truncated bytes, not an image).
    """
    if not isinstance(data, Image.Image) and not data:
        raise RowSkipped("empty_image")
    try:
        image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise RowSkipped("unreadable_image") from error
    if image.width == 0 or image.height == 0:
        raise RowSkipped("empty_image")
    return image if image.mode == "RGB" else image.convert("RGB")


def fit_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """The image downscaled (bicubic) so that width * height <= max_pixels, aspect ratio kept."""
    width, height = image.size
    if width * height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (width * height))
    new_width, new_height = max(1, int(width * scale)), max(1, int(height * scale))
    if new_width * new_height > max_pixels:  # a side was clamped up to 1 pixel: cap the other
        new_width, new_height = (max_pixels, 1) if new_height == 1 else (1, max_pixels)
    return image.resize((new_width, new_height), Image.Resampling.BICUBIC)


def _clean_plain(row: dict, rules: SampleRules, source: str) -> dict:
    """A plain-text row as a sample: its text must be a non-empty string, and it carries no images."""
    text, images = row["text"], row.get("images")
    if not isinstance(text, str) or images not in (None, []):
        raise RowSkipped("malformed")
    if not text.strip():
        raise RowSkipped("empty_texts")
    if rules.max_text_length is not None and rules.text_length(text) > rules.max_text_length:
        raise RowSkipped("too_long")
    return {"images": [], "texts": [], "text": text, "source": str(row.get("source") or source)}


def clean_row(row: Any, rules: SampleRules, base_dir: Path | None = None, source: str = "", *, root: Path | None = None) -> dict:
    """One raw row as a sample; cheap checks first, images decoded last.

    Args:
        row: a dict with ``images`` and ``texts`` (and optionally ``source``), or a plain-text row
            with ``text`` and no (or empty) ``texts``; other keys ignored.
        rules: limits and trimming to apply.
        base_dir: where relative image paths point from.
        root: the directory image paths must lie inside (None: base_dir; see resolve_image).
        source: the ``source`` to use when the row has none.

    Raises:
        RowSkipped: with the reason the row cannot be used.
    """
    if isinstance(row, dict) and "text" in row and not row.get("texts"):
        return _clean_plain(row, rules, source)
    if not isinstance(row, dict) or "images" not in row or "texts" not in row:
        raise RowSkipped("malformed")
    images = row["images"]
    entries = [] if images is None else images if isinstance(images, list) else [images]
    if rules.max_images is not None and len(entries) > rules.max_images:
        raise RowSkipped("too_many_images")
    texts = cut_turns(row["texts"], rules.max_messages)
    length = sum(rules.text_length(turn["user"]) + rules.text_length(turn["assistant"]) for turn in texts)
    if rules.max_text_length is not None and length > rules.max_text_length:
        raise RowSkipped("too_long")
    decoded = [
        decode_image(resolve_image(entry, base_dir, root=root, anywhere=rules.images_anywhere, max_bytes=rules.max_image_bytes))
        for entry in entries
    ]
    if rules.max_pixels is not None:
        decoded = [fit_pixels(image, rules.max_pixels) for image in decoded]
    return {"images": decoded, "texts": texts, "source": str(row.get("source") or source)}


# ---------------------------------------------------------------------------------------------
# Rows in parts -> a stream of samples


@dataclass(frozen=True)
class RowPart:
    """A run of raw rows (a file, a shard, a subset), opened only when it is read.

    Attributes:
        name: where the rows come from; the ``source`` of rows that have none.
        size: the number of rows, or None when unknown (a stream without a dataset card).
        open: returns an iterable over the raw rows (at most ``size``).
        base_dir: the directory that relative image paths point from.
        root: the directory image paths must lie inside (None: base_dir): the ``--data`` directory.
    """

    name: str
    size: int | None
    open: Callable[[], Iterable[Any]]
    base_dir: Path | None = None
    root: Path | None = None


def chain_parts(parts: Iterable[RowPart]) -> Iterator[tuple[Any, RowPart]]:
    """Every raw row of every part, in order, with the part it came from."""
    for part in parts:
        for row in part.open():
            yield row, part


class SampleStream(Iterator[dict]):
    """Clean samples from raw rows; ``stats`` counts what was kept and skipped so far.

    Iterate it once. It raises DataSpecError when more than max_bad_fraction of the rows seen are
    bad (checked at the end, and as it goes once EARLY_CHECK_ROWS rows were seen) or when no
    sample survived.
    """

    def __init__(
        self,
        rows: Iterable[tuple[Any, RowPart]],
        rules: SampleRules,
        *,
        label: str,
        limit: int | None = None,
        max_bad_fraction: float = 0.1,
    ) -> None:
        if not 0 <= max_bad_fraction <= 1:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if limit is not None and limit < 1:
            raise ValueError(f"the sample limit must be None or >= 1, got {limit}")
        self.stats = LoadStats()
        self._label, self._max_bad_fraction = label, max_bad_fraction
        self._samples = self._run(iter(rows), rules, limit)

    def __next__(self) -> dict:
        return next(self._samples)

    def _run(self, rows: Iterator[tuple[Any, RowPart]], rules: SampleRules, limit: int | None) -> Iterator[dict]:
        for row, part in rows:
            try:
                sample = clean_row(row, rules, part.base_dir, part.name, root=part.root)
            except RowSkipped as skipped:
                self.stats.skipped[skipped.reason] = self.stats.skipped.get(skipped.reason, 0) + 1
                if self.stats.seen >= EARLY_CHECK_ROWS:
                    self._check_bad()
                continue
            self.stats.kept += 1
            yield sample
            if limit is not None and self.stats.kept >= limit:
                break
        self._check_bad()
        if self.stats.kept == 0:
            raise DataSpecError(
                f"data spec {self._label!r}: no usable samples ({self.stats.summary()}); "
                "check the rows, or loosen the sample rules"
            )
        if self.stats.skipped:
            logger.info("%s: %s", self._label, self.stats.summary())

    def _check_bad(self) -> None:
        if self.stats.bad > self._max_bad_fraction * self.stats.seen:
            outside = (
                "; rows name images outside the data's directory: move them in, or pass --images-anywhere"
                if self.stats.skipped.get("outside_image") else ""
            )  # fmt: skip
            raise DataSpecError(
                f"data spec {self._label!r}: {self.stats.bad} of {self.stats.seen} rows are bad, more than "
                f"max_bad_fraction={self._max_bad_fraction} ({self.stats.summary()}); "
                f"fix or drop them, or raise max_bad_fraction{outside}"
            )
