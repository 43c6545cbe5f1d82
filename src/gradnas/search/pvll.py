"""PVLL-NAS (Li et al. 2020): search in a proxy validation loss landscape. The pure parts, no data or run folder.

* :class:`LossEstimator` psi (section 3.3, eq. 7): an LSTM reads an architecture as a sequence of per-edge
  K-dimensional vectors (DARTS: the normal cell's edges, then the reduction cell's; NB-201: the one cell),
  a dense layer with a sigmoid maps its last hidden state to an estimated loss in [0, 1].
* :class:`PerformanceMemory` M: a queue of (H, measured validation loss) of bounded length (section 5.1:
  100), each entry also remembering the architecture sampled just before it and its eq. 8 weight, frozen
  when it entered the memory.
* :func:`weighted_mse` (eq. 8), :func:`entry_weight` (its 1/p_t, frozen at entry: the paper's) and
  :func:`pair_weights` (every pair re-scored with the current psi: ``pvll.rescore``); see there for the guard
  against zero.
* :class:`PVLL`: the state Algorithm 1 evolves besides the supernet (architecture parameter A, psi, M and
  their two Adam optimizers) and its steps: sample H_t = GumbelSoftmax(A; xi_t, tau) (eq. 3-4) or uniformly,
  observe its loss, update psi (eq. 8), update A along -grad_A psi(H~) (eq. 10), derive the final weights.

Architectures are (edges, K) tensors; a sampled H is one-hot per edge (eq. 4 computes only the argmax op,
scaled by its soft weight h~_k: :meth:`PVLL.op_weights`).
Validation losses are normalised to [0, 1] by min-max over the memory's current contents whenever psi is
trained or scored (section 3.3 only asks for [0, 1]; min-max keeps the order of the losses, which is all
the A update and Kendall's tau use, and follows the loss scale as the supernet trains).

The driver that measures losses in a supernet is :mod:`gradnas.search.pvll_search`; the tests run this
module on the NAS-Bench-201 table as a synthetic landscape.
"""
from __future__ import annotations

from collections import deque

import torch
import torch.nn as nn

from gradnas.config import PVLLConfig  # noqa: F401  (re-exported: the pvll section)
from gradnas.relax import gumbel_straight_through


class LossEstimator(nn.Module):
    """psi: (..., edges, K) architectures -> (...) estimated normalised validation losses in [0, 1] (eq. 7).

    An LSTM encoder E reads the edges as a sequence of K-dimensional steps; the dense layer D with a sigmoid
    reads E's last hidden state (section 3.3)."""

    def __init__(self, num_ops: int, hidden: int = 64):
        super().__init__()
        self.encoder = nn.LSTM(num_ops, hidden, batch_first=True)
        self.dense = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        lead = h.shape[:-2]
        seq = h.reshape(-1, *h.shape[-2:])
        _, (last, _) = self.encoder(seq)
        return torch.sigmoid(self.dense(last[-1])).reshape(lead)


def kendall_tau(a, b) -> float | None:
    """Kendall's tau-b between two equal-length sequences (O(n^2)); None for fewer than 2 items or when
    one sequence is constant."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) != len(b):
        raise ValueError("kendall_tau needs sequences of equal length")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    denom = ((concordant + discordant + ties_a) * (concordant + discordant + ties_b)) ** 0.5
    return None if denom == 0 else (concordant - discordant) / denom


def normalise(losses: torch.Tensor) -> torch.Tensor:
    """Min-max to [0, 1] over the given losses (all 0.5 when they are equal)."""
    lo, hi = losses.min(), losses.max()
    if hi <= lo:
        return torch.full_like(losses, 0.5)
    return (losses - lo) / (hi - lo)


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 8: (1/T) sum_t w_t (psi(H_t) - L_t)^2 with w_t = 1/p_t (``weights``; None: all 1)."""
    sq = (pred - target) ** 2
    return sq.mean() if weights is None else (weights * sq).mean()


def entry_weight(pred: float, pred_prev: float | None, *, p_min: float, warmup: bool) -> float:
    """The weight 1/p_t of eq. 8 of one entry, computed once, when it enters the memory (``pvll.rescore``
    false, the paper's): p_t = psi_t(H_t) - psi_t(H_{t-1}) with psi_t the estimator of step t (the one the
    memory has trained so far, before this step's update), so the weight is frozen with the entry, as the
    pair (H_t, L_t) itself is. A warm-up entry (the random population P, Algorithm 1 lines 6-10) and an entry
    with no predecessor get weight 1: p_t compares consecutive samples of the sampler, which the warm-up
    population is not. Guard: |p_t| floored at ``p_min`` (see :func:`pair_weights`), so a weight is in
    [1, 1/p_min]; no normalisation (eq. 8 as written: only the relative weights matter to the minimiser, and
    Adam's steps are invariant to the loss scale)."""
    if warmup or pred_prev is None:
        return 1.0
    return 1.0 / max(abs(pred - pred_prev), p_min)


def pair_weights(pred: torch.Tensor, pred_prev: torch.Tensor, has_prev: torch.Tensor, *, p_min: float) -> torch.Tensor:
    """The weights 1/p_t of eq. 8 for the memory's entries, every pair re-scored with the current psi before each
    update (``pvll.rescore: true``; the default, the paper's, freezes each weight at entry: :func:`entry_weight`).
    Re-scoring is kept as an option because psi_t of an early entry was the estimator of a barely warmed-up
    landscape: re-scored, every weight measures the distance of a pair under the psi being trained, which can
    steady the fit when psi moves fast (the paper's p_t uses "the optimal estimator at step t", which neither
    reading has); it also weighs the warm-up population's consecutive pairs.

    p_t = psi(H_t) - psi(H_{t-1}): the change of the estimate between a sample and the one sampled just
    before it, so a sample far (in psi) from its predecessor weighs less. psi* is taken to be the current
    estimator (the "optimal estimator at step t" is not available; psi is re-scored on the whole memory
    before each update, so every weight uses the same psi), and the weights carry no gradient.
    Guard: the difference can be zero (the same cell sampled twice, which the sampler does as A
    converges) or negative, so we use |p_t| floored at ``p_min``: w_t = 1 / max(|p_t|, p_min), at most
    1/p_min. The weights are then divided by their mean, so they average 1 and eq. 8 keeps the scale of a
    plain MSE whatever p_min is (only the relative weights matter to the minimiser; a steady loss scale
    keeps the estimator's Adam steps comparable). An entry with no predecessor (the first sample of a
    run) has no p_t and gets weight 1 (the mean). (Section 4, eq. 11 reads p_t as the probability of
    sampling H_t instead: an importance weight for the theory; we follow section 3.3, which eq. 8 cites.)

    ``pred`` / ``pred_prev``: psi of each entry and of its predecessor; ``has_prev``: bool mask."""
    p = (pred - pred_prev).abs().clamp_min(p_min)
    w = torch.ones_like(pred)
    if bool(has_prev.any()):
        raw = 1.0 / p[has_prev]
        w[has_prev] = raw / raw.mean()
    return w


class PerformanceMemory:
    """M (section 3.3): at most ``maxlen`` entries (H, measured loss, predecessor H or None); the oldest
    entry leaves first (section 5.1: a queue of 100, so the warm-up population is forgotten gradually)."""

    def __init__(self, maxlen: int = 100):
        self.maxlen = maxlen
        self.entries: deque = deque(maxlen=maxlen)

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, h: torch.Tensor, loss: float, prev: torch.Tensor | None, weight: float = 1.0) -> None:
        self.entries.append((h.detach().clone(), float(loss), None if prev is None else prev.detach().clone(),
                             float(weight)))

    def weights(self) -> torch.Tensor:
        """The entries' frozen eq. 8 weights (n,)."""
        return torch.tensor([e[3] for e in self.entries])

    def tensors(self) -> tuple:
        """(H (n, edges, K), losses (n,), predecessors (n, edges, K; zeros where none), has_prev (n,))."""
        hs = torch.stack([e[0] for e in self.entries])
        losses = torch.tensor([e[1] for e in self.entries], dtype=hs.dtype)
        prev = torch.stack([e[2] if e[2] is not None else torch.zeros_like(e[0]) for e in self.entries])
        has_prev = torch.tensor([e[2] is not None for e in self.entries])
        return hs, losses, prev, has_prev

    def state_dict(self) -> dict:
        return {"maxlen": self.maxlen, "h": [e[0] for e in self.entries], "loss": [e[1] for e in self.entries],
                "prev": [e[2] for e in self.entries], "weight": [e[3] for e in self.entries]}

    def load_state_dict(self, state: dict) -> None:
        self.maxlen = int(state["maxlen"])
        weights = state.get("weight", [1.0] * len(state["h"]))  # absent before frozen weights: all 1
        self.entries = deque(zip(state["h"], (float(x) for x in state["loss"]), state["prev"],
                                 (float(w) for w in weights)), maxlen=self.maxlen)


class PVLL:
    """The search state of Algorithm 1 outside the supernet: A (edges, K), psi, M and two Adam optimizers.

    ``generator`` seeds A (1e-3 N(0, 1), as GDAS) and psi's initial weights; every random draw afterwards
    comes from the generator passed to :meth:`draw`, so a caller that seeds it per step resumes exactly."""

    def __init__(self, num_edges: int, num_ops: int, cfg: PVLLConfig, *, seed: int = 0):
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed)
        self.A = (1e-3 * torch.randn(num_edges, num_ops, generator=g, dtype=torch.float64)).requires_grad_(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            self.estimator = LossEstimator(num_ops, cfg.hidden)
        self.memory = PerformanceMemory(cfg.memory)
        self.est_optim = torch.optim.Adam(self.estimator.parameters(), lr=cfg.estimator_lr)
        self.a_optim = torch.optim.Adam([self.A], lr=cfg.arch_lr)
        self.last_h: torch.Tensor | None = None  # the previous sample, H_{t-1}

    # -- sampling
    def draw(self, generator: torch.Generator, *, uniform: bool | None = None) -> tuple:
        """(H, noise): H one-hot (edges, K) float32, sampled from A by Gumbel-max (eq. 3-4: the argmax of
        GumbelSoftmax(A; xi, tau), whatever tau) or, with ``uniform`` (default: the config's), uniformly per
        edge; ``noise`` xi, Gumbel(0, 1) (edges, K), is drawn in both cases (the A update of eq. 10 uses it)."""
        uniform = self.cfg.uniform_sampling if uniform is None else uniform
        e = torch.empty(self.A.shape, dtype=torch.float64).exponential_(generator=generator)
        noise = -e.clamp_min(torch.finfo(torch.float64).tiny).log()
        if uniform:
            index = torch.randint(0, self.A.shape[1], (self.A.shape[0],), generator=generator)
        else:
            index = (self.A.detach().log_softmax(-1) + noise).argmax(-1)
        h = torch.zeros(self.A.shape).scatter_(-1, index.unsqueeze(-1), 1.0)
        return h, noise

    @staticmethod
    def random_architectures(n: int, num_edges: int, num_ops: int, generator: torch.Generator) -> torch.Tensor:
        """n uniformly random one-hot architectures (n, edges, K): the warm-up population P."""
        index = torch.randint(0, num_ops, (n, num_edges), generator=generator)
        return torch.zeros(n, num_edges, num_ops).scatter_(-1, index.unsqueeze(-1), 1.0)

    def op_weights(self, h: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """The op weights (edges, K) the supernet runs sample ``h`` with (eq. 4): with ``op_scale: soft`` (the
        paper's) the sampled op k of each edge is scaled by its soft weight h~_k of eq. 3, GumbelSoftmax(A; xi,
        tau) with the noise xi that drew it (the other ops are not computed); with ``op_scale: one``, or for a
        cell the sampler did not draw from A (``noise`` None: the warm-up population, held-out test cells;
        uniform sampling), weight 1. h~_k enters the supernet as a value: the weights train on h~_k op(x), and
        A follows psi's gradient alone (eq. 10, Algorithm 1 line 18), never the supernet's loss.
        ``op_scale: one`` (as gradnas ran before this option) runs every sampled op at weight 1, so a cell's loss does
        not depend on how sure the sampler was of it: the measured loss is then that of the discrete cell
        (eq. 2) that psi is fed, at the price of the paper's eq. 4."""
        if self.cfg.op_scale == "one" or noise is None or self.cfg.uniform_sampling:
            return h
        soft = torch.softmax((self.A.detach() + noise) / self.cfg.tau, dim=-1)  # eq. 3, in float64
        return h * soft.to(h.dtype)

    # -- memory and estimator
    @torch.no_grad()
    def observe(self, h: torch.Tensor, loss: float, *, warmup: bool = False) -> None:
        """M = M u {(H_t, L_t)}; H_{t-1} is remembered with it for p_t, and (``rescore`` false) its eq. 8 weight
        1/p_t is frozen now with the current psi (:func:`entry_weight`; 1 for a ``warmup`` entry)."""
        weight = 1.0
        if self.cfg.weighted and not self.cfg.rescore and not warmup and self.last_h is not None:
            pred, pred_prev = self.estimator(torch.stack([h, self.last_h]).float()).tolist()
            weight = entry_weight(pred, pred_prev, p_min=self.cfg.p_min, warmup=False)
        self.memory.add(h, loss, self.last_h, weight)
        self.last_h = h.detach().clone()

    def _targets(self):
        hs, losses, prev, has_prev = self.memory.tensors()
        return hs, normalise(losses).float(), prev, has_prev

    def estimator_objective(self) -> torch.Tensor:
        """Eq. 8 on the memory with the current psi: weights 1/p_t frozen at entry (the default), re-scored from
        the current psi (``rescore``; detached), or all 1 (unweighted)."""
        hs, target, prev, has_prev = self._targets()
        pred = self.estimator(hs)
        weights = None
        if self.cfg.weighted and self.cfg.rescore:
            with torch.no_grad():
                weights = pair_weights(pred.detach(), self.estimator(prev), has_prev, p_min=self.cfg.p_min)
        elif self.cfg.weighted:
            weights = self.memory.weights().to(pred.dtype)
        return weighted_mse(pred, target, weights)

    def update_estimator(self, steps: int | None = None) -> float:
        """``steps`` (default: estimator_updates) full-memory Adam steps on eq. 8; returns its final value.
        With ``rescore`` the weights 1/p_t are re-scored from psi before each step."""
        if len(self.memory) < 2:
            return float("nan")
        for _ in range(self.cfg.estimator_updates if steps is None else steps):
            self.est_optim.zero_grad(set_to_none=True)
            loss = self.estimator_objective()
            loss.backward()
            self.est_optim.step()
        with torch.no_grad():
            return float(self.estimator_objective())

    @torch.no_grad()
    def held_out_scores(self, hs: torch.Tensor, losses: torch.Tensor) -> tuple:
        """(estimator loss, Kendall's tau) of psi on held-out cells ``hs`` (n, edges, K) with measured losses
        ``losses`` (n,): the mean squared error against the losses normalised as psi's targets are (min-max
        over the memory's current losses, so a held-out loss outside the memory's range falls outside [0, 1]),
        and tau between psi's estimates and the losses (Table 3 / Fig. 3a score psi on such a set)."""
        losses = losses.double()
        mem = torch.tensor([e[1] for e in self.memory.entries], dtype=torch.float64)
        lo, hi = mem.min(), mem.max()
        target = torch.full_like(losses, 0.5) if hi <= lo else (losses - lo) / (hi - lo)
        pred = self.estimator(hs.float()).double()
        return float(((pred - target) ** 2).mean()), kendall_tau(pred.tolist(), losses.tolist())

    @torch.no_grad()
    def memory_tau(self) -> float | None:
        """Kendall's tau between psi's estimates and the measured losses of the memory's entries."""
        if len(self.memory) < 2:
            return None
        hs, losses, _, _ = self.memory.tensors()
        return kendall_tau(self.estimator(hs).tolist(), losses.tolist())

    # -- architecture parameter
    def arch_gradient(self, noise: torch.Tensor) -> torch.Tensor:
        """grad_A psi(H~) with H~ = GumbelSoftmax(A; xi, tau) (eq. 10), straight through: psi reads the
        one-hot sample (the cell that was measured) and the gradient flows through the soft H~, so
        dpsi/dA_j = sum_k dpsi/dH_k H~_k (delta_kj - H~_j) / tau. Computed in float64: with tau = 0.1 the
        soft sample is nearly one-hot and its small entries would underflow in float32."""
        a = self.A.detach().requires_grad_(True)
        hard, _ = gumbel_straight_through(a, noise, self.cfg.tau)
        est = self.estimator(hard.float().unsqueeze(0)).sum()
        (grad,) = torch.autograd.grad(est, a)
        return grad

    def update_arch(self, noise: torch.Tensor) -> None:
        """A <- A - Adam step along grad_A psi(H~) (eq. 10; Adam with arch_lr, section 5.1)."""
        self.a_optim.zero_grad(set_to_none=True)
        self.A.grad = self.arch_gradient(noise)
        self.a_optim.step()

    def arch_weights(self) -> torch.Tensor:
        """softmax(A) (edges, K): the sampling distribution of Gumbel-max, from which the cell is derived."""
        return torch.softmax(self.A.detach(), dim=-1)

    # -- checkpoint
    def state_dict(self) -> dict:
        return {"A": self.A.detach().clone(), "estimator": self.estimator.state_dict(),
                "est_optim": self.est_optim.state_dict(), "a_optim": self.a_optim.state_dict(),
                "memory": self.memory.state_dict(), "last_h": self.last_h}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.A.copy_(state["A"])
        self.estimator.load_state_dict(state["estimator"])
        self.est_optim.load_state_dict(state["est_optim"])
        self.a_optim.load_state_dict(state["a_optim"])
        self.memory.load_state_dict(state["memory"])
        self.last_h = state["last_h"]
