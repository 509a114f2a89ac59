"""Several data sets trained on together: the first one's splits, the others' ``train`` images added to
``train`` (e.g. a user's set with GlaS ``train``, which holds no GlaS test or val image)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..errors import DatasetError
from .base import Dataset, Item, expand_splits


class MixedDataset(Dataset):
    """``first``'s splits and items; ``train`` also holds every other set's ``train`` items, named
    ``<label>-<name>`` (``labels``: one per other set, e.g. its folder's name) so that names stay unique.

    Raises:
        DatasetError: another set without a ``train`` split, or labels that do not match the sets.
    """

    def __init__(self, first: Dataset, others: Sequence[Dataset], labels: Sequence[str]) -> None:
        if len(others) != len(labels):
            raise DatasetError(f"{len(others)} added data sets but {len(labels)} labels")
        for ds in others:
            if "train" not in ds.splits:
                raise DatasetError(f"{ds!r} has no train split to add (it has {', '.join(ds.splits)})")
        self.first, self.others, self.labels = first, list(others), list(labels)
        self.splits = tuple(dict.fromkeys((*first.splits, "train")))

    def __repr__(self) -> str:
        return f"MixedDataset({self.first!r} + train of {', '.join(map(repr, self.others))})"

    def items(self, splits: Sequence[str] | None = None) -> list[Item]:
        """``first``'s items of ``splits``; ``train`` followed by the other sets' ``train`` items."""
        out: list[Item] = []
        for split in expand_splits(splits, self.splits):
            out += self.first.items([split]) if split in self.first.splits else []
            if split == "train":
                for label, ds in zip(self.labels, self.others, strict=True):
                    out += [
                        dataclasses.replace(it, name=f"{label}-{it.name}") for it in ds.items(["train"])
                    ]
        names = [it.name for it in out]
        if len(set(names)) != len(names):
            raise DatasetError(
                "two items of the mixed data sets share a name; give the sets other labels"
            )
        return out
