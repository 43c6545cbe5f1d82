"""Batches for architecture search and evaluation, drawn from whole tensors on the device.

Search (DARTS / MiLeNAS) splits the training set in two halves: one trains the weights w, the
other the architecture parameters alpha, and each step takes one batch from each. All order and
augmentation randomness comes from generators seeded by (seed, epoch), never from global RNG state,
so a run resumed at an epoch boundary sees exactly the batches it would have seen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from gradnas.data.augment import Augment
from gradnas.errors import GradnasError

Batch = tuple[torch.Tensor, torch.Tensor]

# Where the architecture batch of each step comes from (single-level paper, Table 1):
#   split       the architecture half of the split (DARTS, MiLeNAS)
#   same-split  another batch of the weight half: this epoch's next weight batch, so never the same images
#   same-batch  the very batch that trains the weights (the same tensors)
ALPHA_DATA = ("split", "same-split", "same-batch")


@dataclass(frozen=True, eq=False)
class SearchSplit:
    """Disjoint index sets into the training set: ``weight_idx`` for w, ``arch_idx`` for alpha."""
    seed: int
    fraction: float
    weight_idx: torch.Tensor  # int64
    arch_idx: torch.Tensor    # int64

    def __eq__(self, other) -> bool:
        # Field-wise tensor == would be ambiguous; compare contents instead.
        return (isinstance(other, SearchSplit) and self.seed == other.seed
                and self.fraction == other.fraction
                and torch.equal(self.weight_idx, other.weight_idx)
                and torch.equal(self.arch_idx, other.arch_idx))

    __hash__ = None  # mutable tensor contents: not hashable

    def to_dict(self) -> dict:
        """JSON-able form (for checkpoints / run records)."""
        return {"seed": int(self.seed), "fraction": float(self.fraction),
                "weight_idx": self.weight_idx.tolist(), "arch_idx": self.arch_idx.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "SearchSplit":
        """Inverse of to_dict; validates that the two index sets are disjoint and non-negative."""
        try:
            split = cls(seed=int(d["seed"]), fraction=float(d["fraction"]),
                        weight_idx=torch.tensor(d["weight_idx"], dtype=torch.int64).reshape(-1),
                        arch_idx=torch.tensor(d["arch_idx"], dtype=torch.int64).reshape(-1))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise GradnasError(
                f"invalid search split record ({type(exc).__name__}: {exc}); expected keys seed, "
                f"fraction, weight_idx, arch_idx as written by SearchSplit.to_dict()"
            ) from None
        both = torch.cat([split.weight_idx, split.arch_idx])
        if both.numel() and (int(both.min()) < 0 or torch.unique(both).numel() != both.numel()):
            raise GradnasError("invalid search split record: indices must be non-negative and the two "
                               "halves disjoint; was the record edited by hand?")
        return split


def make_search_split(num_train: int, *, fraction: float = 0.5, seed: int = 0,
                      subset: int | None = None) -> SearchSplit:
    """Shuffle range(num_train) with ``seed``, keep the first ``subset`` (all if None), then put the
    first ``floor(fraction * n)`` in the weight half and the rest in the architecture half. ``fraction`` 1:
    every image in the weight half, none in the architecture half (a search on the full training set)."""
    if not 0.0 < fraction <= 1.0:
        raise GradnasError(f"search split fraction must be in (0, 1], got {fraction}")
    n = num_train if subset is None else subset
    if subset is not None and not 0 < subset <= num_train:
        raise GradnasError(f"subset must be between 1 and the training set size {num_train}, got {subset}")
    n_w = int(fraction * n)
    if n_w < 1 or (n - n_w < 1 and fraction < 1.0):
        raise GradnasError(
            f"a search split of {n} images with fraction {fraction} leaves one half empty; use more "
            f"images (subset) or a fraction nearer 0.5"
        )
    perm = torch.randperm(num_train, generator=torch.Generator().manual_seed(seed))[:n]
    # Sorted halves: order within a half is irrelevant (batches are reshuffled every epoch), and
    # ascending indices make to_dict readable and device gathers more local.
    return SearchSplit(seed=seed, fraction=fraction,
                       weight_idx=perm[:n_w].sort().values, arch_idx=perm[n_w:].sort().values)


def _check_xy(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
        raise GradnasError(f"expected uint8 images N x C x H x W and N labels, got {x.dtype} "
                           f"{tuple(x.shape)} and {tuple(y.shape)}")


class PairedBatches:
    """Paired (train batch, arch batch) per step, as in DARTS/MiLeNAS: one epoch = min(len(w), len(a)) // batch steps.

    ``alpha_data`` (see ``ALPHA_DATA``) picks where the architecture batch comes from. With ``same-split``
    and ``same-batch`` only the weight half is read, so an epoch is len(w) // batch steps; the
    architecture half then serves only the end-of-epoch validation.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, split: SearchSplit, *, batch_size: int,
                 augment: Augment, device: torch.device | str, seed: int, alpha_data: str = "split"):
        _check_xy(x, y)
        if alpha_data not in ALPHA_DATA:
            raise GradnasError(f"unknown alpha_data {alpha_data!r}; valid: {', '.join(ALPHA_DATA)}")
        self.alpha_data = alpha_data
        n_w, n_a = len(split.weight_idx), len(split.arch_idx)
        fits = min(n_w, n_a) if alpha_data == "split" else n_w  # same-split / same-batch read the weight half only
        if batch_size < 1 or batch_size > fits:
            raise GradnasError(
                f"batch size {batch_size} does not fit the search split ({n_w} weight / {n_a} "
                f"architecture images); use a batch size between 1 and {fits} or more data"
            )
        top = int(torch.cat([split.weight_idx, split.arch_idx]).max())
        if top >= len(x):
            raise GradnasError(f"the search split indexes image {top} but the training set has only "
                               f"{len(x)}; was it made for another dataset or subset?")
        self.device = torch.device(device)
        # Moved once: each step then only gathers a batch on the device (no host-to-device copies).
        self.x = x.to(self.device)
        self.y = y.to(self.device, dtype=torch.int64)
        self.weight_idx = split.weight_idx.to(self.device)
        self.arch_idx = split.arch_idx.to(self.device)
        self.batch_size = int(batch_size)
        self.augment = augment
        self.seed = int(seed)
        # the last incomplete batch is dropped
        self._steps = (min(n_w, n_a) if alpha_data == "split" else n_w) // self.batch_size
        if alpha_data == "same-split" and self._steps < 2:
            raise GradnasError(f"alpha_data same-split takes the architecture batch from another batch of the "
                               f"weight half, but {n_w} weight images make only {self._steps} batch of "
                               f"{self.batch_size}; use a smaller batch size or more data")

    def __len__(self) -> int:
        return self._steps

    def _generator(self, epoch: int) -> torch.Generator:
        g = torch.Generator(device=self.device)
        # Folded into manual_seed's accepted range; distinct (seed, epoch) pairs give distinct streams.
        g.manual_seed((self.seed * 1_000_003 + int(epoch)) % 2**64)
        return g

    def _orders(self, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's shuffled weight-half and arch-half indices (drawn first from ``g``)."""
        pw = self.weight_idx[torch.randperm(len(self.weight_idx), generator=g, device=self.device)]
        pa = self.arch_idx[torch.randperm(len(self.arch_idx), generator=g, device=self.device)]
        return pw, pa

    def epoch_indices(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per step of ``epoch``, the (w indices, a indices) into x that ``epoch(epoch)`` uses."""
        pw, pa = self._orders(self._generator(epoch))
        return [(self._slice(pw, k), self._arch_slice(pw, pa, k)) for k in range(self._steps)]

    def _slice(self, order: torch.Tensor, k: int) -> torch.Tensor:
        return order[k * self.batch_size:(k + 1) * self.batch_size]

    def _arch_slice(self, pw: torch.Tensor, pa: torch.Tensor, k: int) -> torch.Tensor:
        if self.alpha_data == "split":
            return self._slice(pa, k)
        if self.alpha_data == "same-split":  # the next weight batch (wrapping): same half, other images
            return self._slice(pw, (k + 1) % self._steps)
        return self._slice(pw, k)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[Batch, Batch]]:
        """Yield ((x_w, y_w), (x_a, y_a)) for every step of ``epoch`` from step ``start`` on (a run resumed
        mid-epoch), augmented, on the device."""
        g = self._generator(epoch)
        pw, pa = self._orders(g)
        for k in range(self._steps):
            wi, ai = self._slice(pw, k), self._arch_slice(pw, pa, k)
            # Both halves are augmented (train=True), as DARTS does for its search split; the draws
            # continue from the same generator, after the permutations. Skipped steps are augmented too
            # (and thrown away), so the generator is where it would be.
            xw = self.augment(self.x.index_select(0, wi), g, train=True)
            train_batch = (xw, self.y.index_select(0, wi))
            if self.alpha_data == "same-batch":
                if k >= start:
                    yield train_batch, train_batch  # the very same tensors, augmentation included
                continue
            xa = self.augment(self.x.index_select(0, ai), g, train=True)
            if k >= start:
                yield train_batch, (xa, self.y.index_select(0, ai))


def iterate_batches(x: torch.Tensor, y: torch.Tensor, *, batch_size: int, augment: Augment,
                    device: torch.device | str) -> Iterator[Batch]:
    """Sequential, normalised (not augmented) batches for evaluation; the last partial batch is kept."""
    _check_xy(x, y)
    if batch_size < 1:
        raise GradnasError(f"batch size must be at least 1, got {batch_size}")
    device = torch.device(device)
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device, non_blocking=True)
        yb = y[start:start + batch_size].to(device, dtype=torch.int64, non_blocking=True)
        yield augment(xb, None, train=False), yb


class ShuffledBatches:
    """Training batches from whole tensors on the device: a permutation per epoch seeded by (seed, epoch),
    the last incomplete batch dropped, each batch augmented on the device.

    ``part`` keeps one slice of every (global) batch: a data-parallel rank draws and augments the same
    global batch as every other rank, and keeps its share, so K processes see exactly the images and
    augmentations one process would.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, augment: Augment,
                 device: torch.device | str, seed: int, part: slice | None = None):
        _check_xy(x, y)
        if batch_size < 1 or batch_size > len(x):
            raise GradnasError(f"batch size {batch_size} does not fit the {len(x)} training images; use a batch "
                               f"size between 1 and {len(x)}")
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device, dtype=torch.int64)
        self.batch_size = int(batch_size)
        self.augment = augment
        self.seed = int(seed)
        self.part = part if part is not None else slice(None)
        self._steps = len(x) // self.batch_size

    def __len__(self) -> int:
        return self._steps

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Yield this epoch's (x, y) batches (this rank's part of each), augmented, on the device, from step
        ``start`` on; skipped steps still draw their augmentation, so the rest is what it would be."""
        g = torch.Generator(device=self.device)
        g.manual_seed((self.seed * 1_000_003 + int(epoch)) % 2**64)
        order = torch.randperm(len(self.x), generator=g, device=self.device)
        b = self.batch_size
        for k in range(self._steps):
            idx = order[k * b:(k + 1) * b]
            xb = self.augment(self.x.index_select(0, idx), g, train=True)
            if k >= start:
                yield xb[self.part], self.y.index_select(0, idx)[self.part]
