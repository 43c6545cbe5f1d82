"""Frozen configuration objects for a search, loaded from YAML, CLI flags and ``--set key=value``.

The tree mirrors the object tree: ``data`` -> the data pipeline, ``supernet`` -> the DARTS search space,
``nb201`` -> the NAS-Bench-201 space, ``gumbel`` -> the Gumbel relaxation's temperature schedule,
``w_optim`` / ``arch_optim`` -> the two optimizers, ``probes`` -> the optional per-epoch measurements
(gradnas.search.probes), ``collapse`` -> the watch on parameter-free ops (warning and the single-level
paper's learning-rate rule), ``stop`` -> MiLeNAS's early stopping on the model size
(gradnas.search.sizes), ``pvll`` -> PVLL-NAS (method pvll: its steps, warm-up, estimator and sampler),
and the top level -> the search method and loop (with the papers' switches: ``alpha_data``,
``switch_at`` / ``then``). A registered plug-in (method, relaxation, space) may bring a section of its own
(``gradnas.registry.register_section``); it is parsed by the plug-in's config class and kept in ``SearchConfig.sections``.
A config may hold the sections of every space and relaxation; ``space`` and ``relax`` pick the one used.
Unknown keys are rejected with the list of valid ones; values are parsed as YAML data, never code.

Which component reads which key is declared by the components themselves (a method's ``reads``, a
relaxation's or space's section, an algorithm's ``reads``); :func:`check_components` refuses a setting that
no component of the run reads, naming the component that would (``--method darts --lambda 5``: lambda is
read by method milenas). This module imports no search code: the caller hands it the components' claims.
Defaults are the papers' CIFAR-10 search settings (DARTS / MiLeNAS: 50 epochs, batch 64, 8 cells,
16 channels, SGD 0.025 cosine to 0.001, Adam 3e-4 for alpha).
"""
from __future__ import annotations

import dataclasses
import decimal
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from gradnas.data.loader import ALPHA_DATA
from gradnas.errors import GradnasError
from gradnas.registry import SECTIONS
from gradnas.relax import RELAXATIONS, GumbelConfig
from gradnas.space import get_space
from gradnas.space.darts import DartsSpaceConfig
from gradnas.space.nb201 import NB201SpaceConfig

CONFIG_DIR = Path(__file__).parent / "configs"
# Seeds every random stream takes (torch.manual_seed, derived per-epoch streams), as NumPy's legacy seeds.
SEED_MIN, SEED_MAX = 0, 2**32 - 1
# The search's compile modes and precisions (gradnas.search.accel uses the same names).
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
SEARCH_PRECISIONS = ("fp32", "bf16")
_EDGE_SPEC = re.compile(r"^\s*([a-z]+|-?\d+)\s*:\s*(\d+)\s*<-\s*(\d+|\*)\s*$")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"
    data_dir: str | None = None          # None: the dataset's default location
    split_fraction: float = 0.5          # share of the training set that trains the weights; 1 = all of it (no
                                         # architecture half: single-level or alpha_data same-*, validated on test)
    subset: int | None = None            # use only this many training images (quick runs)
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0                      # side of the cutout square; 0 = off (DARTS search uses none)
    eval_batches: int | None = None      # arch-half batches for the end-of-epoch validation; None = all


@dataclass(frozen=True)
class WeightOptimConfig:
    lr: float = 0.025
    lr_min: float = 0.001                # cosine annealing floor
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0               # max norm of the weight gradient; 0 = no clipping
    nesterov: bool = False               # Nesterov momentum (GDAS uses it)

    def __post_init__(self):
        # what torch.optim.SGD would refuse with a traceback, or take and turn into NaN (inf)
        for key in ("momentum", "weight_decay", "grad_clip", "lr_min"):
            value = getattr(self, key)
            if not (value >= 0 and math.isfinite(value)):
                raise GradnasError(f"config: w_optim.{key} must be a finite number >= 0, got {value}")


def check_betas(betas, where: str) -> tuple:
    """Adam's (beta1, beta2) as floats: two numbers in [0, 1), else one error naming ``where``."""
    ok = (len(betas) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                  for b in betas))
    if not ok:
        raise GradnasError(f"config: {where} must be two numbers in [0, 1) (Adam's beta1, beta2), e.g. [0.5, 0.999]; "
                           f"got {list(betas)!r}")
    return tuple(float(b) for b in betas)


ARCH_OPTIMS = ("adam", "sgd")


@dataclass(frozen=True)
class ArchOptimConfig:
    """The optimizer of alpha. ``type: adam`` (DARTS / MiLeNAS, and the single-level paper's recommendation for
    general tasks) reads ``betas``; ``type: sgd`` (the single-level paper's Tables 1-2 and section 4.1.4 "for the
    convenience of analysis, we use SGD ... for architecture parameters") reads ``momentum`` and ``nesterov``.
    A key the chosen type does not read is refused when it differs from its default (it would be ignored)."""

    type: str = "adam"
    lr: float = 3e-4
    betas: tuple = (0.5, 0.999)          # adam only
    momentum: float = 0.0                # sgd only
    nesterov: bool = False               # sgd only
    weight_decay: float | None = None    # None: the relaxation's default (softmax 1e-3, sigmoid 0)

    def __post_init__(self):
        if self.type not in ARCH_OPTIMS:
            raise GradnasError(f"config: arch_optim.type must be one of {', '.join(ARCH_OPTIMS)}, got {self.type!r}")
        object.__setattr__(self, "betas", check_betas(tuple(self.betas), "arch_optim.betas"))
        if self.weight_decay is not None and not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise GradnasError(f"config: arch_optim.weight_decay must be a finite number >= 0 or null (the "
                               f"relaxation's default), got {self.weight_decay}")
        if not (self.momentum >= 0 and math.isfinite(self.momentum)):
            raise GradnasError(f"config: arch_optim.momentum must be a finite number >= 0, got {self.momentum}")
        unread = ([k for k in ("momentum", "nesterov") if getattr(self, k) != _ARCH_DEFAULTS[k]]
                  if self.type == "adam" else
                  ["betas"] if self.betas != _ARCH_DEFAULTS["betas"] else [])
        if unread:
            reads = "betas" if self.type == "adam" else "momentum and nesterov"
            other = "sgd" if self.type == "adam" else "adam"
            raise GradnasError(f"config: arch_optim.{unread[0]} is read by arch_optim.type {other}, but this search "
                               f"uses {self.type} (which reads {reads}); drop it or set arch_optim.type: {other}")
        if self.nesterov and self.momentum == 0:
            raise GradnasError("config: arch_optim.nesterov needs arch_optim.momentum > 0")


_ARCH_DEFAULTS = {"betas": (0.5, 0.999), "momentum": 0.0, "nesterov": False}


@dataclass(frozen=True)
class CollapseConfig:
    """Watch the share of parameter-free ops (none, pooling, skip) in each epoch's derived genotype.

    ``warn``: a warning when the share rises above ``threshold`` (the skip-connect collapse).
    ``lr_decay``: the single-level paper's rule (section 4.1.4): after an epoch whose share exceeds the
    threshold, multiply the weight learning rate by ``lr_factor``, at most ``max_decays`` times in a run.
    The factor multiplies the cosine schedule (lr = scale * cosine(epoch)), it does not restart it. The
    online rule is our reading of section 4.1.4 ("we could adjust network parameters' learning rate according
    to the searched non-parametric operations' ratio. If it's over a threshold such as 0.3, we should decrease
    it"): the paper gives no factor, no count and no point in the run; these are ours.
    ``cells``: which cells the share counts in the DARTS space: ``normal`` (the default: the collapse is the
    normal cell's; a reduction cell of pooling ops is usual, e.g. DARTS_V2's normal cell is 0.25
    parameter-free, both cells 0.625) or ``all`` (both cells, as gradnas counted before this key). NB-201 has one cell.
    """

    threshold: float = 0.3
    warn: bool = True
    lr_decay: bool = False
    lr_factor: float = 0.5
    max_decays: int = 3
    cells: str = "normal"

    def __post_init__(self):
        if self.cells not in ("normal", "all"):
            raise GradnasError(f"config: collapse.cells must be normal or all (the cells the parameter-free share "
                               f"counts), got {self.cells!r}")


@dataclass(frozen=True)
class TrackingConfig:
    """The experiment trackers a run logs to (``log``: tensorboard, wandb, mlflow, csv; gradnas.trackers).

    ``every_steps``: the running training (and validation) loss and accuracy every that many steps (0: per
    epoch only); ``mlflow_uri``: the MLflow tracking server or store (None: a file store in RUN/mlruns);
    ``experiment``: the MLflow experiment and the W&B project."""

    every_steps: int = 50
    mlflow_uri: str | None = None
    experiment: str = "gradnas"

    def __post_init__(self):
        if self.every_steps < 0:
            raise GradnasError(f"config: tracking.every_steps must be >= 0 (0: per epoch only), got {self.every_steps}")
        if not self.experiment.strip():
            raise GradnasError("config: tracking.experiment must be a name, e.g. gradnas")


# ---- sections read by the search's callbacks and by method pvll (their code is in gradnas.search)

@dataclass(frozen=True)
class ProbeConfig:
    """The ``probes`` config section. Everything is off by default."""

    gap: bool = False                      # train/validation loss and accuracy gap
    grad_corr: bool = False                # gradient correlation per node (single-level paper eq. 13)
    grad_corr_form: str = "exact"          # exact: eq. 13's per-sample products; proxy: batch-summed node gradients
    grad_corr_cells: tuple | None = None   # cell indices (negative count from the end); None: first, middle, last
    dl_dp_edges: tuple = ()                # "CELL:TARGET<-SOURCE"; CELL an index, last, or a kind; SOURCE may be *
    batches: int = 2                       # (weight, architecture) batch pairs per epoch for grad_corr and dl_dp

    def __post_init__(self):
        object.__setattr__(self, "dl_dp_edges", tuple(self.dl_dp_edges))
        if self.grad_corr_form not in ("exact", "proxy"):
            raise GradnasError(f"probes.grad_corr_form must be exact (eq. 13) or proxy (batch-summed node "
                               f"gradients), got {self.grad_corr_form!r}")
        if self.grad_corr_form != "exact" and not self.grad_corr:
            raise GradnasError("probes.grad_corr_form chooses the form of probes.grad_corr, which is off; turn it "
                               "on (--probe-grad-corr) or drop grad_corr_form")
        if self.grad_corr_cells is not None:
            object.__setattr__(self, "grad_corr_cells", tuple(self.grad_corr_cells))
            if not self.grad_corr_cells or not all(isinstance(c, int) and not isinstance(c, bool)
                                                   for c in self.grad_corr_cells):
                raise GradnasError(f"probes.grad_corr_cells must be a non-empty list of cell indices or null, "
                                   f"got {list(self.grad_corr_cells)}")
        for spec in self.dl_dp_edges:
            parse_edge_spec(spec)
        if isinstance(self.batches, bool) or not isinstance(self.batches, int) or self.batches < 1:
            raise GradnasError(f"probes.batches must be an integer >= 1, got {self.batches!r}")

    @property
    def needs_gradients(self) -> bool:
        return self.grad_corr or bool(self.dl_dp_edges)

    @property
    def enabled(self) -> bool:
        return self.gap or self.needs_gradients


def parse_edge_spec(spec) -> tuple[str, int, int | None]:
    """'7:3<-0' -> ('7', 3, 0); 'last:3<-*' -> ('-1', 3, None); 'normal:2<-1' -> ('normal', 2, 1).

    CELL is a searched cell's index (negative from the end; 'last' = -1), or a cell kind (DARTS: normal,
    reduce; NAS-Bench-201: cell) for the gradient of the weight all cells of that kind share (the sum
    over them); SOURCE * means every input of the node. Kinds and ranges are checked against the supernet."""
    m = _EDGE_SPEC.match(str(spec))
    if not m:
        raise GradnasError(f"probe edge {spec!r}: expected CELL:TARGET<-SOURCE, e.g. 'last:3<-0', '4:2<-1' or "
                           "'normal:3<-*' (all normal cells together, every input of node 3)")
    cell, target, source = m.groups()
    return "-1" if cell == "last" else cell, int(target), None if source == "*" else int(source)


@dataclass(frozen=True)
class StopConfig:
    """Early stopping rules (module doc); both null (the default) means search every epoch."""

    at_size: tuple | None = None         # [N, R]: conv ops in the normal, reduction cell (NB-201: [N] or [N, 0])
    when_smaller: float | None = None    # P: evaluation-network parameters in millions

    def __post_init__(self):
        if self.at_size is not None:
            size = tuple(self.at_size)
            if not (1 <= len(size) <= 2 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in size)):
                raise GradnasError(f"config: stop.at_size must be [N, R], two integers >= 0 (conv ops in the normal "
                                   f"and the reduction cell; NB-201: N alone), got {list(size)!r}")
            object.__setattr__(self, "at_size", size)
        if self.when_smaller is not None and not (self.when_smaller > 0 and math.isfinite(self.when_smaller)):
            raise GradnasError(f"config: stop.when_smaller must be a number of millions of parameters > 0, got "
                               f"{self.when_smaller}")

    @property
    def active(self) -> bool:
        return self.at_size is not None or self.when_smaller is not None

    def rule_value(self, rule: str):
        """The configured value of one rule, as a stop record stores it (a list for at_size)."""
        value = getattr(self, rule)
        return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class PVLLConfig:
    """PVLL-NAS settings (the ``pvll`` config section). Defaults: the paper's (section 5.1, Algorithm 1)
    where it gives them.

    Budget: ``population`` warm-up architectures (N, each trained twice and measured once, Algorithm 1
    lines 1-10), then ``steps`` search steps (T). ``warmup: false`` (Table 5) skips the warm-up population
    and searches T + N steps instead, keeping the paper's budget ("200 steps to keep the budget").
    ``train_batches`` / ``val_batches``: SGD steps per architecture training and validation batches per
    measurement; null means one pass over the weight / architecture half of the search split, the paper's
    "1 epoch". ``uniform_sampling`` (Table 5, "with sampler: N"): H_t is drawn uniformly and A only follows
    psi. ``weighted_loss``: the 1/p_t weight of eq. 8; null means on with the sampler and off with uniform
    sampling (Table 5 has it "N/A" there: p_t compares consecutive samples of the sampler); ``p_min`` is
    the floor on |p_t| (see :func:`pair_weights`). The estimator: an LSTM with ``hidden`` units, Adam with
    ``estimator_lr``, ``estimator_updates`` full-memory steps after each measurement and ``warmup_updates``
    on the warm-up population (Algorithm 1 line 11); section 5.1: "the architecture weights and validation
    loss estimator are both optimized by Adam with a constant learning rate of 0.1". A: Adam with ``arch_lr``
    (paper: 0.1), Gumbel temperature ``tau`` (paper: 0.1, constant).
    ``op_scale``: ``soft`` (eq. 4, the paper's) runs the sampled op of each edge scaled by its soft weight
    h~_k; ``one`` at weight 1 (see :meth:`gradnas.search.pvll.PVLL.op_weights`). ``rescore``: false (the
    paper's) freezes each memory entry's eq. 8 weight when it enters (warm-up entries 1); true re-scores every
    pair with the current psi before each update (:func:`gradnas.search.pvll.pair_weights`).
    ``test_cells``: N > 0 held-out cells, drawn uniformly (seeded, none of them in the warm-up population),
    measured like the memory's entries after every round that updates psi, without training them; the round
    records psi's loss and Kendall tau on them (``test_loss``, ``test_kendall_tau``; Table 3, Fig. 3a).
    """

    steps: int = 100
    population: int = 100
    warmup: bool = True
    memory: int = 100
    tau: float = 0.1
    arch_lr: float = 0.1
    hidden: int = 64
    estimator_lr: float = 0.1
    estimator_updates: int = 10
    warmup_updates: int = 500
    train_batches: int | None = None
    val_batches: int | None = None
    uniform_sampling: bool = False
    weighted_loss: bool | None = None
    p_min: float = 0.05
    op_scale: str = "soft"
    rescore: bool = False
    test_cells: int = 0

    def __post_init__(self):
        checks = [
            (self.op_scale in ("soft", "one"),
             f"pvll.op_scale must be soft (eq. 4: the sampled op times its soft weight) or one, got {self.op_scale!r}"),
            (self.test_cells >= 0, f"pvll.test_cells must be >= 0 (0: off), got {self.test_cells}"),
            (not self.rescore or (self.weighted_loss is not False and not self.uniform_sampling),
             "pvll.rescore re-scores the weights of eq. 8, which weighted_loss false and uniform_sampling turn off; "
             "drop one of them"),
            (self.steps >= 1, f"pvll.steps must be >= 1, got {self.steps}"),
            (self.population >= 2, f"pvll.population must be >= 2, got {self.population}"),
            (self.memory >= 2, f"pvll.memory must be >= 2, got {self.memory}"),
            (self.tau > 0, f"pvll.tau must be > 0, got {self.tau}"),
            (self.arch_lr > 0 and self.estimator_lr > 0 and math.isfinite(self.arch_lr + self.estimator_lr),
             "pvll.arch_lr and pvll.estimator_lr must be finite numbers > 0"),
            (self.hidden >= 1, f"pvll.hidden must be >= 1, got {self.hidden}"),
            (self.estimator_updates >= 1 and self.warmup_updates >= 1,
             "pvll.estimator_updates and pvll.warmup_updates must be >= 1"),
            (self.train_batches is None or self.train_batches >= 1, "pvll.train_batches must be >= 1 or null"),
            (self.val_batches is None or self.val_batches >= 1, "pvll.val_batches must be >= 1 or null"),
            (0 < self.p_min <= 1, f"pvll.p_min must be in (0, 1], got {self.p_min}"),
            (not (self.uniform_sampling and self.weighted_loss),
             "pvll.weighted_loss weighs consecutive samples of the sampler (eq. 8); with uniform_sampling it does "
             "not apply (Table 5: N/A). Drop one of them"),
        ]
        for ok, message in checks:
            if not ok:
                raise GradnasError(f"config: {message}")

    @property
    def weighted(self) -> bool:
        """Whether eq. 8 weighs by 1/p_t (the default: with the sampler, not with uniform sampling)."""
        return (not self.uniform_sampling) if self.weighted_loss is None else self.weighted_loss

    @property
    def search_steps(self) -> int:
        """Search steps run: T, or T + N without the warm-up population (the paper's equal budget)."""
        return self.steps if self.warmup else self.steps + self.population


@dataclass(frozen=True)
class SearchConfig:
    space: str = "darts"
    method: str = "milenas"
    order: int = 1
    lam: float = 1.0                     # MiLeNAS lambda (YAML / CLI: `lambda`)
    xi: float | None = None              # order 2: virtual step size; None = the current weight lr (DARTS)
    fd_scale: float | None = None        # order 2: finite-difference step eps * ||v||; None = 0.01 (DARTS)
    relax: str = "softmax"
    epochs: int = 50
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    threads: int | None = None           # CPU threads; None = torch's default (all cores)
    compile: str = "off"                 # torch.compile of the step's forward: off | default | reduce-overhead (CUDA
                                         # graphs) | max-autotune (gradnas.search.accel)
    precision: str = "fp32"              # fp32 | bf16 (autocast of the forward passes; weights, alphas stay fp32)
    alpha_data: str = "split"            # architecture batch: split | same-split | same-batch (see data.loader)
    switch_at: int | None = None         # method schedule: `method` for epochs 1..switch_at, then `then`
    then: str | None = None
    then_order: int | None = None        # the order of `then`; None = `order` (MiLeNAS Fig. 2b: darts 2 then milenas 1)
    data: DataConfig = field(default_factory=DataConfig)
    supernet: DartsSpaceConfig = field(default_factory=DartsSpaceConfig)
    nb201: NB201SpaceConfig = field(default_factory=NB201SpaceConfig)
    gumbel: GumbelConfig = field(default_factory=GumbelConfig)
    w_optim: WeightOptimConfig = field(default_factory=WeightOptimConfig)
    arch_optim: ArchOptimConfig = field(default_factory=ArchOptimConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    collapse: CollapseConfig = field(default_factory=CollapseConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    pvll: PVLLConfig = field(default_factory=PVLLConfig)  # read by method pvll only
    callbacks: tuple = ()                # names of registered callbacks (gradnas.callbacks.register_callback)
    log: tuple = ()                      # experiment trackers: tensorboard, wandb, mlflow, csv (gradnas.trackers,
                                         # which checks the names when a run is built)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # sections of registered plug-ins (register_section): section name -> that plug-in's frozen config
    sections: dict = field(default_factory=dict)

    def __post_init__(self):
        checks = [
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lam >= 0 and math.isfinite(self.lam), f"lambda must be a finite number >= 0, got {self.lam}"),
            (self.order in (1, 2), f"order must be 1 or 2, got {self.order}"),
            (self.then_order in (None, 1, 2), f"then_order must be 1 or 2 (or null: the order), got {self.then_order}"),
            (self.then_order is None or self.then is not None,
             "then_order is the order of the method after switch_at (then); set then and switch_at, or drop it"),
            (2 in self.orders or (self.xi is None and self.fd_scale is None),
             "xi and fd_scale belong to the second-order virtual step; set order: 2 or remove them"),
            (self.xi is None or (self.xi >= 0 and math.isfinite(self.xi)), f"xi must be >= 0, got {self.xi}"),
            (self.fd_scale is None or (self.fd_scale > 0 and math.isfinite(self.fd_scale)),
             f"fd_scale must be > 0, got {self.fd_scale}"),
            (0 < self.data.split_fraction <= 1,
             f"data.split_fraction must be in (0, 1] (1: the full training set trains the weights), got "
             f"{self.data.split_fraction}"),
            (self.data.subset is None or self.data.subset >= 2, f"data.subset must be >= 2, got {self.data.subset}"),
            (self.data.eval_batches is None or self.data.eval_batches >= 1,
             f"data.eval_batches must be >= 1 or null, got {self.data.eval_batches}"),
            (self.data.cutout >= 0 and self.data.crop_padding >= 0, "data.cutout and data.crop_padding must be >= 0"),
            (self.w_optim.lr > 0 and math.isfinite(self.w_optim.lr),
             f"w_optim.lr must be a finite number > 0, got {self.w_optim.lr}"),
            (self.arch_optim.lr >= 0 and math.isfinite(self.arch_optim.lr),
             f"arch_optim.lr must be a finite number >= 0, got {self.arch_optim.lr}"),
            (self.w_optim.lr_min <= self.w_optim.lr,
             f"w_optim.lr_min (the cosine schedule's floor, {self.w_optim.lr_min:g}) must be <= w_optim.lr "
             f"({self.w_optim.lr:g})"),
            (SEED_MIN <= self.seed <= SEED_MAX,
             f"seed must be an integer in [{SEED_MIN}, {SEED_MAX}], got {self.seed}"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (self.compile in COMPILE_MODES, f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}"),
            (self.precision in SEARCH_PRECISIONS,
             f"precision must be one of {', '.join(SEARCH_PRECISIONS)}, got {self.precision!r}"),
            (not self.w_optim.nesterov or self.w_optim.momentum > 0, "w_optim.nesterov needs w_optim.momentum > 0"),
            (self.alpha_data in ALPHA_DATA,
             f"alpha_data must be one of {', '.join(ALPHA_DATA)}, got {self.alpha_data!r}"),
            ((self.switch_at is None) == (self.then is None),
             "a method schedule needs both switch_at (epochs of the first method) and then (the method after it)"),
            (self.switch_at is None or 1 <= self.switch_at < self.epochs,
             f"switch_at must be between 1 and epochs - 1 = {self.epochs - 1}, got {self.switch_at}"),
            (self.then is None or self.then != self.method,
             f"then names the method already running ({self.method!r}); give another method or drop the schedule"),
            (0 < self.collapse.threshold < 1, f"collapse.threshold must be in (0, 1), got {self.collapse.threshold}"),
            (0 < self.collapse.lr_factor < 1, f"collapse.lr_factor must be in (0, 1), got {self.collapse.lr_factor}"),
            (self.collapse.max_decays >= 1, f"collapse.max_decays must be >= 1, got {self.collapse.max_decays}"),
        ]
        for ok, message in checks:
            if not ok:
                raise GradnasError(f"config: {message}")
        self._check_stop_size()

    def _check_stop_size(self) -> None:
        """stop.at_size against the searched space (its plug-in's ``check_stop_size``): a size its cells can have
        (else the rule could never fire), stored in the space's normal form (NB-201: N or [N, 0] -> [N, 0])."""
        if self.stop.at_size is None:
            return
        size = tuple(get_space(self.space).check_stop_size(self.stop.at_size, self.space_config))
        object.__setattr__(self, "stop", dataclasses.replace(self.stop, at_size=size))

    @property
    def methods(self) -> tuple:
        """The method names this search runs, in order (two with a method schedule)."""
        return (self.method,) if self.then is None else (self.method, self.then)

    @property
    def orders(self) -> tuple:
        """The order of each method of :attr:`methods` (``then_order`` for ``then``; None there: ``order``)."""
        if self.then is None:
            return (self.order,)
        return (self.order, self.order if self.then_order is None else self.then_order)

    def section(self, name: str):
        """A config section by name: a built-in one (``supernet``, ``gumbel``, ...) or a registered plug-in's
        (its defaults when the config does not set it)."""
        if name in {f.name for f in fields(self)} and name != "sections":
            return getattr(self, name)
        if name in self.sections:
            return self.sections[name]
        if name in SECTIONS:
            return SECTIONS[name][0]()
        raise GradnasError(f"config: no section {name!r}")

    @property
    def space_config(self):
        """The config section of the chosen space (``supernet`` for darts, ``nb201`` for nb201)."""
        return self.section(get_space(self.space).section)

    @property
    def relax_config(self):
        """The config section of the chosen relaxation (``gumbel``), or None if it has no settings."""
        cls = RELAXATIONS.get(self.relax)
        return self.section(cls.config_section) if cls is not None and cls.config_class else None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        del d["sections"]
        d.update({name: _plain(dataclasses.asdict(value)) for name, value in self.sections.items()})
        d["lambda"] = d.pop("lam")
        d["callbacks"] = list(d["callbacks"])
        d["log"] = list(d["log"])
        d["supernet"]["ops"] = list(d["supernet"]["ops"])
        d["arch_optim"]["betas"] = list(d["arch_optim"]["betas"])
        d["probes"]["dl_dp_edges"] = list(d["probes"]["dl_dp_edges"])
        if d["stop"]["at_size"] is not None:
            d["stop"]["at_size"] = list(d["stop"]["at_size"])
        if d["probes"]["grad_corr_cells"] is not None:
            d["probes"]["grad_corr_cells"] = list(d["probes"]["grad_corr_cells"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        return build_config(cls, d)


def _plain(d: dict) -> dict:
    """Tuples as lists, recursively (YAML-safe)."""
    return {k: _plain(v) if isinstance(v, dict) else list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# YAML spellings of fields whose Python names differ, per config class.
_ALIASES = {SearchConfig: {"lambda": "lam"}}


def build_config(cls, d: dict):
    """A frozen config of class ``cls`` from a mapping: sections nested, unknown keys and wrong types rejected."""
    return _build(cls, d, "")


def _section_class(f: dataclasses.Field):
    """The config class of a section field (one whose default is built by a config dataclass), else None."""
    factory = f.default_factory
    return factory if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory) else None


def _build(cls, d: Any, where: str):
    """Build config class ``cls`` from mapping ``d``: sections recursively, scalars checked by type."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise GradnasError(f"config{' section ' + where if where else ''}: expected a mapping, got {d!r}")
    names = {f.name: f for f in fields(cls)}
    aliases = _ALIASES.get(cls, {})
    kwargs = {}
    for key, value in d.items():
        attr = aliases.get(key, key)
        if cls is SearchConfig and attr not in names and key in SECTIONS:  # a registered plug-in's section
            kwargs.setdefault("sections", {})[key] = _build(SECTIONS[key][0], value, f"{key}.")
            continue
        if attr not in names or attr == "sections":
            spelled = {v: k for k, v in aliases.items()}
            valid = sorted([spelled.get(n, n) for n in names if n != "sections"] +
                           (list(SECTIONS) if cls is SearchConfig else []))
            raise GradnasError(f"config: unknown key {where + key!r}; valid keys{' in ' + where[:-1] if where else ''}: "
                               f"{', '.join(valid)}")
        section = _section_class(names[attr])
        if section is not None:
            kwargs[attr] = _build(section, value, f"{where}{attr}.")
        else:
            kwargs[attr] = _coerce(value, names[attr], where + key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the key check above
        raise GradnasError(f"config: {exc}") from None


def _coerce(value, f: dataclasses.Field, where: str):
    """Check a scalar against the field's declared type (ints accepted for floats, lists for tuples). A string
    where a number is expected is read as Python's float() reads it ("1e-3", ".5"); an int field takes an
    integral value only ("1e3" is 1000, "1.5" is refused). NaN is no setting of any number."""
    kind = str(f.type)
    if value is None:
        if "None" in kind:
            return None
        raise GradnasError(f"config: {where} may not be null")
    if kind.startswith("tuple") or kind == "tuple":
        if not isinstance(value, (list, tuple)):
            raise GradnasError(f"config: {where} must be a list, got {value!r}")
        return tuple(value)
    if kind.startswith("bool"):
        if not isinstance(value, bool):
            raise GradnasError(f"config: {where} must be true or false, got {value!r}")
        return value
    if kind.startswith("int"):
        number = _number(value) if isinstance(value, (str, float)) else value
        if isinstance(number, decimal.Decimal) and number.is_finite() and number == number.to_integral_value():
            if number.adjusted() >= _MAX_DIGITS:  # int() of 1e999999999 would take all memory
                raise GradnasError(f"config: {where} is too large for a setting, got {_short(value)}")
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, int):
            raise GradnasError(f"config: {where} must be an integer, got {_short(value)}")
        return number
    if kind.startswith("float"):
        number = _number(value) if isinstance(value, str) else value
        if isinstance(number, bool) or not isinstance(number, (int, float, decimal.Decimal)):
            raise GradnasError(f"config: {where} must be a number, got {_short(value)}")
        try:
            number = float(number)
        except ValueError:  # a signalling NaN ("snan")
            number = math.nan
        except OverflowError:
            raise GradnasError(f"config: {where} is too large for a number, got a number of {len(str(value))} "
                               "digits") from None
        if math.isnan(number):
            raise GradnasError(f"config: {where} must be a number, got NaN")
        return number
    if kind.startswith("str"):
        if not isinstance(value, str):
            raise GradnasError(f"config: {where} must be a string, got {value!r}")
        return value
    return value


_MAX_DIGITS = 100  # an integer setting longer than this is no setting


def _number(value):
    """A float or a string as an exact decimal (every spelling Python's float() reads), else ``value`` as it was."""
    try:
        return decimal.Decimal(value.strip() if isinstance(value, str) else value)
    except (decimal.InvalidOperation, ValueError, TypeError):
        return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


# ---- reading YAML: plain data, Python's float spellings, no duplicate keys

# YAML 1.1 (PyYAML's resolver) reads 1e-3, 1E3, 1.5e3 (an exponent without a sign or without a dot) and -.5
# as strings; every one of them is a float to Python's float() and to a user. Added to the float resolver.
_FLOAT_SPELLINGS = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+
                                  |[-+]\.[0-9][0-9_]*)$""", re.X)


class DuplicateKey(yaml.YAMLError):
    """A mapping that names one key twice (PyYAML would keep the last value without a word)."""

    def __init__(self, key, first, again):
        super().__init__(f"key {key!r} appears twice (lines {first.line + 1} and {again.line + 1})")
        self.key, self.first, self.again = key, first, again


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data, no tags that run code) that reads every float spelling Python's
    float() accepts and refuses a mapping with a duplicate key."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` overrides by design
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: SafeConstructor's own error says so
                    continue
                if first is not key_node.start_mark:
                    raise DuplicateKey(key, first, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_SPELLINGS, list("-+.0123456789"))


def parse_yaml(text: str):
    """YAML data from text with :class:`ConfigLoader` (raises yaml.YAMLError, :class:`DuplicateKey` among them)."""
    return yaml.load(text, Loader=ConfigLoader)


def read_yaml_file(path, *, kind: str = "config"):
    """The data of a YAML file, or one GradnasError naming the file, the line and the fix: not UTF-8 text,
    not valid YAML, a tag (nothing is ever run), a key given twice."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise GradnasError(f"{kind} file {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
                           "save it with UTF-8 encoding") from None
    try:
        return parse_yaml(text)
    except ValueError as exc:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise GradnasError(f"{kind} file {path} is not valid YAML: {str(exc).split(';')[0]}") from None
    except DuplicateKey as exc:
        raise GradnasError(f"{kind} file {path}: {exc}; keep one of them") from None
    except yaml.YAMLError as exc:  # one line: the problem and where (PyYAML's own text spans several)
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise GradnasError(f"{kind} file {path} is not valid YAML{where}: {problem}; only plain YAML (no "
                           "!!python tags) is read") from None


def load_yaml(path_or_name: str, *, shipped_dir: Path = CONFIG_DIR, kind: str = "config") -> dict:
    """A config file's mapping. A bare name (``milenas-1st``) means a config shipped with gradnas (in
    ``shipped_dir``; ``kind`` names what is loaded in messages, e.g. "setting"). Read by :func:`read_yaml_file`."""
    path = Path(path_or_name)
    if not path.is_file():
        shipped = shipped_dir / f"{path_or_name}.yaml"
        if not shipped.is_file():
            names = ", ".join(sorted(p.stem for p in shipped_dir.glob("*.yaml")))
            raise GradnasError(f"{kind} {path_or_name!r} not found: give a YAML file path or a shipped {kind} "
                               f"name ({names})")
        path = shipped
    data = read_yaml_file(path, kind=kind)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GradnasError(f"{kind} file {path} must hold a mapping of keys to values")
    return data


def apply_override(d: dict, assignment: str) -> None:
    """Apply one ``key.sub=value`` assignment in place; the value is parsed as YAML data."""
    if "=" not in assignment:
        raise GradnasError(f"--set {assignment!r}: expected key=value, e.g. --set w_optim.lr=0.01")
    key, raw = assignment.split("=", 1)
    try:
        value = parse_yaml(raw)
    except DuplicateKey as exc:
        raise GradnasError(f"--set {assignment!r}: {exc.args[0].split(' (')[0]}; keep one of them") from None
    except (yaml.YAMLError, ValueError):  # not YAML, or an integer past Python's digit limit: the text itself
        value = raw
    parts = key.strip().split(".")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise GradnasError(f"--set {assignment!r}: {p!r} is not a section")
    node[parts[-1]] = value


@dataclass(frozen=True)
class Claim:
    """What one component of a search reads: ``keys`` (dotted keys or whole sections) belong to ``owner`` (e.g.
    "method milenas", "the darts space"); ``active``: whether this search runs that component. For an inactive
    one, ``reason`` says what runs instead and ``hint`` what to do (the running component's word, if any)."""

    owner: str
    keys: tuple
    active: bool
    reason: str = ""
    hint: str = ""
    section: bool = False   # the keys are the owner's config section ("configures" rather than "is read by")
    # whether a value that differs from the default is refused even when the user did not set it explicitly:
    # not for the sections of spaces and relaxations, which one config file may hold for several of them
    strict: bool = True


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_components(cfg: SearchConfig, claims, *, given=None, file_keys=()) -> None:
    """Refuse a setting that only components this search does not run would read, naming the one that would.

    ``given``: the dotted keys the user set explicitly (the command line: its flags and ``--set``), and
    ``file_keys``: the settings of the config file the user chose (``--config``) that differ from their
    defaults, checked against every claim but the sections of spaces and relaxations, which one file may hold
    for several of them; nothing else is checked (the built-in default config, ``quick``, serves every method). ``given=None`` (a config built in Python): a key counts as set when its value
    differs from the default, except in the sections of spaces and relaxations (non-strict claims), which one
    config may hold for several of them. Keys no component claims (the common ones: space, method, relax,
    order, batch_size, seed, device, threads, data, w_optim) are always read."""
    values = flatten(cfg.to_dict())
    defaults = flatten(SearchConfig().to_dict())
    spelled = {"lam": "lambda"}
    by_value = given is None
    given = {spelled.get(k, k) for k in given or ()}
    file_keys = {spelled.get(k, k) for k in file_keys}
    for key in sorted(values):
        readers = [c for c in claims if any(key == k or key.startswith(k + ".") for k in c.keys)]
        if not readers or any(c.active for c in readers):
            continue
        c = readers[0]
        explicit = any(key == g or key.startswith(g + ".") for g in given)
        in_file = c.strict and any(key == g or key.startswith(g + ".") for g in file_keys)
        if not (explicit or in_file or (by_value and c.strict and defaults.get(key, _UNSET) != values[key])):
            continue
        verb = "configures" if c.section else "is read by"
        raise GradnasError(f"config: {key} {verb} {c.owner}, but {c.reason}{': ' + c.hint if c.hint else ''}; "
                           "drop it")


_UNSET = object()


# What a resumed search may change: where and how it runs (compile: the same step, compiled), and when it
# stops, not what an epoch computes.
RESUMABLE_KEYS = ("device", "threads", "compile", "stop.at_size", "stop.when_smaller")


def resume_conflicts(saved: dict, now: dict) -> list:
    """(key, saved value, new value) for every setting a resumed search may not change."""
    return [d for d in config_diff(saved, now) if d[0] not in RESUMABLE_KEYS]


def config_diff(a: dict, b: dict, prefix: str = "") -> list:
    """Dotted keys whose values differ between two config dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append((f"{prefix}{k}", va, vb))
    return out
