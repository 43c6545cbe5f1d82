"""Continuous relaxations: how architecture parameters alpha become per-op weights on an edge.

A relaxation owns these decisions: the initial alpha, the map alpha -> op weights, the alpha weight
decay it is meant to be used with, and, for sampling relaxations, which ops a forward pass computes.
Register a new one with ``@register_relaxation``. A supernet calls :meth:`Relaxation.forward_weights`
in its forward pass and :meth:`Relaxation.weights` for derivation and metrics; the search loop calls
:meth:`Relaxation.start_epoch` before every epoch (schedules, per-epoch random streams).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradnas.errors import GradnasError
from gradnas.registry import RESERVED_KEYS, register_section, unregister_section

RELAXATIONS: dict[str, type["Relaxation"]] = {}


def register_relaxation(cls):
    """Register a relaxation class (decorator) under its ``name`` (what ``relax:`` / ``--relax`` take). A plug-in
    with settings declares ``config_class`` (a frozen dataclass) and ``config_section`` (its top-level config
    key); a name already registered is refused."""
    name = getattr(cls, "name", None)
    if not (isinstance(cls, type) and issubclass(cls, Relaxation)) or not isinstance(name, str) or name == "base":
        raise GradnasError(f"register_relaxation: {getattr(cls, '__name__', cls)!r} must be a Relaxation subclass "
                           "with a class attribute `name`")
    if name in RELAXATIONS and RELAXATIONS[name] is not cls:
        raise GradnasError(f"register_relaxation: a relaxation named {name!r} is already registered")
    if cls.config_class is not None and cls.config_section is None:
        raise GradnasError(f"register_relaxation: {name!r} has a config_class but no config_section to read it from")
    if cls.config_section is not None and cls.config_section not in RESERVED_KEYS:
        register_section(cls.config_section, cls.config_class, f"relaxation {name}")
    RELAXATIONS[name] = cls
    return cls


def unregister_relaxation(name: str) -> None:
    """Remove a registered relaxation (tests, interactive sessions)."""
    cls = RELAXATIONS.pop(name, None)
    if cls is not None and cls.config_section is not None and cls.config_section not in RESERVED_KEYS:
        unregister_section(cls.config_section)


class Relaxation:
    name = "base"
    #: alpha weight decay used when the config leaves it unset
    default_arch_weight_decay = 0.0
    #: frozen dataclass of the relaxation's settings, or None if it has none; ``config_section`` is the
    #: top-level config key that holds them
    config_class = None
    config_section = None

    def init_alpha(self, num_edges: int, num_ops: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def weights(self, alpha: torch.Tensor) -> torch.Tensor:
        """(edges, ops) alpha -> (edges, ops) op weights, differentiable; deterministic (derivation, metrics)."""
        raise NotImplementedError

    def forward_weights(self, alpha: torch.Tensor, *, training: bool) -> tuple:
        """(weights, active) for one forward pass: the (edges, ops) op weights, and per edge the op columns
        to compute (a list of tuples), or None when every op of every edge is computed."""
        return self.weights(alpha), None

    def start_epoch(self, *, epoch: int, epochs: int, seed: int) -> dict:
        """Called by the search loop before epoch ``epoch`` (0-based) of ``epochs``; returns the numbers to
        record in that epoch's metrics (none for a deterministic relaxation)."""
        return {}


@register_relaxation
class Softmax(Relaxation):
    """DARTS / MiLeNAS eq. 9: p = softmax(alpha) per edge; alpha ~ 1e-3 N(0, 1)."""

    name = "softmax"
    default_arch_weight_decay = 1e-3

    def init_alpha(self, num_edges, num_ops, generator):
        return 1e-3 * torch.randn(num_edges, num_ops, generator=generator)

    def weights(self, alpha):
        return torch.softmax(alpha, dim=-1)


@register_relaxation
class Sigmoid(Relaxation):
    """Single-level paper, section 3.3 / 4.2: p = sigmoid(alpha), ops do not compete for a unit budget.

    alpha starts at -ln(n - 1) so every op starts at weight 1/n, as softmax would; the paper uses no alpha
    weight decay with sigmoid ("to avoid extra gradients on zero-op").
    """

    name = "sigmoid"
    default_arch_weight_decay = 0.0

    def init_alpha(self, num_edges, num_ops, generator):
        if num_ops < 2:
            raise GradnasError("the sigmoid relaxation needs at least 2 ops per edge")
        return torch.full((num_edges, num_ops), -math.log(num_ops - 1))

    def weights(self, alpha):
        return torch.sigmoid(alpha)


@dataclass(frozen=True)
class GumbelConfig:
    """Temperature schedule of the Gumbel relaxation: linear from tau_max (first epoch) to tau_min (last),
    GDAS's 10 -> 0.1 by default."""

    tau_max: float = 10.0
    tau_min: float = 0.1

    def __post_init__(self):
        if not (0 < self.tau_min <= self.tau_max and math.isfinite(self.tau_max)):
            raise GradnasError(f"gumbel: need 0 < tau_min <= tau_max, got tau_min={self.tau_min}, "
                               f"tau_max={self.tau_max}")


# Added to the (seed, epoch) seed so the Gumbel noise never shares a stream with the data order.
_GUMBEL_STREAM = 0x6D2B79F5


def gumbel_straight_through(alpha: torch.Tensor, noise: torch.Tensor, tau: float) -> tuple:
    """GDAS sampling (MiLeNAS eq. 10): per edge the op k = argmax(alpha_k + u_k), u ~ Gumbel(0, 1), with
    weight exactly 1 in the forward pass and the gradient of p_k = softmax((alpha + u) / tau)_k.

    Returns (hard, index): ``hard`` is one-hot in value (``onehot - p.detach() + p``), ``index`` the sampled
    column per edge. Only the sampled op is computed, so the gradient reaches alpha through p_k alone:
    dL/dalpha_j = (dL/dp_k) p_k (delta_jk - p_j) / tau, non-zero for every op j of the edge. (Computing
    every op would add sum_{j != k} <dL/dout, o_j(x)> dp_j/dalpha, the full straight-through estimate, at
    the cost the sampling exists to avoid.) argmax(alpha + u) is distributed as softmax(alpha) for any tau.
    """
    # log_softmax as in GDAS: softmax is shift-invariant, so this is softmax((alpha + u) / tau) itself.
    p = torch.softmax((alpha.log_softmax(-1) + noise) / tau, dim=-1)
    index = p.detach().argmax(-1, keepdim=True)
    onehot = torch.zeros_like(p).scatter_(-1, index, 1.0)
    return onehot - p.detach() + p, index.squeeze(-1)


@register_relaxation
class Gumbel(Relaxation):
    """GDAS (Dong & Yang 2019; MiLeNAS section 3.3 eq. 10, section 5; PVLL-NAS eq. 3-4): one op per edge
    sampled by Gumbel-max in every training forward pass, straight-through gradient to every alpha of the
    edge (:func:`gumbel_straight_through`). alpha ~ 1e-3 N(0, 1) and alpha weight decay 1e-3, as GDAS.

    The temperature follows a linear schedule over the epochs (:meth:`start_epoch`). The noise comes from
    a generator re-seeded from (seed, epoch) at every epoch, so a resumed search draws the same samples.
    In eval mode the forward pass uses the argmax op of every edge (the derived cell), without noise.
    """

    name = "gumbel"
    default_arch_weight_decay = 1e-3
    config_class = GumbelConfig
    config_section = "gumbel"

    def __init__(self, config: GumbelConfig | None = None):
        self.config = config or GumbelConfig()
        self.tau = self.config.tau_max
        self.generator = torch.Generator().manual_seed(_GUMBEL_STREAM)

    def init_alpha(self, num_edges, num_ops, generator):
        return 1e-3 * torch.randn(num_edges, num_ops, generator=generator)

    def weights(self, alpha):
        # the sampling distribution: what derivation and the metrics see
        return torch.softmax(alpha, dim=-1)

    def tau_at(self, epoch: int, epochs: int) -> float:
        """tau_max at epoch 0 down to tau_min at the last epoch, linearly (GDAS)."""
        c = self.config
        if epochs <= 1:
            return c.tau_max
        return c.tau_max - (c.tau_max - c.tau_min) * epoch / (epochs - 1)

    def start_epoch(self, *, epoch, epochs, seed):
        self.tau = self.tau_at(epoch, epochs)
        self.generator.manual_seed((int(seed) * 1_000_003 + int(epoch) + _GUMBEL_STREAM) % 2**63)
        return {"tau": self.tau}

    def sample_noise(self, shape) -> torch.Tensor:
        """Gumbel(0, 1) noise -log(E), E ~ Exp(1), from this relaxation's CPU generator (same draws on
        every device); in float64 and kept off E = 0, so it is always finite."""
        e = torch.empty(shape, dtype=torch.float64).exponential_(generator=self.generator)
        return -e.clamp_min(torch.finfo(torch.float64).tiny).log()

    def forward_weights(self, alpha, *, training):
        if not training:
            index = alpha.detach().argmax(-1)
            hard = torch.zeros_like(alpha).scatter_(-1, index.unsqueeze(-1), 1.0)
        else:
            noise = self.sample_noise(alpha.shape).to(device=alpha.device, dtype=alpha.dtype)
            hard, index = gumbel_straight_through(alpha, noise, self.tau)
        return hard, [(k,) for k in index.tolist()]


def make_relaxation(name: str, config=None) -> Relaxation:
    """The relaxation ``name``, with its settings ``config`` (an instance of its ``config_class``; None: defaults)."""
    try:
        cls = RELAXATIONS[name]
    except KeyError:
        raise GradnasError(f"unknown relaxation {name!r}; valid: {', '.join(sorted(RELAXATIONS))}") from None
    if cls.config_class is None:
        if config is not None:
            raise GradnasError(f"relaxation {name!r} takes no settings")
        return cls()
    return cls(config)
