"""The paper's 1% recipe on HuggingFaceM4/FineVision (arXiv 2511.19676; its released
scripts/prepare_dataset.sh and src/dataset_prep.py at github.com/pmadinei/Interlace).

The first ``max(1, int(0.01 * n))`` rows of each FineVision subset (n from the dataset card),
samples with more than 3 images dropped, conversations cut at 5 messages, images capped at 50176
pixels (about 224 x 224): ``FINEVISION_RULES`` for the row cleaning of ``interlace.data.rows``.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from interlace.data.hub import num_examples, open_hub
from interlace.data.rows import DataSpecError, RowPart, SampleRules, SampleStream, chain_parts

logger = logging.getLogger(__name__)

FINEVISION_REPO = "HuggingFaceM4/FineVision"
FINEVISION_RULES = SampleRules(max_images=3, max_messages=5, max_pixels=50176)


class SubsetSource(Protocol):
    """Where FineVision's subsets come from: their declared sizes, and their rows."""

    def sizes(self) -> dict[str, int | None]:
        """Row count of each subset (None: unknown), in the order the recipe walks them."""
        ...

    def open(self, subset: str) -> Iterable[Any]:
        """The raw rows of one subset, in order."""
        ...


@dataclass(frozen=True)
class HubSubsets:
    """FineVision's subsets through ``datasets`` (the Hub, or a local directory in its layout)."""

    repo: str = FINEVISION_REPO
    split: str = "train"
    streaming: bool = True
    cache_dir: str | None = None

    def sizes(self) -> dict[str, int | None]:
        import datasets

        try:  # one read of the dataset card, which declares every subset's num_examples
            infos = datasets.get_dataset_infos(self.repo)
        except Exception as error:  # DatasetNotFoundError, ConnectionError, ...
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise DataSpecError(
                f"data spec 'finevision': cannot list the subsets of {self.repo!r} ({reason}); "
                "check the network, or pass a local copy as repo"
            ) from error
        sizes = {name: num_examples(info.splits, self.split) for name, info in infos.items()}
        if not self.streaming:  # a downloaded subset knows its length even when the card does not
            sizes = {
                name: size or open_hub(self.repo, name, self.split, False, self.cache_dir)[1]
                for name, size in sizes.items()
            }
        return sizes

    def open(self, subset: str) -> Iterable[Any]:
        return open_hub(self.repo, subset, self.split, self.streaming, self.cache_dir)[0]


def recipe_take(num_rows: int, fraction: float = 0.01) -> int:
    """How many leading rows the recipe takes from a subset of num_rows rows: max(1, int(fraction * n))."""
    return max(1, int(fraction * num_rows))


def _first_rows(source: SubsetSource, subset: str, take: int) -> Iterator[Any]:
    return itertools.islice(source.open(subset), take)


def finevision_parts(
    source: SubsetSource, subsets: list[str] | None = None, fraction: float = 0.01, take_if_unknown: int = 1000
) -> list[RowPart]:
    """The recipe's rows as one part per subset: the first recipe_take(n, fraction) rows of each.

    Args:
        source: where the subsets come from.
        subsets: which subsets, in this order; None: all, in the source's order.
        fraction: the share of each subset to take from its start (the paper: 0.01).
        take_if_unknown: rows to take from a subset whose size the dataset card does not declare.

    Raises:
        DataSpecError: for a subset the source does not have.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    sizes = source.sizes()
    unknown = [name for name in subsets or [] if name not in sizes]
    if unknown:
        raise DataSpecError(
            f"data spec 'finevision': no subset {', '.join(map(repr, unknown))}; "
            f"choose from {', '.join(list(sizes)[:8])}{', ...' if len(sizes) > 8 else ''} ({len(sizes)} subsets)"
        )
    parts = []
    for name in subsets or list(sizes):
        size = sizes[name]
        if size is None:
            logger.warning("finevision: subset %r declares no size; taking its first %d rows", name, take_if_unknown)
        take = recipe_take(size, fraction) if size is not None else take_if_unknown
        parts.append(RowPart(name, take, functools.partial(_first_rows, source, name, take)))
    return parts


def finevision_samples(
    subsets: list[str] | None = None,
    fraction: float = 0.01,
    max_images: int = 3,
    max_messages: int = 5,
    max_pixels: int = 50176,
    repo: str = FINEVISION_REPO,
    streaming: bool = True,
    *,
    take_if_unknown: int = 1000,
    source: SubsetSource | None = None,
    max_bad_fraction: float = 0.1,
) -> SampleStream:
    """The paper's healing data: the first 1% of each FineVision subset, cleaned (see module doc).

    Samples come subset after subset, in order: shuffle before training. The stream's ``stats``
    count the rows dropped for too many images (``too_many_images``) apart from broken ones.

    Args:
        subsets: which subsets; None: all of them.
        fraction: the share of each subset taken from its start.
        max_images: drop samples with more images.
        max_messages: cut conversations to the whole turns that fit in this many messages.
        max_pixels: downscale images to at most this many pixels.
        repo: the Hub dataset (or a local directory in its layout).
        streaming: stream the subsets instead of downloading them.
        take_if_unknown: rows to take from a subset whose size is not declared.
        source: where subsets come from instead of ``repo`` (e.g. a local mirror); see SubsetSource.
        max_bad_fraction: fail when more than this share of the rows seen are broken.
    """
    rules = SampleRules(max_images=max_images, max_messages=max_messages, max_pixels=max_pixels)
    source = source if source is not None else HubSubsets(repo, streaming=streaming)
    parts = finevision_parts(source, subsets, fraction, take_if_unknown)
    return SampleStream(chain_parts(parts), rules, label="finevision", max_bad_fraction=max_bad_fraction)
