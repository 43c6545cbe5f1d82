"""Frozen settings for training an evaluation network from scratch, loaded from YAML, flags and --set.

The tree mirrors the objects: ``data`` -> the batches, ``network`` -> the evaluation network,
``optim`` -> SGD and its schedule, the top level -> the loop. Defaults are the CIFAR-10 setting of
DARTS / MiLeNAS (section 4.3): 20 cells, 36 channels, 600 epochs, batch 96, SGD 0.025 cosine, momentum
0.9, weight decay 3e-4, cutout 16, drop path 0.2 ramped up linearly, auxiliary weight 0.4, gradient clip 5.
Shipped settings (``configs/train/``): ``cifar``, ``imagenet`` (MiLeNAS supplementary A.2), ``imagenet-pdarts``
(the PDARTS ImageNet recipe the single-level paper retrains with), ``pvll`` (PVLL-NAS: "the same training
setting as in the searching phase"), ``nb201`` (the NAS-Bench-201 training recipe, for NB-201 genotypes) and
``quick``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from gradnas.config import CONFIG_DIR, SEED_MAX, SEED_MIN, TrackingConfig, build_config, load_yaml
from gradnas.errors import GradnasError
from gradnas.space.darts_network import STEMS

SETTINGS_DIR = CONFIG_DIR / "train"
SCHEDULES = ("cosine", "exponential", "linear")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainDataConfig:
    dataset: str = "cifar10"
    data_dir: str | None = None          # None: the dataset's default location
    subset: int | None = None            # train on this many training images (a seeded random choice); None = all
    test_subset: int | None = None       # test on this many test images (a seeded random choice); None = all
    crop_padding: int = 4                # random crop after zero padding (images held in memory)
    flip: bool = True                    # random horizontal flip
    cutout: int = 16                     # side of the cutout square; 0 = off
    random_resized_crop: int = 0         # >0: Inception-style random-resized crop to this side, images decoded per
                                         # batch from an ImageFolder (ImageNet: 224); 0 = images held in memory
    eval_resize: int | None = None       # with random_resized_crop: test images' shorter side before the centre
                                         # crop; None = random_resized_crop / 0.875 (224 -> 256)
    mean: tuple | None = None            # per-channel normalisation; None = the dataset's own
    std: tuple | None = None
    workers: int = 4                     # decoding processes with random_resized_crop (0 = decode in this process)
    valid_fraction: float = 0.0          # > 0: hold out this share of the training images (a seeded choice, saved in
                                         # split.json), measure them every epoch and keep the best epoch's weights;
                                         # 0 = train on all of them and report the last epoch (the papers' setting)


@dataclass(frozen=True)
class NetworkConfig:
    cells: int = 20                      # DARTS: cells in the network; NB-201: cells per stage (N)
    channels: int = 36                   # initial channels (C)
    stem: str = "cifar"                  # cifar (3x3 conv) or imagenet (three stride-2 convs, /8)
    auxiliary_weight: float = 0.4        # weight of the auxiliary head's loss; 0 = no auxiliary head
    drop_path: float = 0.2               # drop-path probability reached at the last epoch (linear ramp from 0)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    nesterov: bool = False
    schedule: str = "cosine"             # cosine or linear (to lr_min over the epochs), exponential (x gamma per epoch)
    lr_min: float | None = None          # cosine and linear: the floor; None = 0
    warmup_epochs: int = 0               # linear warm-up over the first epochs (see lr_at); 0 = none
    gamma: float | None = None           # exponential only: the factor per epoch (ImageNet: 0.97)
    grad_clip: float = 5.0               # max norm of the gradient; 0 = no clipping
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 600
    batch_size: int = 96                 # the global batch (split over the processes of a distributed run)
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    threads: int | None = None           # CPU threads; None = torch's default
    precision: str = "fp32"              # fp32 or bf16 (autocast; weights and optimizer stay fp32)
    channels_last: bool = False          # NHWC memory format for activations and weights
    callbacks: tuple = ()                # names of registered callbacks (gradnas.callbacks.register_callback)
    log: tuple = ()                      # experiment trackers: tensorboard, wandb, mlflow, csv (gradnas.trackers)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self):
        d, n, o = self.data, self.network, self.optim
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (d.subset is None or d.subset >= 1, f"data.subset must be >= 1 or null, got {d.subset}"),
            (d.test_subset is None or d.test_subset >= 1, f"data.test_subset must be >= 1 or null, got {d.test_subset}"),
            (d.test_subset is None or not d.random_resized_crop,
             "data.test_subset applies to images held in memory, not to random_resized_crop's decoded folders; "
             "remove it"),
            (d.crop_padding >= 0 and d.cutout >= 0, "data.crop_padding and data.cutout must be >= 0"),
            (d.random_resized_crop >= 0, f"data.random_resized_crop must be >= 0, got {d.random_resized_crop}"),
            (not (d.random_resized_crop and d.crop_padding),
             "data.random_resized_crop and data.crop_padding are two ways to crop; set crop_padding: 0 with "
             "random_resized_crop"),
            (d.eval_resize is None or d.random_resized_crop > 0,
             "data.eval_resize only applies with data.random_resized_crop; remove it or set random_resized_crop"),
            (d.eval_resize is None or d.eval_resize >= d.random_resized_crop,
             f"data.eval_resize ({d.eval_resize}) must be >= data.random_resized_crop ({d.random_resized_crop})"),
            ((d.mean is None) == (d.std is None), "set data.mean and data.std together (or neither)"),
            (d.mean is None or d.std is None or (len(d.mean) == len(d.std) and all(s > 0 for s in d.std)),
             "data.mean and data.std need one value per channel and positive std values"),
            (d.workers >= 0, f"data.workers must be >= 0, got {d.workers}"),
            (isinstance(d.valid_fraction, (int, float)) and 0 <= d.valid_fraction < 1,
             f"data.valid_fraction must be in [0, 1), got {d.valid_fraction}"),
            # (the DARTS network needs >= 3 cells and an even channel count; it says so when built)
            (n.cells >= 1, f"network.cells must be >= 1, got {n.cells}"),
            (n.channels >= 1, f"network.channels must be >= 1, got {n.channels}"),
            (n.stem in STEMS, f"network.stem must be one of {', '.join(STEMS)}, got {n.stem!r}"),
            (n.auxiliary_weight >= 0 and math.isfinite(n.auxiliary_weight),
             f"network.auxiliary_weight must be >= 0, got {n.auxiliary_weight}"),
            (0 <= n.drop_path < 1, f"network.drop_path must be in [0, 1), got {n.drop_path}"),
            (SEED_MIN <= self.seed <= SEED_MAX,
             f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}], got {self.seed}"),
            (o.lr > 0 and math.isfinite(o.lr), f"optim.lr must be a finite number > 0, got {o.lr}"),
            *((value >= 0 and math.isfinite(value), f"optim.{key} must be a finite number >= 0, got {value}")
              for key, value in (("momentum", o.momentum), ("weight_decay", o.weight_decay),
                                 ("grad_clip", o.grad_clip))),
            (not o.nesterov or o.momentum > 0, "optim.nesterov needs optim.momentum > 0"),
            (0 <= o.label_smoothing < 1, f"optim.label_smoothing must be in [0, 1), got {o.label_smoothing}"),
            (o.schedule in SCHEDULES, f"optim.schedule must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}"),
            (o.schedule != "exponential" or o.lr_min is None,
             "optim.lr_min is the cosine and linear schedules' floor; remove it for the exponential schedule"),
            (0 <= o.warmup_epochs < self.epochs,
             f"optim.warmup_epochs must be in [0, epochs - 1 = {self.epochs - 1}], got {o.warmup_epochs}"),
            (o.schedule == "exponential" or o.gamma is None,
             "optim.gamma is the exponential schedule's factor; remove it or set optim.schedule: exponential"),
            (o.schedule != "exponential" or (o.gamma is not None and 0 < o.gamma <= 1),
             f"the exponential schedule needs optim.gamma in (0, 1], got {o.gamma}"),
            (o.lr_min is None or 0 <= o.lr_min <= o.lr, f"optim.lr_min must be in [0, lr], got {o.lr_min}"),
        ]
        for ok, message in checks:
            if not ok:
                raise GradnasError(f"train config: {message}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["callbacks"] = list(d["callbacks"])
        d["log"] = list(d["log"])
        for key in ("mean", "std"):
            if d["data"][key] is not None:
                d["data"][key] = list(d["data"][key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return build_config(cls, d)


def lr_at(optim: OptimConfig, epochs: int, epoch: int) -> float:
    """The learning rate of 0-based ``epoch`` of ``epochs``, in closed form.

    cosine: lr_min + (lr - lr_min) (1 + cos(pi e / E)) / 2; linear: lr_min + (lr - lr_min) (1 - e / E), both
    reaching lr_min (None: 0) when training ends, after the last epoch (epoch E), as torch's
    CosineAnnealingLR(T_max=E) does (so the last epoch still learns, at lr / E for the linear schedule);
    exponential: lr gamma^e. Warm-up (``warmup_epochs`` W > 0), per epoch: epoch e < W runs at (e + 1) / W
    times the schedule's lr, so the first epoch at lr / W and epoch W at the schedule's own value (the PDARTS
    ImageNet recipe the single-level paper follows: 5 warm-up epochs of a linear decay from 0.375; per epoch,
    not per step, because the schedules here step once an epoch)."""
    lr_min = optim.lr_min or 0.0
    if optim.schedule == "cosine":
        lr = lr_min + (optim.lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2
    elif optim.schedule == "linear":
        lr = lr_min + (optim.lr - lr_min) * (1 - epoch / epochs)
    else:
        lr = optim.lr * optim.gamma ** epoch
    if epoch < optim.warmup_epochs:
        lr *= (epoch + 1) / optim.warmup_epochs
    return lr


def load_setting(name_or_path: str) -> dict:
    """A setting's mapping: a shipped name (cifar, imagenet, quick) or a YAML file."""
    return load_yaml(name_or_path, shipped_dir=SETTINGS_DIR, kind="setting")
