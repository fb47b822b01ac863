"""Hub datasets in the sample schema (see ``interlace.data.rows``), opened with image decoding off."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from interlace.data.rows import DataSpecError


def _images_feature_decodes(feature: Any) -> bool:
    import datasets

    inner = feature[0] if isinstance(feature, list) and feature else getattr(feature, "feature", None)
    return isinstance(inner, datasets.Image)


def num_examples(splits: Any, split: str) -> int | None:
    """The row count a dataset card declares for ``split``; None when it declares none."""
    # datasets gives a SplitInfo, or a plain dict when the card declares no sizes; its
    # num_examples defaults to 0, which means "not declared", not "empty".
    info = (splits or {}).get(split)
    count = info.get("num_examples") if isinstance(info, dict) else getattr(info, "num_examples", None)
    return count or None


def open_hub(
    repo: str, subset: str | None = None, split: str = "train", streaming: bool = True, cache_dir: str | None = None
) -> tuple[Iterable[dict], int | None]:
    """Open a Hub dataset split (or a local directory in the Hub layout) with image decoding off.

    Images come back as ``{"bytes", "path"}`` so that a corrupt image is a skipped row, not an
    exception inside ``datasets``' iterator.

    Returns:
        The rows, and the split's row count when the dataset card declares it (else None).

    Raises:
        DataSpecError: when the dataset cannot be opened or lacks ``images``/``texts`` columns.
    """
    import datasets

    label = repo + (f":{subset}" if subset else "") + f"@{split}"
    try:
        dataset = datasets.load_dataset(repo, subset, split=split, streaming=streaming, cache_dir=cache_dir)
    except Exception as error:  # DatasetNotFoundError, ValueError (unknown subset), ConnectionError...
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataSpecError(
            f"data spec {label!r}: cannot open it as a Hub dataset ({reason}); "
            "check the id, :subset and @split, or pass a local path"
        ) from error
    if dataset.features is not None:  # None: a stream whose columns are only known once read
        missing = [column for column in ("images", "texts") if column not in dataset.features]
        if missing:
            raise DataSpecError(
                f"data spec {label!r}: no {' or '.join(map(repr, missing))} column "
                f"(has {', '.join(dataset.features)}); "
                "use a dataset in FineVision's schema: images, texts=[{user, assistant}]"
            )
        if _images_feature_decodes(dataset.features["images"]):
            dataset = dataset.cast_column("images", [datasets.Image(decode=False)])
    size = len(dataset) if not streaming else num_examples(dataset.info.splits, split)
    return dataset, size
