"""ImageFolder data decoded batch by batch, for image sets too large for memory or whose images differ
in size (ImageNet). The in-memory path (``sources.py``) is for sets of same-size images.

Training images get a random-resized crop (:func:`gradnas.data.augment.random_resized_crop_box`) and a
horizontal flip, test images a resize of the shorter side and a centre crop; the crop is resampled once,
bilinearly, by Pillow. Every epoch's order is a permutation seeded by (seed, epoch), and each sample's
crop and flip come from a ``random.Random`` seeded by (seed, epoch, position in the epoch): a sample does
not depend on which worker decodes it or on how many processes share the batch, and a resumed run sees
exactly the same images. Worker processes (torch's DataLoader) only decode; normalisation happens
batched on the device (``Augment``).
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from gradnas.data import folder
from gradnas.data.augment import random_resized_crop_box, resize_center_crop_box
from gradnas.errors import GradnasError

# The usual ImageNet statistics, for streamed sets (computing a set's own would mean decoding all of it).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def scan_image_folder(source: Path, fix: str) -> tuple:
    """(train items, test items, classes) of an ImageFolder directory or archive, without decoding.

    Items are (payload, label): a file path for a directory, the file's bytes for an archive (whose
    compressed images are then held in memory). Layout rules and ordering are those of ``folder.py``.
    """
    source = Path(source)
    if source.is_dir():
        names = folder._list_dir(source)
        payload_of = lambda n: str(source / n)  # noqa: E731
        where = f"folder {source}"
    elif folder.is_archive(source):
        members = dict(folder._archive_items(source, fix))
        names, payload_of = list(members), members.__getitem__
        where = f"archive {source}"
    else:
        raise GradnasError(f"{source} is neither a folder nor a .tar/.tar.gz archive. {fix}")
    layout = folder.resolve_layout(names, where, fix)
    train = [(payload_of(n), label) for n, label in layout.train]
    test = [(payload_of(n), label) for n, label in layout.test]
    return train, test, list(layout.classes)


def _open_rgb(payload) -> Image.Image:
    if isinstance(payload, str):
        with open(payload, "rb") as f:
            payload = f.read()
    im = Image.open(io.BytesIO(payload))
    im.load()
    return im if im.mode == "RGB" else im.convert("RGB")  # grayscale and CMYK JPEGs exist in ImageNet


def sample_seed(seed: int, epoch: int, position: int) -> str:
    """The seed of one sample's random crop and flip (a string: random.Random hashes it with SHA-512,
    the same in every process)."""
    return f"{seed}/{epoch}/{position}"


class _Samples(torch.utils.data.Dataset):
    """Decodes and crops one sample; keys are (item index, sample seed or None for a test sample)."""

    def __init__(self, items, *, size: int, flip: bool, eval_resize: int):
        self.items, self.size, self.flip, self.eval_resize = items, size, flip, eval_resize

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key):
        index, seed = key
        payload, label = self.items[index]
        try:
            im = _open_rgb(payload)
        except Exception as exc:  # Pillow raises many types; report the file, not a worker traceback
            name = payload if isinstance(payload, str) else f"item {index}"
            return None, label, f"cannot decode image {name} ({type(exc).__name__}: {exc})"
        if seed is not None:
            rng = random.Random(seed)
            top, left, h, w = random_resized_crop_box(im.height, im.width, rng)
            flip = self.flip and rng.random() < 0.5
        else:
            top, left, h, w = resize_center_crop_box(im.height, im.width, self.eval_resize, self.size)
            flip = False
        im = im.resize((self.size, self.size), Image.BILINEAR, box=(left, top, left + w, top + h))
        if flip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1), label, None


def _collate(samples):
    errors = [e for _, _, e in samples if e is not None]
    if errors:  # raised in the main process, where it becomes one clear message
        return None, None, errors
    x = torch.stack([s[0] for s in samples])
    y = torch.tensor([s[1] for s in samples], dtype=torch.int64)
    return x, y, None


class StreamBatches:
    """uint8 batches decoded from image files: shuffled and randomly cropped for training, in order and
    centre-cropped for testing (``train=False``: every image once, the last batch may be smaller).

    ``part`` keeps one slice of every global training batch (a data-parallel rank's share; only that share
    is decoded). For testing, give this rank's share of the items instead.
    """

    def __init__(self, items, *, batch_size: int, size: int, train: bool, seed: int = 0, flip: bool = True,
                 eval_resize: int | None = None, workers: int = 0, part: slice | None = None):
        if not items:
            raise GradnasError("no images to stream")
        if train and batch_size > len(items):
            raise GradnasError(f"batch size {batch_size} does not fit the {len(items)} training images")
        self.items, self.batch_size, self.train, self.seed = items, int(batch_size), train, int(seed)
        self.workers = int(workers)
        self.part = part if part is not None else slice(None)
        resize = eval_resize if eval_resize is not None else round(size / 0.875)
        self.samples = _Samples(items, size=size, flip=flip, eval_resize=resize)

    def __len__(self) -> int:
        n = len(self.items)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def _keys(self, epoch: int) -> list:
        """Per batch, the (item index, sample seed) keys this process decodes."""
        n, b = len(self.items), self.batch_size
        if not self.train:
            return [[(i, None) for i in range(k, min(k + b, n))] for k in range(0, n, b)]
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + int(epoch)) % 2**64)
        order = torch.randperm(n, generator=g).tolist()
        batches = []
        for k in range(len(self)):
            positions = list(range(k * b, (k + 1) * b))[self.part]
            batches.append([(order[p], sample_seed(self.seed, epoch, p)) for p in positions])
        return batches

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple]:
        """Yield (uint8 N x 3 x size x size, int64 labels) on the CPU, from batch ``start`` on (every
        image's crop comes from its own key, so skipped batches need no decoding)."""
        keys = self._keys(epoch)[start:]
        loader = torch.utils.data.DataLoader(self.samples, batch_sampler=keys, num_workers=self.workers,
                                             collate_fn=_collate)
        for x, y, errors in loader:
            if errors:
                raise GradnasError(f"{errors[0]}; remove or replace the file")
            yield x, y
