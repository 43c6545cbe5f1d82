"""Datasets by name: ``load_dataset("cifar10" | "fashion-mnist" | "imagefolder", data_dir)``.

Every loader returns an ImageDataset of whole uint8 tensors (decoding once; augmentation and
normalisation happen later, batched, on the training device) and turns every problem with the input
into a GradnasError that says what is wrong, where it looked and how to fix it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from gradnas.data import cifar_pickle, folder, idx
from gradnas.errors import GradnasError

# ------------------------------------------------------------------------------------ dataset


@dataclass
class ImageDataset:
    """A labelled image dataset held as whole tensors (train and test split)."""
    name: str
    train_x: torch.Tensor  # uint8, N x C x H x W
    train_y: torch.Tensor  # int64, N
    test_x: torch.Tensor   # uint8, M x C x H x W (M may be 0)
    test_y: torch.Tensor   # int64, M
    classes: list[str]
    mean: tuple[float, ...]  # per channel, in [0, 1], for normalisation
    std: tuple[float, ...]

    def __post_init__(self):
        # Catch inconsistent tensors here, once, rather than as a shape error deep in training.
        tx, ty, vx, vy = self.train_x, self.train_y, self.test_x, self.test_y
        ok = (tx.dtype == vx.dtype == torch.uint8 and tx.dim() == vx.dim() == 4
              and tx.shape[1:] == vx.shape[1:] and ty.shape == tx.shape[:1] and vy.shape == vx.shape[:1]
              and len(self.mean) == len(self.std) == tx.shape[1])
        if not ok:
            raise GradnasError(
                f"dataset {self.name!r} is malformed: train {tuple(tx.shape)} {tx.dtype}, test "
                f"{tuple(vx.shape)} {vx.dtype}, labels {tuple(ty.shape)}/{tuple(vy.shape)}, "
                f"{len(self.mean)} mean values; expected uint8 N x C x H x W images, one label each "
                f"and C mean/std values"
            )
        self.train_y = ty.to(torch.int64)
        self.test_y = vy.to(torch.int64)
        for labels in (self.train_y, self.test_y):
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.classes)):
                raise GradnasError(
                    f"dataset {self.name!r} has labels outside 0..{len(self.classes) - 1} "
                    f"({len(self.classes)} classes)"
                )
        self.train_x = tx.contiguous()
        self.test_x = vx.contiguous()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])


def channel_stats(x: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, scaled to [0, 1].

    Works in chunks of float64 so 50k images never need a float copy of the whole set.
    """
    n, c, h, w = x.shape
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, n, chunk):
        b = x[i:i + chunk].to(torch.float64)
        s += b.sum(dim=(0, 2, 3))
        s2 += (b * b).sum(dim=(0, 2, 3))
    count = max(n * h * w, 1)
    mean = s / count / 255.0
    std = (s2 / count / 255.0**2 - mean**2).clamp_min(0).sqrt()
    # A constant channel would divide by zero; leave it unscaled instead.
    return tuple(float(m) for m in mean), tuple(float(v) if v > 0 else 1.0 for v in std)


def _as_path(data_dir) -> Path:
    # Absolute, so messages say exactly where we looked even when given a relative path.
    return Path(os.path.abspath(Path(os.fspath(data_dir)).expanduser()))


# ------------------------------------------------------------------------------------ fashion-mnist

FASHION_DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {  # split part -> IDX base name
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_FIX = (
    "Fix: run 'apt-get install dataset-fashion-mnist' (it puts the four IDX files in "
    f"{FASHION_DEFAULT_DIR}/) or pass --data-dir pointing at a folder holding "
    + ", ".join(f"{n}.gz" for n in FASHION_FILES.values()) + "."
)


def load_fashion_mnist(data_dir=None, *, cache_dir=None) -> ImageDataset:
    """Fashion-MNIST from its four IDX files (.gz or plain); default dir /usr/share/datasets/fashion-mnist."""
    root = _as_path(data_dir) if data_dir is not None else FASHION_DEFAULT_DIR
    given = "" if data_dir is not None else " (the default location; no --data-dir given)"
    if not root.is_dir():
        raise GradnasError(f"fashion-mnist: data folder {root}{given} does not exist. {FASHION_FIX}")

    def find(base: str, d: Path) -> Path | None:
        return next((p for p in (d / f"{base}.gz", d / base) if p.is_file()), None)

    # Also accept the parent of a fashion-mnist/ folder.
    if not any(find(b, root) for b in FASHION_FILES.values()) and (root / "fashion-mnist").is_dir():
        root = root / "fashion-mnist"
    files = {k: find(b, root) for k, b in FASHION_FILES.items()}
    missing = [FASHION_FILES[k] for k, p in files.items() if p is None]
    if missing:
        raise GradnasError(
            f"fashion-mnist: {', '.join(missing)} not found in {root}{given} (looked for "
            f"<name>.gz and <name>). {FASHION_FIX}"
        )
    arrays = {k: idx.read_idx(p, ndim=3 if k.endswith("_x") else 1, fix=FASHION_FIX)
              for k, p in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if len(x) != len(y):
            raise GradnasError(
                f"fashion-mnist: {files[split + '_x']} holds {len(x)} images but "
                f"{files[split + '_y']} holds {len(y)} labels. {FASHION_FIX}"
            )
        if len(y) and int(y.max()) >= len(FASHION_CLASSES):
            raise GradnasError(
                f"fashion-mnist: {files[split + '_y']} has label {int(y.max())}, but there are only "
                f"{len(FASHION_CLASSES)} classes. {FASHION_FIX}"
            )
    t = {k: torch.from_numpy(a) for k, a in arrays.items()}
    return ImageDataset(
        name="fashion-mnist",
        train_x=t["train_x"].unsqueeze(1), train_y=t["train_y"].long(),
        test_x=t["test_x"].unsqueeze(1), test_y=t["test_y"].long(),
        classes=list(FASHION_CLASSES), mean=(0.2860,), std=(0.3530,),
    )


# ------------------------------------------------------------------------------------ cifar10

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_PICKLE_DIR = "cifar-10-batches-py"
CIFAR_ARCHIVE = "cifar10-jpeg.tar.gz"
# Searched, relative to the working directory, when no --data-dir is given.
CIFAR_DEFAULTS = (Path("data") / CIFAR_PICKLE_DIR, Path("..") / "shared" / "data" / CIFAR_ARCHIVE)
CIFAR_FIX = (
    "Fix: point --data-dir at a cifar-10-batches-py folder (the official 'python version'), an "
    "ImageFolder tree (train/<class>/*.png|jpg and test/<class>/...) or a .tar.gz of one "
    f"(e.g. {CIFAR_ARCHIVE})."
)


def _cifar_from_images(source: Path, cache_dir) -> ImageDataset:
    tree = folder.load_image_tree(source, fix=CIFAR_FIX, cache_dir=cache_dir)
    shape = tuple(tree["train_x"].shape[1:])
    if shape != (3, 32, 32):
        raise GradnasError(
            f"cifar10: the images in {source} are {'x'.join(map(str, shape))} (channels x height x "
            f"width), not CIFAR-10's 3x32x32; load them as dataset 'imagefolder' instead. {CIFAR_FIX}"
        )
    return ImageDataset(name="cifar10", train_x=tree["train_x"], train_y=tree["train_y"],
                        test_x=tree["test_x"], test_y=tree["test_y"], classes=list(tree["classes"]),
                        mean=CIFAR_MEAN, std=CIFAR_STD)


def _cifar_from_pickles(batches: Path) -> ImageDataset:
    tx, ty, vx, vy, classes = cifar_pickle.read_cifar_folder(batches, CIFAR_FIX)
    return ImageDataset(name="cifar10", train_x=torch.from_numpy(tx), train_y=torch.from_numpy(ty),
                        test_x=torch.from_numpy(vx), test_y=torch.from_numpy(vy), classes=classes,
                        mean=CIFAR_MEAN, std=CIFAR_STD)


def load_cifar10(data_dir=None, *, cache_dir=None) -> ImageDataset:
    """CIFAR-10 from a cifar-10-batches-py folder, an ImageFolder tree or a tar archive of one."""
    if data_dir is None:
        found = next((p for p in CIFAR_DEFAULTS if p.exists()), None)
        if found is None:
            looked = ", ".join(f"{p.as_posix()} (= {os.path.abspath(p)})" for p in CIFAR_DEFAULTS)
            raise GradnasError(f"cifar10: no --data-dir given and no data found; looked for {looked}. "
                               f"{CIFAR_FIX}")
        path = found
    else:
        path = _as_path(data_dir)
        if not path.exists():
            raise GradnasError(f"cifar10: --data-dir {path} does not exist. {CIFAR_FIX}")
    if path.is_file():
        if not folder.is_archive(path):
            raise GradnasError(f"cifar10: {path} is a file but not a .tar/.tar.gz/.tgz archive. {CIFAR_FIX}")
        return _cifar_from_images(path, cache_dir)
    if (path / "data_batch_1").is_file() or (path / cifar_pickle.TEST_BATCH).is_file():
        return _cifar_from_pickles(path)
    if (path / CIFAR_PICKLE_DIR).is_dir():
        return _cifar_from_pickles(path / CIFAR_PICKLE_DIR)
    if (path / CIFAR_ARCHIVE).is_file():  # e.g. --data-dir ../shared/data
        return _cifar_from_images(path / CIFAR_ARCHIVE, cache_dir)
    return _cifar_from_images(path, cache_dir)


# ------------------------------------------------------------------------------------ imagefolder

FOLDER_FIX = (
    "Fix: pass --data-dir pointing at an ImageFolder tree -- <root>/<class>/<image>, or "
    "<root>/train/<class>/<image> with optional <root>/test/ (or val/) -- or a .tar.gz of one."
)


def load_imagefolder(data_dir=None, *, cache_dir=None) -> ImageDataset:
    """Any ImageFolder tree (or tar archive of one); mean/std are computed from its training images."""
    if data_dir is None:
        raise GradnasError(f"imagefolder: no --data-dir given; this dataset has no default location. {FOLDER_FIX}")
    path = _as_path(data_dir)
    if not path.exists():
        raise GradnasError(f"imagefolder: --data-dir {path} does not exist. {FOLDER_FIX}")
    if path.is_file() and not folder.is_archive(path):
        raise GradnasError(f"imagefolder: {path} is a file but not a .tar/.tar.gz/.tgz archive. {FOLDER_FIX}")
    tree = folder.load_image_tree(path, fix=FOLDER_FIX, cache_dir=cache_dir)
    mean, std = channel_stats(tree["train_x"])
    return ImageDataset(name="imagefolder", train_x=tree["train_x"], train_y=tree["train_y"],
                        test_x=tree["test_x"], test_y=tree["test_y"], classes=list(tree["classes"]),
                        mean=mean, std=std)


# ------------------------------------------------------------------------------------ registry

DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "cifar10": load_cifar10,
    "fashion-mnist": load_fashion_mnist,
    "imagefolder": load_imagefolder,
}


def dataset_key(name: str) -> str:
    """The registry key of a dataset name (any case, '_' for '-'), or a GradnasError listing the valid ones."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise GradnasError(f"unknown dataset {name!r}; valid names are: {', '.join(sorted(DATASETS))}")
    return key


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Load dataset ``name`` (see DATASETS) from ``data_dir`` (None: the dataset's default place).

    ``cache_dir`` holds decoded image trees (default $GRADNAS_CACHE or ~/.cache/gradnas).
    """
    key = dataset_key(name)
    loader = DATASETS[key]
    try:
        return loader(data_dir, cache_dir=cache_dir)
    except GradnasError as exc:
        # Name the dataset in every message (the helpers deep down only know files and folders).
        msg = str(exc)
        if msg.startswith(f"{key}:"):
            raise
        raise GradnasError(f"{key}: {msg}") from None
