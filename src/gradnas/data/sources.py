"""Datasets by name: ``load_dataset("cifar10" | "fashion-mnist" | "imagefolder" | a registered name, data_dir)``.

:func:`register_dataset` adds a name, from a loader function or a map-style torch Dataset
(``unregister_dataset`` / the ``registered_dataset`` context manager remove it again).

Every loader returns an ImageDataset of whole uint8 tensors (decoding once; augmentation and
normalisation happen later, batched, on the training device) and turns every problem with the input
into a GradnasError that says what is wrong, where it looked and how to fix it.
"""
from __future__ import annotations

import copy
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable

import torch
import torch.utils.data

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

# Dataset key -> loader(data_dir, *, cache_dir) -> ImageDataset. `DATASETS` is a read-only live view:
# add datasets with register_dataset.
_DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "cifar10": load_cifar10,
    "fashion-mnist": load_fashion_mnist,
    "imagefolder": load_imagefolder,
}
DATASETS = MappingProxyType(_DATASETS)
BUILTIN_DATASETS = frozenset(_DATASETS)
DATASET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*")  # a key after normalisation: it goes into configs and flags


def _normalise(name) -> str:
    # Any case, '_' for '-': "Fashion_MNIST" names fashion-mnist.
    return str(name).strip().lower().replace("_", "-")


def dataset_key(name: str) -> str:
    """The registry key of a dataset name (any case, '_' for '-'), or a GradnasError listing the valid ones."""
    key = _normalise(name)
    if key not in _DATASETS:
        raise GradnasError(f"unknown dataset {name!r}; valid names are: {', '.join(sorted(_DATASETS))} (add "
                           "your own with gradnas.data.register_dataset)")
    return key


def _label(value, where: str) -> int:
    """An item's label as an int: a Python int, or an integer 0-d tensor / numpy scalar."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_floating_point \
            and value.dtype != torch.bool:
        return int(value.item())
    if hasattr(value, "dtype") and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int):
        raise GradnasError(f"{where}: the label is {value!r} ({type(value).__name__}), not an int class index")
    if value < 0:
        raise GradnasError(f"{where}: label {value} is negative; labels are class indices 0, 1, ...")
    return value


def _image(value, where: str) -> torch.Tensor:
    """An item's image as uint8 C x H x W: uint8 as it is, floats in [0, 1] scaled by 255 and rounded."""
    if not isinstance(value, torch.Tensor):
        raise GradnasError(f"{where}: the image is a {type(value).__name__}, not a tensor; return C x H x W "
                           "tensors (e.g. torchvision.transforms.ToTensor())")
    if value.dim() != 3:
        raise GradnasError(f"{where}: the image has shape {tuple(value.shape)}, expected C x H x W (3 dimensions)")
    if value.dtype == torch.uint8:
        return value
    if not value.dtype.is_floating_point:
        raise GradnasError(f"{where}: the image is {value.dtype}; give uint8 (0..255) or float (0..1) images")
    lo, hi = float(value.min()), float(value.max())
    if not (0.0 <= lo and hi <= 1.0):  # also false for NaN
        raise GradnasError(f"{where}: float image values span {lo:g}..{hi:g}, outside [0, 1]; give unnormalised "
                           "images (gradnas normalises with the dataset's own mean/std)")
    return (value.detach().cpu().to(torch.float64) * 255.0).round().to(torch.uint8)


def _tensors_from_dataset(dataset, where: str, shape=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 N x C x H x W images, int64 labels) of a map-style dataset of (image, label) items, read once."""
    try:
        n = len(dataset)
    except TypeError:
        raise GradnasError(f"{where}: a map-style dataset needs __len__ and __getitem__ (a "
                           f"torch.utils.data.Dataset), got {type(dataset).__name__}") from None
    if n == 0:
        raise GradnasError(f"{where}: the dataset is empty")
    images, labels = None, torch.empty(n, dtype=torch.int64)
    for i in range(n):
        item = dataset[i]
        at = f"{where} item {i}"
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise GradnasError(f"{at}: expected an (image, label) pair, got {type(item).__name__}")
        image = _image(item[0], at)
        if images is None:
            shape = tuple(image.shape) if shape is None else shape
            images = torch.empty((n, *shape), dtype=torch.uint8)
        if tuple(image.shape) != shape:
            raise GradnasError(f"{at}: the image is {'x'.join(map(str, image.shape))} but the others are "
                               f"{'x'.join(map(str, shape))} (C x H x W); all images must have one size (resize "
                               "them in the dataset)")
        images[i] = image
        labels[i] = _label(item[1], at)
    return images, labels


def _dataset_from_items(key: str, train, test, classes) -> ImageDataset:
    """Convert the registered Dataset(s) into one ImageDataset, checking every item."""
    where = f"register_dataset({key!r})"
    train_x, train_y = _tensors_from_dataset(train, f"{where}: training set")
    if test is not None:
        test_x, test_y = _tensors_from_dataset(test, f"{where}: test set", shape=tuple(train_x.shape[1:]))
    else:
        test_x, test_y = train_x.new_empty((0, *train_x.shape[1:])), train_y.new_empty(0)
    top = int(torch.cat([train_y, test_y]).max())
    if classes is None:
        classes = [str(k) for k in range(top + 1)]
    else:
        classes = [str(c) for c in classes]
        if top >= len(classes):
            raise GradnasError(f"{where}: label {top} is out of range for the {len(classes)} class names given; "
                               f"labels must be 0..{len(classes) - 1}")
    mean, std = channel_stats(train_x)
    return ImageDataset(name=key, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                        classes=classes, mean=mean, std=std)


def _is_map_dataset(source) -> bool:
    return isinstance(source, torch.utils.data.Dataset) or (
        hasattr(source, "__getitem__") and hasattr(source, "__len__") and not callable(source))


def register_dataset(name: str, source, *, test=None, classes=None, replace: bool = False) -> str:
    """Make dataset ``name`` loadable by name (``data.dataset`` of searches and training runs); returns its key.

    ``source`` is either

    * a loader function ``(data_dir) -> ImageDataset``, called by every load with the configured
      ``data_dir`` (None when none is given); ``test`` and ``classes`` then belong in its ImageDataset, or
    * a map-style ``torch.utils.data.Dataset`` of (image, label) items: C x H x W tensors, uint8 or float in
      [0, 1] (scaled by 255 and rounded to uint8), all of one size, and int labels. It is read once, now,
      into an ImageDataset whose mean/std come from its images; ``test`` is an optional Dataset of the same
      kind (no test set: an empty test split), ``classes`` optional class names (default "0", "1", ...; given,
      every label must index them). Such a dataset has no files, so it refuses a ``data_dir``.

    Names follow dataset_key (any case, '_' for '-'; letters, digits, '.', '-'). ``replace``: allow a new
    source for a name registered earlier; built-in datasets are never replaced. Every problem is one
    GradnasError naming the item.
    """
    key = _normalise(name)
    where = f"register_dataset({name!r})"
    if not DATASET_NAME.fullmatch(key):
        raise GradnasError(f"{where}: a dataset name is letters, digits, '-', '_' and '.', starting with a letter "
                           "or digit")
    if key in BUILTIN_DATASETS:
        raise GradnasError(f"{where}: {key!r} is a built-in dataset and cannot be replaced; choose another name")
    if key in _DATASETS and not replace:
        raise GradnasError(f"{where}: dataset {key!r} is already registered; pass replace=True to replace it, or "
                           "unregister_dataset it first")
    if _is_map_dataset(source):
        if test is not None and not _is_map_dataset(test):
            raise GradnasError(f"{where}: test= must be a map-style Dataset like the training set, got "
                               f"{type(test).__name__}")
        loader = _in_memory_loader(key, _dataset_from_items(key, source, test, classes))
    elif callable(source):
        if test is not None or classes is not None:
            raise GradnasError(f"{where}: test= and classes= go with a Dataset source; a loader function returns "
                               "them in its ImageDataset")
        loader = _function_loader(key, source)
    else:
        raise GradnasError(f"{where}: the source must be a loader function (data_dir) -> ImageDataset or a "
                           f"map-style torch Dataset of (image, label) items, got {type(source).__name__}")
    _DATASETS[key] = loader
    return key


def _in_memory_loader(key: str, data: ImageDataset):
    def load(data_dir=None, *, cache_dir=None) -> ImageDataset:
        if data_dir is not None:
            raise GradnasError(f"{key}: this dataset was registered from in-memory images and reads no files; "
                               f"remove data_dir (--data-dir {data_dir})")
        return copy.copy(data)  # the tensors are shared; a caller may rebind fields of its own copy
    return load


def _function_loader(key: str, function):
    def load(data_dir=None, *, cache_dir=None) -> ImageDataset:
        # cache_dir is for decoded image trees, which a user's loader does not read through gradnas.
        data = function(data_dir)
        if not isinstance(data, ImageDataset):
            raise GradnasError(f"{key}: the registered loader returned {type(data).__name__}, not an "
                               "ImageDataset (gradnas.data.ImageDataset)")
        return data
    return load


def unregister_dataset(name: str) -> None:
    """Remove a dataset added with :func:`register_dataset` (built-in ones stay)."""
    key = _normalise(name)
    if key in BUILTIN_DATASETS:
        raise GradnasError(f"dataset {key!r} is built in and cannot be unregistered")
    if key not in _DATASETS:
        raise GradnasError(f"dataset {name!r} is not registered; registered datasets: "
                           f"{', '.join(sorted(set(_DATASETS) - BUILTIN_DATASETS)) or 'none'}")
    del _DATASETS[key]


@contextmanager
def registered_dataset(name: str, source, *, test=None, classes=None):
    """``register_dataset`` for the duration of a ``with`` block; yields the key, unregisters afterwards."""
    key = register_dataset(name, source, test=test, classes=classes)
    try:
        yield key
    finally:
        unregister_dataset(key)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 cache_dir: str | os.PathLike | None = None) -> ImageDataset:
    """Load dataset ``name`` (see DATASETS) from ``data_dir`` (None: the dataset's default place).

    ``cache_dir`` holds decoded image trees (default $GRADNAS_CACHE or ~/.cache/gradnas).
    """
    key = dataset_key(name)
    loader = _DATASETS[key]
    memo = _memo_key(key, data_dir, cache_dir)
    if memo is not None and memo in _LOADED:
        return _LOADED[memo]
    try:
        data = loader(data_dir, cache_dir=cache_dir)
    except GradnasError as exc:
        # Name the dataset in every message (the helpers deep down only know files and folders).
        msg = str(exc)
        if msg.startswith(f"{key}:"):
            raise
        raise GradnasError(f"{key}: {msg}") from None
    if memo is not None:
        _LOADED.clear()  # one dataset kept: what a script of many searches on the same data reuses
        _LOADED[memo] = data
    return data


# A built-in dataset decoded in this process, by (name, where, the sizes and times of its files and of the
# decoded-tree cache's), so that searches and trainings of one process (a notebook, `gradnas reproduce
# --in-process`, the tests) decode it once.
# Whoever gets it only reads its tensors (every loader and search indexes copies out of them).
_LOADED: dict = {}


def _memo_key(key: str, data_dir, cache_dir):
    if key not in BUILTIN_DATASETS or data_dir is None:
        return None
    from gradnas.data.cache import default_cache_dir
    path = Path(data_dir)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        entries = [path] + (sorted(path.iterdir()) if path.is_dir() else [])
        if cache_root.is_dir():  # a decoded tree rewritten or damaged there is read again
            entries += sorted(cache_root.iterdir())
        stats = tuple((str(e), e.stat().st_mtime_ns, e.stat().st_size) for e in entries)
    except OSError:
        return None  # let the loader say what is wrong with the path
    return key, str(path.resolve()), stats
