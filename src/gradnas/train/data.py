"""The batches of a training run: the training set for the weights, the test set for the report and, with
``data.valid_fraction`` > 0, a held-out validation split of the training set for choosing the epoch.

Two ways to get images, chosen by ``data.random_resized_crop``: 0 holds the dataset in memory as one uint8
tensor and augments batches on the device (pad-and-crop, flip, cutout: the CIFAR recipe); > 0 decodes an
ImageFolder batch by batch with a random-resized crop (the ImageNet recipe, ``gradnas.data.stream``).
In a data-parallel run each rank gets its share of every training batch and of the test (and validation) set.

The validation split (:func:`make_valid_split`) is drawn from the seed over the training images (after
``data.subset``), saved in the run folder (split.json) and read back on resume, so a resumed run trains and
measures exactly the images it did; its images are never in a training batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from gradnas.data import Augment, iterate_batches, load_dataset
from gradnas.data.loader import ShuffledBatches
from gradnas.data.sources import FOLDER_FIX, _as_path, dataset_key
from gradnas.data.stream import IMAGENET_MEAN, IMAGENET_STD, StreamBatches, scan_image_folder
from gradnas.distributed import World
from gradnas.errors import GradnasError
from gradnas.train.config import TrainDataConfig


@dataclass
class TrainData:
    """What the loop needs: ``epoch(e, start=0)`` (from step ``start`` on) and ``test()`` yield normalised
    (x, y) batches on the device."""

    epoch: Callable[[int], Iterator]
    test: Callable[[], Iterator]
    steps: int                 # training steps per epoch
    num_classes: int
    channels: int
    image_size: tuple          # (H, W) the network sees
    num_train: int
    num_test: int
    valid: Callable[[], Iterator] | None = None   # the held-out validation batches (None: no split)
    num_valid: int = 0
    split: dict | None = None  # {"num_images", "train", "valid"}: indices into the dataset's training images


_VALID_STREAM = 0x7A11D  # added to the seed: the split never shares a random stream with the subset's choice


def make_valid_split(pool: list, fraction: float, seed: int, *, num_images: int) -> dict:
    """Hold out ``fraction`` of the training images ``pool`` (indices into the dataset's ``num_images`` training
    images), a seeded random choice: {"num_images", "train", "valid"}, both lists sorted."""
    n_valid = max(1, round(fraction * len(pool)))
    if n_valid >= len(pool):
        raise GradnasError(f"data.valid_fraction {fraction:g} of {len(pool)} training images leaves none to train "
                           "on; lower it or use more images")
    perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed + _VALID_STREAM)).tolist()
    return {"num_images": num_images, "fraction": fraction, "train": sorted(pool[i] for i in perm[n_valid:]),
            "valid": sorted(pool[i] for i in perm[:n_valid])}


def check_valid_split(split: dict, *, num_images: int, pool: list, fraction: float, source: str) -> dict:
    """Refuse a saved split that does not belong to these images and settings (the message says why)."""
    try:
        train, valid, n = list(split["train"]), list(split["valid"]), int(split["num_images"])
        saved_fraction = float(split.get("fraction", fraction))
    except (KeyError, TypeError, ValueError):
        raise GradnasError(f"{source} is not a training split (num_images, train, valid); start a new --out") from None
    if n != num_images or saved_fraction != fraction or sorted(train + valid) != sorted(pool) or set(train) & set(valid):
        raise GradnasError(f"{source} does not split these training images (data, data.subset or "
                           "data.valid_fraction changed); resume with the same data or start a new --out")
    return {"num_images": n, "fraction": fraction, "train": train, "valid": valid}


def _split(cfg: TrainDataConfig, n: int, chosen, seed: int, saved: dict | None, source: str) -> dict | None:
    """The validation split of a run (``saved``: split.json's content on resume), or None without one."""
    if not cfg.valid_fraction:
        return None
    pool = chosen.tolist() if chosen is not None else list(range(n))
    if saved is not None:
        return check_valid_split(saved, num_images=n, pool=pool, fraction=cfg.valid_fraction, source=source)
    return make_valid_split(pool, cfg.valid_fraction, seed, num_images=n)


def _pick_subset(n: int, subset: int | None, seed: int, *, key: str = "data.subset",
                 images: str = "training") -> torch.Tensor | None:
    if subset is None:
        return None
    if subset > n:
        raise GradnasError(f"{key} {subset} is larger than the {n} {images} images; lower it or remove it")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:subset]
    return perm.sort().values


def make_train_data(cfg: TrainDataConfig, *, batch_size: int, seed: int, device: torch.device,
                    world: World, split: dict | None = None, split_source: str = "split.json") -> TrainData:
    """Load (or index) the dataset of ``cfg`` and build this rank's training, test and (with
    ``cfg.valid_fraction``) validation batches. ``split``: the saved validation split of a resumed run."""
    dataset_key(cfg.dataset)  # fail fast on an unknown name
    part = world.shard(batch_size)
    if cfg.random_resized_crop:
        return _streamed(cfg, batch_size=batch_size, seed=seed, device=device, world=world, part=part, split=split,
                         split_source=split_source)
    data = load_dataset(cfg.dataset, cfg.data_dir)
    if len(data.test_y) == 0:
        raise GradnasError(f"{cfg.dataset}: the data has no test split; training reports test accuracy, so give "
                           "an ImageFolder with a test/ (or val/) folder next to train/ (a registered dataset: "
                           "register_dataset(..., test=...))")
    mean, std = (cfg.mean, cfg.std) if cfg.mean is not None else (data.mean, data.std)
    if len(mean) != data.channels:
        raise GradnasError(f"data.mean has {len(mean)} values but the images have {data.channels} channels")
    augment = Augment(mean, std, crop_padding=cfg.crop_padding, flip=cfg.flip, cutout=cfg.cutout)
    augment.check_image_size(*data.train_x.shape[-2:])  # before the run folder is made, not at the first batch
    train_x, train_y = data.train_x, data.train_y
    chosen = _pick_subset(len(train_y), cfg.subset, seed)
    valid_split = _split(cfg, len(train_y), chosen, seed, split, split_source)
    valid = None
    if valid_split is not None:
        held = torch.tensor(valid_split["valid"])[world.shard(len(valid_split["valid"]))]
        valid_x, valid_y = train_x[held], train_y[held]
        kept = torch.tensor(valid_split["train"])
        train_x, train_y = train_x[kept], train_y[kept]

        def valid():
            if len(valid_y):
                yield from iterate_batches(valid_x, valid_y, batch_size=batch_size, augment=augment, device=device)
    elif chosen is not None:
        train_x, train_y = train_x[chosen], train_y[chosen]
    batches = ShuffledBatches(train_x, train_y, batch_size=batch_size, augment=augment, device=device, seed=seed,
                              part=part)
    test_x, test_y = data.test_x, data.test_y
    tested = _pick_subset(len(test_y), cfg.test_subset, seed, key="data.test_subset", images="test")
    if tested is not None:
        test_x, test_y = test_x[tested], test_y[tested]
    test_part = world.shard(len(test_y))
    num_test = len(test_y)
    test_x, test_y = test_x[test_part], test_y[test_part]

    def test():
        if len(test_y):
            yield from iterate_batches(test_x, test_y, batch_size=batch_size, augment=augment, device=device)

    return TrainData(epoch=batches.epoch, test=test, steps=len(batches), num_classes=data.num_classes,
                     channels=data.channels, image_size=data.image_size, num_train=len(train_y),
                     num_test=num_test, valid=valid,
                     num_valid=len(valid_split["valid"]) if valid_split else 0, split=valid_split)


def _streamed(cfg: TrainDataConfig, *, batch_size, seed, device, world, part, split, split_source) -> TrainData:
    if dataset_key(cfg.dataset) != "imagefolder":
        raise GradnasError(f"data.random_resized_crop decodes an ImageFolder per batch; it needs dataset "
                           f"imagefolder, not {cfg.dataset!r} (set random_resized_crop: 0 for in-memory data)")
    if cfg.data_dir is None:
        raise GradnasError(f"imagefolder: no --data-dir given; this dataset has no default location. {FOLDER_FIX}")
    source = _as_path(cfg.data_dir)
    if not source.exists():
        raise GradnasError(f"imagefolder: --data-dir {source} does not exist. {FOLDER_FIX}")
    train_items, test_items, classes = scan_image_folder(source, FOLDER_FIX)
    if not test_items:
        raise GradnasError(f"imagefolder: {source} has no test/ or val/ folder; training reports test accuracy, "
                           f"so give one. {FOLDER_FIX}")
    chosen = _pick_subset(len(train_items), cfg.subset, seed)
    valid_split = _split(cfg, len(train_items), chosen, seed, split, split_source)
    valid_items = []
    if valid_split is not None:
        valid_items = [train_items[i] for i in valid_split["valid"]]
        train_items = [train_items[i] for i in valid_split["train"]]
    elif chosen is not None:
        train_items = [train_items[i] for i in chosen.tolist()]
    mean, std = (cfg.mean, cfg.std) if cfg.mean is not None else (IMAGENET_MEAN, IMAGENET_STD)
    if len(mean) != 3:
        raise GradnasError(f"data.mean has {len(mean)} values; streamed images are decoded as RGB (3 channels)")
    size = cfg.random_resized_crop
    batches = StreamBatches(train_items, batch_size=batch_size, size=size, train=True, seed=seed, flip=cfg.flip,
                            workers=cfg.workers, part=part)
    my_tests = test_items[world.shard(len(test_items))]
    tests = StreamBatches(my_tests, batch_size=batch_size, size=size, train=False, eval_resize=cfg.eval_resize,
                          workers=cfg.workers) if my_tests else None
    my_valid = valid_items[world.shard(len(valid_items))] if valid_items else []
    valids = StreamBatches(my_valid, batch_size=batch_size, size=size, train=False, eval_resize=cfg.eval_resize,
                           workers=cfg.workers) if my_valid else None
    # Crop and flip happen per image while decoding; on the device only cutout (if any) and normalisation.
    normalize = Augment(mean, std, crop_padding=0, flip=False, cutout=cfg.cutout)

    def epoch(e, start=0):
        g = torch.Generator(device=device)
        g.manual_seed(((seed * 1_000_003 + e) * 1_009 + world.rank) % 2**64)  # cutout draws: this rank's own stream
        if start and cfg.cutout:  # a resumed epoch: the skipped batches' cutout draws depend on their shape only
            blank = torch.zeros(len(range(batch_size)[part or slice(None)]), 3, size, size, dtype=torch.uint8,
                                device=device)
            for _ in range(start):
                normalize(blank, g, train=True)
        for x, y in batches.epoch(e, start):
            yield normalize(x.to(device, non_blocking=True), g, train=True), y.to(device)

    def evaluation(source):
        def batches_of():
            if source is not None:
                for x, y in source.epoch():
                    yield normalize(x.to(device, non_blocking=True), None, train=False), y.to(device)
        return batches_of

    return TrainData(epoch=epoch, test=evaluation(tests), steps=len(batches), num_classes=len(classes), channels=3,
                     image_size=(size, size), num_train=len(train_items), num_test=len(test_items),
                     valid=evaluation(valids) if valid_split else None, num_valid=len(valid_items), split=valid_split)
