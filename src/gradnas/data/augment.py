"""Batched data augmentation on the training device: pad-and-crop, horizontal flip, cutout.

The whole uint8 dataset lives on the device and every step augments a batch with a handful of tensor
ops (one gather for crop + flip, one mask multiply for cutout) instead of per-image Python work, so
augmentation stays cheap next to a forward pass and needs no DataLoader workers.

Images of different sizes (ImageNet) are cropped per image first: :func:`random_resized_crop_box` and
:func:`resize_center_crop_box` choose the window, ``gradnas.data.stream`` decodes and resamples it.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from gradnas.errors import GradnasError


class Augment:
    """Batched, on-device augmentation + normalisation of uint8 NCHW batches.

    Training mode reproduces the usual CIFAR pipeline (as in DARTS): RandomCrop(size, padding=p)
    with black padding, RandomHorizontalFlip(0.5), normalisation, then Cutout(length), which zeroes a
    square of the *normalised* image. Every random number comes from the given generator, so the same
    generator state gives the same batch.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, crop_padding: int = 4,
                 flip: bool = True, cutout: int = 0):
        if len(mean) != len(std) or len(mean) == 0:
            raise GradnasError(f"Augment: need one mean and one std per channel, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise GradnasError(f"Augment: std values must be positive, got {tuple(std)}")
        if crop_padding < 0 or cutout < 0:
            raise GradnasError(f"Augment: crop_padding ({crop_padding}) and cutout ({cutout}) must be >= 0")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.cutout = int(cutout)
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __repr__(self) -> str:
        return (f"Augment(mean={self.mean}, std={self.std}, crop_padding={self.crop_padding}, "
                f"flip={self.flip}, cutout={self.cutout})")

    # -------------------------------------------------------------------------------- pieces

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float32 ``(x / 255 - mean) / std`` of a uint8 NCHW batch."""
        mean, std = self._stats.get(x.device, (None, None))
        if mean is None:
            # Cached per device: building them each call would mean a host-to-device copy per batch.
            mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
            self._stats[x.device] = (mean, std)
        return x.to(torch.float32).div_(255.0).sub_(mean).div_(std)

    @staticmethod
    def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """n integers in [0, high), drawn from ``generator`` (on its own device), returned on ``device``."""
        gen_device = generator.device if generator is not None else device
        return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)

    def _crop_flip(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-sample random crop of the zero-padded batch, optionally mirrored: one gather."""
        n, c, h, w = x.shape
        dev, p = x.device, self.crop_padding
        # Black (0) padding in uint8 space, as torchvision's RandomCrop(padding=p); gathering from the
        # padded batch means every index is valid, so no masks are needed.
        src = F.pad(x, (p, p, p, p)) if p else x
        wp = w + 2 * p
        rows = torch.arange(h, device=dev).expand(n, h)
        cols = torch.arange(w, device=dev).expand(n, w)
        if p:
            # A crop at offset (dy, dx) of the padded image: output (i, j) reads padded (i + dy, j + dx).
            rows = rows + self._randint(2 * p + 1, n, generator, dev).unsqueeze(1)
            shift_x = self._randint(2 * p + 1, n, generator, dev).unsqueeze(1)
        else:
            shift_x = 0
        if self.flip:
            # The flip comes after the crop: output column j reads crop column w-1-j.
            flipped = self._randint(2, n, generator, dev).bool().unsqueeze(1)
            cols = torch.where(flipped, (w - 1) - cols, cols)
        flat = (rows * wp).unsqueeze(2) + (cols + shift_x).unsqueeze(1)  # n x h x w, into padded rows
        out = torch.gather(src.reshape(n, c, -1), 2, flat.view(n, 1, h * w).expand(n, c, h * w))
        return out.view(n, c, h, w)

    def _cutout(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Zero a cutout x cutout square (clipped at the borders) per sample, in place."""
        n, _, h, w = x.shape
        dev, size = x.device, self.cutout
        # Centre uniform over the image, as in DARTS's Cutout; the square spans [c - size//2, c - size//2 + size).
        top = (self._randint(h, n, generator, dev) - size // 2).unsqueeze(1)
        left = (self._randint(w, n, generator, dev) - size // 2).unsqueeze(1)
        r = torch.arange(h, device=dev).unsqueeze(0)
        q = torch.arange(w, device=dev).unsqueeze(0)
        in_rows = ((r >= top) & (r < top + size)).to(x.dtype)  # n x h
        in_cols = ((q >= left) & (q < left + size)).to(x.dtype)  # n x w
        # Multiplying by a 0/1 mask (as DARTS does) is much faster than a broadcast masked_fill.
        keep = 1.0 - in_rows.unsqueeze(2) * in_cols.unsqueeze(1)
        return x.mul_(keep.unsqueeze(1))

    def check_image_size(self, height: int, width: int) -> None:
        """Refuse a padding or cutout the images cannot take: a padding of the image's side or more (crops of
        nothing but padding, and a padded batch that may not fit in memory), a cutout square larger than the
        image (every image blanked)."""
        side = min(int(height), int(width))
        if self.crop_padding >= side:
            raise GradnasError(f"data.crop_padding ({self.crop_padding}) must be smaller than the images' side "
                               f"({side} pixels; DARTS pads 32-pixel CIFAR images by 4)")
        if self.cutout > side:
            raise GradnasError(f"data.cutout ({self.cutout}) must be at most the images' side ({side} pixels; "
                               "DARTS cuts 16 of 32), or 0 for no cutout")

    # -------------------------------------------------------------------------------- call

    def __call__(self, x_uint8: torch.Tensor, generator: torch.Generator | None,
                 train: bool = True) -> torch.Tensor:
        """Augment (if ``train``) and normalise a uint8 N x C x H x W batch; returns float32 on its device.

        Random numbers are drawn, in a fixed order, from ``generator`` (None: the global RNG); a
        generator on another device than the batch works too, its numbers are moved over.
        """
        x = x_uint8
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != len(self.mean):
            raise GradnasError(
                f"Augment expects a uint8 batch of shape N x {len(self.mean)} x H x W, got "
                f"{x.dtype} {tuple(x.shape)}"
            )
        if train and x.shape[0] > 0:
            self.check_image_size(*x.shape[2:])
            if self.crop_padding or self.flip:
                x = self._crop_flip(x, generator)
            out = self.normalize(x)
            if self.cutout:
                out = self._cutout(out, generator)
            return out
        return self.normalize(x)


# -------------------------------------------------------------------------------- per-image crops
# Images of different sizes (ImageNet JPEGs) cannot form one tensor before they are cropped, so their
# crop is chosen per image, on the decoded image, and only the fixed-size result is batched.

def random_resized_crop_box(height: int, width: int, rng, *, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception-style random crop (Szegedy et al. 2015, as used for ImageNet).

    The crop covers a uniform fraction ``scale`` of the image area, with an aspect ratio drawn
    log-uniformly from ``ratio``; ten draws that do not fit are retried, then the largest centred crop
    whose aspect ratio lies in ``ratio`` is used. ``rng`` is a ``random.Random``: the crop depends only
    on its seed.
    """
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def resize_center_crop_box(height: int, width: int, resize: int, crop: int) -> tuple[float, float, float, float]:
    """(top, left, h, w), in source pixels, of the centre ``crop`` x ``crop`` window after resizing the
    shorter side to ``resize``: the usual ImageNet test transform (resize 256, centre crop 224)."""
    scale = min(height, width) / resize  # source pixels per resized pixel
    h = w = crop * scale
    return (height - h) / 2, (width - w) / 2, h, w
