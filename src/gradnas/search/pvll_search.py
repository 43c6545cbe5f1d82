"""PVLL-NAS against a real supernet (Algorithm 1): the run behind `gradnas search --method pvll`.

The run is a list of rounds, one architecture each (``phase`` in metrics.jsonl):

* ``warmup-train`` (Algorithm 1 lines 2-4): each of the N random architectures of the warm-up population is
  trained in the supernet;
* ``warmup-eval`` (lines 6-10): each is trained again and its validation loss measured into the memory;
  after the last one psi is warmed up on the memory (line 11, ``pvll.warmup_updates`` steps);
* ``search`` (lines 12-19), T steps: sample H_t from A (or uniformly), with ``order: 2`` train it (the paper's
  main setting, "2nd order estimation", section 5.4), measure its loss, add it to the memory, update psi,
  update A by psi's gradient (eq. 10). ``order: 1`` measures without training (the "1st order
  estimation": the supernet is trained only in the warm-up). Without the warm-up (``pvll.warmup: false``)
  the search runs T + N steps (Table 5's equal budget) and needs order 2, or nothing would train the weights.

A sampled architecture runs in the supernet as one op per edge (eq. 4), scaled by its soft weight h~_k
(``pvll.op_scale: soft``; ``one``: weight 1; :meth:`~gradnas.search.pvll.PVLL.op_weights`): the supernet's alpha
holds those op weights under :class:`OneHotRelaxation` (the one-hot H when the round's cell is read back), and A
lives in :class:`~gradnas.search.pvll.PVLL`.
"Training" an architecture = ``pvll.train_batches`` SGD steps on the weight half (null: one pass, the paper's
"1 epoch"), the weight lr following a cosine over all training rounds (section 5.1); "measuring" = the mean
cross-entropy on ``pvll.val_batches`` batches of the architecture half (a fixed random subset; null: all of
it), the same images for every architecture, without augmentation and with batch statistics in BN (running statistics
mix every architecture the shared supernet has run, so they describe none of them).

Every round appends one line to metrics.jsonl and writes the checkpoint (supernet, SGD state, A, psi, the
memory and both Adam states): a resumed run continues at the next round exactly, since every random draw of
a round (H_t and its Gumbel noise) comes from a generator seeded by (seed, round), and the training batches
are a fixed stream indexed by the count of training rounds. The derived cell (softmax(A), the space's
derivation) and, on NB-201, its benchmark figures are recorded every round and in summary.json.

Held-out cells (``pvll.test_cells: N``, Table 3 / Fig. 3a): N cells drawn uniformly from the seed (distinct, none
of them in the warm-up population), kept in the checkpoint. After every round that updates psi they are measured
as the round's cell was (the same images, batch statistics, their one-hot H at weight 1), without training them
(training a held-out cell would train the shared supernet on it), with the supernet's buffers restored
afterwards, so the search itself is the same with or without them; the round records ``test_loss`` (psi's MSE
against their losses, normalised like the memory's) and ``test_kendall_tau``, and summary.json the last ones.
Cost: N measurements per search round.
"""
from __future__ import annotations

import math
import time
from itertools import islice

import torch
import torch.nn.functional as F
from tqdm import tqdm

from gradnas.benchmark import benchmark_for, format_benchmark
from gradnas.config import PVLLConfig
from gradnas.data.loader import ShuffledBatches
from gradnas.errors import GradnasError
from gradnas.relax import Relaxation
from gradnas.run import CheckpointMismatch
from gradnas.search import callbacks as cbs
from gradnas.search.algorithm import SearchAlgorithm, register_method
from gradnas.search.pvll import PVLL
from gradnas.space import build_supernet

# Added to the (seed, round) seed so the sampler never shares a stream with the data order.
_PVLL_STREAM = 0x51F15EED
_TEST_STREAM = 0x7E57CE11  # the held-out cells' stream (pvll.test_cells)


def _stream_seed(seed: int, stream: int) -> int:
    return (seed * 1_000_003 + stream) % 2**63


class OneHotRelaxation(Relaxation):
    """alpha *is* the op-weight matrix: PVLL writes the sampled cell's op weights there (one non-zero per row: 1,
    or h~_k with op_scale soft), and the supernet computes only the op each row selects, times that weight. Not
    a registered relaxation: only PVLL sets alpha."""

    name = "one-hot"

    def init_alpha(self, num_edges, num_ops, generator):
        return torch.zeros(num_edges, num_ops).index_fill_(1, torch.tensor([num_ops - 1]), 1.0)

    def weights(self, alpha):
        return alpha

    def forward_weights(self, alpha, *, training):
        return alpha, [(k,) for k in alpha.detach().argmax(-1).tolist()]


@register_method
class PVLLSearch(SearchAlgorithm):
    """PVLL-NAS (module doc), one round per unit. Order 2 trains each sampled cell before measuring its loss,
    order 1 measures it as it is (section 5.4)."""

    name = "pvll"
    orders = (1, 2)
    unit = "round"
    uses_relaxation = False  # H is sampled from softmax(A) by PVLL itself
    relaxations = ("softmax", "gumbel")
    single_process_reason = " (its steps are one architecture each)"
    config_section, config_class = "pvll", PVLLConfig
    nan_fix = "Lower the weight learning rate (w_optim.lr) or check the data, then start a new run."
    nan_context = " of pvll"
    # What to do instead of the settings of other components (gradnas.config.check_components names them).
    hints = {
        "epochs": "its budget is pvll.steps search steps after pvll.population warm-up architectures "
                  "(--set pvll.steps=N)",
        "switch_at": "a method schedule switches per-batch methods at an epoch; pvll runs its own steps",
        "then": "a method schedule switches per-batch methods at an epoch; pvll runs its own steps",
        "then_order": "a method schedule switches per-batch methods at an epoch; pvll runs its own steps",
        "gumbel": "pvll's Gumbel temperature is constant, pvll.tau (paper: 0.1); the gumbel section's schedule "
                  "does not apply",
        "arch_optim": "pvll's A is optimized by Adam with pvll.arch_lr",
        "xi": "xi and fd_scale belong to the virtual step of darts / milenas order 2; pvll order 2 trains the "
              "sampled cell",
        "fd_scale": "xi and fd_scale belong to the virtual step of darts / milenas order 2; pvll order 2 trains "
                    "the sampled cell",
        "data.eval_batches": "it sizes the end-of-epoch validation of the other methods; pvll measures each cell "
                             "on pvll.val_batches batches",
        "alpha_data": "pvll measures losses on the architecture half; alpha_data must be split",
        "probes": "the probes measure per-epoch gradients of the per-batch methods; they do not run with pvll",
        "collapse": "the collapse watch runs at epoch ends; pvll has no epochs",
        "stop": "the model-size stop rules judge the genotype at epoch ends; pvll has no epochs",
    }

    @classmethod
    def check_config(cls, cfg) -> None:
        """Refuse what pvll cannot run (each message names what to do instead); the settings of other components
        are refused by gradnas.config.check_components."""
        if cfg.relax not in cls.relaxations:
            raise GradnasError(f"method pvll: pvll samples by Gumbel-max from softmax(A) (relax softmax or gumbel), "
                               f"not relax {cfg.relax!r}")
        if cfg.data.split_fraction == 1:
            raise GradnasError("method pvll: pvll measures every cell's loss on the architecture half, and "
                               "data.split_fraction 1 leaves none; use a split_fraction below 1")
        if not cfg.pvll.warmup and cfg.order == 1:
            raise GradnasError("method pvll: pvll.warmup false with order 1 would measure every loss on an untrained "
                               "supernet (order 1 trains it only in the warm-up); use order 2")

    def __init__(self, cfg, *, data, device, world):
        self.cfg, self.device, self.world = cfg, device, world
        pc = cfg.pvll
        self.split, self.augment, data = data.split, data.augment, data.dataset
        w_idx, a_idx = self.split.weight_idx, self.split.arch_idx
        self.batches = ShuffledBatches(data.train_x[w_idx], data.train_y[w_idx], batch_size=cfg.batch_size,
                                       augment=self.augment, device=self.device, seed=cfg.seed)
        self.train_per_round = pc.train_batches or len(self.batches)
        n_val = len(a_idx) if pc.val_batches is None else min(len(a_idx), pc.val_batches * cfg.batch_size)
        if n_val < 1:  # pragma: no cover - the split guarantees a non-empty architecture half
            raise GradnasError("the architecture half of the search split is empty")
        # The measurement set: the same images for every architecture, normalised once, on the device. A random
        # (seeded) subset of the architecture half: the half is sorted by index, and an image folder lists its
        # images class by class, so its first images would cover only a few classes.
        pick = a_idx[torch.randperm(len(a_idx), generator=torch.Generator().manual_seed(cfg.seed + _PVLL_STREAM))[:n_val]]
        self.val_x = self.augment(data.train_x[pick].to(self.device), None, train=False)
        self.val_y = data.train_y[pick].to(self.device, dtype=torch.int64)

        self.model = build_supernet(cfg.space, cfg.space_config, OneHotRelaxation(), in_channels=data.channels,
                                    num_classes=data.num_classes, seed=cfg.seed).to(self.device)
        self.alphas = self.model.arch_parameters()
        for a in self.alphas:  # H is set, never learned, in the supernet
            a.requires_grad_(False)
        self.kinds = list(self.model.edge_weights())  # darts: normal, reduce; nb201: cell
        self.ops = tuple(self.model.cfg.ops)
        self.rows = [a.shape[0] for a in self.alphas]
        self.benchmark = benchmark_for(cfg.space)
        self.weights = self.model.weight_parameters()
        self.w_optim = torch.optim.SGD(self.weights, lr=cfg.w_optim.lr, momentum=cfg.w_optim.momentum,
                                       weight_decay=cfg.w_optim.weight_decay, nesterov=cfg.w_optim.nesterov)
        self.pvll = PVLL(sum(self.rows), len(self.ops), pc, seed=cfg.seed)
        # The warm-up population P: uniformly random architectures, from the seed alone.
        self.population = PVLL.random_architectures(pc.population, sum(self.rows), len(self.ops),
                                                    torch.Generator().manual_seed(cfg.seed + _PVLL_STREAM))
        self.plan = ([("warmup-train", i) for i in range(pc.population)] +
                     [("warmup-eval", i) for i in range(pc.population)] if pc.warmup else [])
        self.plan += [("search", t) for t in range(pc.search_steps)]
        self.test_h = self._held_out_cells(pc.test_cells) if pc.test_cells else None
        self.last_test: dict = {}  # the last round's held-out figures (summary.json)
        self.training_rounds = sum(1 for phase, _ in self.plan if self._trains(phase))
        self.trained = 0  # training rounds done: the index into the batch stream and the lr schedule
        self._stream = None  # (next batch position, iterator) of the training batch stream
        self.run = None  # the harness, while it runs this search (its NaN error)
        self._bar = None
        self.measured = None  # (genotype, accuracy) of the cell the round in flight measured

    def builtin_callbacks(self) -> list:
        return [cbs.AlphaWatch(lambda: [self.pvll.A], hint="lower pvll.arch_lr"),
                *cbs.BenchmarkLookup.for_space(self.cfg.space), cbs.GenotypeWriter()]

    def units(self) -> int:
        return len(self.plan)

    def genotype(self):
        return self.derived()[0]

    # -- pieces of a round
    def _held_out_cells(self, n: int) -> torch.Tensor:
        """n distinct uniformly random one-hot cells (n, edges, K), none in the warm-up population, from the seed
        (a stream of their own: the population and the sampler draw the same with or without them)."""
        g = torch.Generator().manual_seed(_stream_seed(self.cfg.seed, _TEST_STREAM))
        edges, k = sum(self.rows), len(self.ops)
        if k ** edges < n + (self.cfg.pvll.population if self.cfg.pvll.warmup else 0):
            raise GradnasError(f"pvll.test_cells {n}: the space has only {k ** edges} cells; use fewer")
        seen = {tuple(c.argmax(-1).tolist()) for c in self.population} if self.cfg.pvll.warmup else set()
        cells = []
        while len(cells) < n:
            c = PVLL.random_architectures(1, edges, k, g)[0]
            key = tuple(c.argmax(-1).tolist())
            if key not in seen:
                seen.add(key)
                cells.append(c)
        return torch.stack(cells)

    def _score_held_out(self, round_index: int) -> dict:
        """Measure the held-out cells in the supernet as it stands (buffers restored), score psi on them."""
        buffers = {name: b.detach().clone() for name, b in self.model.named_buffers()}
        try:
            losses = []
            for h in self.test_h:
                self._set_architecture(h)
                losses.append(self._measure(round_index)[0])
        finally:
            with torch.no_grad():
                for name, b in self.model.named_buffers():
                    b.copy_(buffers[name])
        loss, tau = self.pvll.held_out_scores(self.test_h, torch.tensor(losses, dtype=torch.float64))
        self.last_test = {"test_loss": loss, "test_kendall_tau": tau}
        return dict(self.last_test)

    def _trains(self, phase: str) -> bool:
        return phase != "search" or self.cfg.order == 2

    def _set_architecture(self, h: torch.Tensor) -> None:
        with torch.no_grad():
            for a, part in zip(self.alphas, h.split(self.rows)):
                a.copy_(part.to(a.device, a.dtype))

    def _lr(self, j: int) -> float:
        """Cosine annealing from w_optim.lr to lr_min over the training rounds (section 5.1), at round j."""
        w = self.cfg.w_optim
        return w.lr_min + (w.lr - w.lr_min) * (1 + math.cos(math.pi * j / self.training_rounds)) / 2

    def _next_batches(self):
        """This training round's batches: the next ``train_per_round`` of one endless stream (epoch 0 of
        the weight half's shuffled batches, then epoch 1, ...), so a round starts where the last one ended."""
        start, n = self.trained * self.train_per_round, self.train_per_round
        if self._stream is None or self._stream[0] != start:
            epoch, skip = divmod(start, len(self.batches))
            self._stream = (start, self._endless(epoch, skip))
        self._stream = (start + n, self._stream[1])
        return islice(self._stream[1], n)

    def _endless(self, epoch: int, skip: int):
        it = islice(self.batches.epoch(epoch), skip, None)
        while True:
            yield from it
            epoch += 1
            it = self.batches.epoch(epoch)

    def _train(self, round_index: int) -> dict:
        lr = self._lr(self.trained)
        for group in self.w_optim.param_groups:
            group["lr"] = lr
        self.model.train()
        loss_sum, correct, n = 0.0, 0, 0
        for step, (x, y) in enumerate(self._next_batches()):
            self.w_optim.zero_grad(set_to_none=True)
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            if not math.isfinite(loss.item()):
                raise self.run.nan_error(round_index, f"training (batch {step})")
            loss.backward(inputs=self.weights)
            if self.cfg.w_optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.weights, self.cfg.w_optim.grad_clip)
            self.w_optim.step()
            loss_sum += loss.item() * y.numel()
            correct += int((logits.detach().argmax(1) == y).sum())
            n += y.numel()
        self.trained += 1
        return {"lr": lr, "train_loss": loss_sum / n, "train_acc": 100.0 * correct / n}

    @torch.no_grad()
    def _measure(self, round_index: int) -> tuple:
        """(mean cross-entropy, accuracy %) of the architecture in the supernet on the measurement set."""
        self.model.train()  # batch statistics: see the module docstring
        loss_sum, correct = 0.0, 0
        bs = self.cfg.batch_size
        for start in range(0, len(self.val_y), bs):
            x, y = self.val_x[start:start + bs], self.val_y[start:start + bs]
            logits = self.model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        loss = loss_sum / len(self.val_y)
        if not math.isfinite(loss):
            raise self.run.nan_error(round_index, "validation")
        return loss, 100.0 * correct / len(self.val_y)

    def _ops_of(self, h: torch.Tensor) -> dict:
        return {kind: [self.ops[k] for k in part.argmax(-1).tolist()] for kind, part in zip(self.kinds, h.split(self.rows))}

    def derived(self):
        """(genotype, edge_weights) derived from softmax(A) by the space's own derivation."""
        saved = [a.detach().clone() for a in self.alphas]
        self._set_architecture(self.pvll.arch_weights().float())
        try:
            return self.model.genotype(), self.model.edge_weights()
        finally:
            for a, s in zip(self.alphas, saved):
                with torch.no_grad():
                    a.copy_(s)

    # -- state
    def state_dict(self) -> dict:
        return {"trained": self.trained, "model": self.model.state_dict(), "w_optim": self.w_optim.state_dict(),
                "pvll": self.pvll.state_dict(),
                **({"test_h": self.test_h, "last_test": self.last_test} if self.test_h is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.w_optim.load_state_dict(state["w_optim"])
        self.pvll.load_state_dict(state["pvll"])
        self.trained = int(state["trained"])
        if self.test_h is not None:  # the held-out set the run started with, and its last figures
            if "test_h" not in state or state["test_h"].shape != self.test_h.shape:
                raise CheckpointMismatch("holds no held-out cells of this size (pvll.test_cells)")
            self.test_h = state["test_h"]
            self.last_test = dict(state.get("last_test", {}))

    # -- the rounds
    def start(self, run) -> None:
        self.run = run
        self._bar = tqdm(total=len(self.plan), initial=run.done, disable=None if run.progress else True, unit="round",
                         desc="pvll")

    def end(self, run) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def summary(self, *, done: int, finished: bool) -> dict:
        total = len(self.plan)
        genotype, _ = self.derived()
        summary = {"rounds_done": done, "rounds": total, "finished": finished, "genotype": genotype.to_string(),
                   **self.last_test}
        if finished:
            # The argmax-of-A sub-network (for nb201 exactly the derived cell) measured as every sample was.
            self._set_architecture(torch.zeros_like(self.pvll.A, dtype=torch.float32).scatter_(
                -1, self.pvll.A.detach().argmax(-1, keepdim=True), 1.0))
            summary["valid_loss"], summary["valid_acc"] = self._measure(total)
        return summary

    def run_unit(self, r: int, run) -> dict:
        t0 = time.time()
        pc = self.cfg.pvll
        phase, i = self.plan[r]
        record = {"epoch": r + 1, "phase": phase, "step": i + 1}
        self.measured = None
        noise = None
        if phase == "search":
            g = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + r + _PVLL_STREAM) % 2**63)
            h, noise = self.pvll.draw(g)
        else:
            h = self.population[i]
        weights = self.pvll.op_weights(h, noise)  # eq. 4: h~_k on the sampled op (op_scale soft), else 1
        self._set_architecture(weights)
        record["sampled"] = self._ops_of(h)
        if self._trains(phase):
            record.update(self._train(r))
        if phase != "warmup-train":
            loss, acc = self._measure(r)
            record.update(measured_loss=loss, measured_acc=acc)
            if weights is not h:
                self._set_architecture(h)  # the cell itself (one-hot) for its genotype and benchmark figures
            self.measured = (self.model.genotype(), acc)  # the sampled cell (alpha holds H), as measured
            self.pvll.observe(h, loss, warmup=phase != "search")
            est = None
            if phase == "search":
                est = self.pvll.update_estimator()
                self.pvll.update_arch(noise)
            elif i == pc.population - 1:  # Algorithm 1 line 11: warm up psi on the whole population
                est = self.pvll.update_estimator(pc.warmup_updates)
            if est is not None and math.isfinite(est):
                record["estimator_loss"] = est
                record["kendall_tau"] = self.pvll.memory_tau()
                if self.test_h is not None:
                    record.update(self._score_held_out(r))
                    self._set_architecture(h)
            record["memory"] = len(self.pvll.memory)
        genotype, edge_weights = self.derived()
        self.last_genotype = genotype
        record["genotype"] = genotype.to_string()
        if self.benchmark:  # and the sampled cell's (the supernet's alpha holds H again after `derived`)
            record["sampled_" + self.benchmark[0]] = self.benchmark[1](self.model.genotype())
        record["edge_weights"] = edge_weights
        record["round_time"] = time.time() - t0
        self._bar.update(1)
        if run.progress:
            post = {"phase": phase}
            if "measured_loss" in record:
                post["loss"] = f"{record['measured_loss']:.3f}"
            if record.get("kendall_tau") is not None:
                post["tau"] = f"{record['kendall_tau']:.2f}"
            self._bar.set_postfix(post)
        return record

    def validated(self, record: dict):
        """A round measures its *sampled* cell on the architecture half, not the cell derived from A: the round's
        validated genotype is the sampled one (the space's derivation of H) with its measured accuracy; None for
        a warm-up training round, which measures nothing."""
        if self.measured is None:
            return None
        genotype, acc = self.measured
        return genotype, float(acc), "measured_acc"

    def progress_line(self, record: dict) -> str | None:
        phase, i = self.plan[record["epoch"] - 1]
        if phase == "search" and (i + 1) % 10 == 0 or record["epoch"] == len(self.plan):
            bench = (f"  {self.benchmark[0]} {format_benchmark(record[self.benchmark[0]])}"
                     if self.benchmark and self.benchmark[0] in record else "")  # BenchmarkLookup's figures
            return f"pvll step {i + 1}/{self.cfg.pvll.search_steps}  {self.last_genotype}{bench}"
        return None
