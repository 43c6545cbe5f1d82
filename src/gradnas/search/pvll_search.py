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

A sampled architecture runs in the supernet as one op per edge, weight exactly 1 (eq. 4): the supernet's
alpha holds the one-hot H itself under :class:`OneHotRelaxation`, and A lives in :class:`~gradnas.search.pvll.PVLL`.
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
"""
from __future__ import annotations

import json
import math
import time
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from gradnas import distributed
from gradnas.benchmark import benchmark_for, format_benchmark
from gradnas.checkpoint import keep_metrics_until, resume_point, save_checkpoint
from gradnas.config import SearchConfig
from gradnas.data import Augment, SearchSplit, load_dataset, make_search_split
from gradnas.data.loader import ShuffledBatches
from gradnas.errors import GradnasError
from gradnas.relax import GumbelConfig, Relaxation
from gradnas.search.loop import (CHECKPOINT_FILE, GENOTYPE_FILE, METRICS_FILE, SPLIT_FILE, SUMMARY_FILE, Search,
                                 _write_json, check_names, resolve_device)
from gradnas.search.pvll import PVLL
from gradnas.signals import Interrupted, StopOnSignal
from gradnas.space import build_supernet
from gradnas.space.genotype import save_genotype

# Added to the (seed, round) seed so the sampler never shares a stream with the data order.
_PVLL_STREAM = 0x51F15EED


class OneHotRelaxation(Relaxation):
    """alpha *is* the op-weight matrix: PVLL writes the sampled one-hot H there, and the supernet computes
    only the op each row selects (weight exactly 1). Not a registered relaxation: only PVLL sets alpha."""

    name = "one-hot"

    def init_alpha(self, num_edges, num_ops, generator):
        return torch.zeros(num_edges, num_ops).index_fill_(1, torch.tensor([num_ops - 1]), 1.0)

    def weights(self, alpha):
        return alpha

    def forward_weights(self, alpha, *, training):
        return alpha, [(k,) for k in alpha.detach().argmax(-1).tolist()]


def check_pvll_config(cfg: SearchConfig) -> None:
    """Refuse the settings of other methods that PVLL would not read (each names what to do instead)."""
    from gradnas.config import ArchOptimConfig, CollapseConfig
    from gradnas.search.probes import ProbeConfig
    problems = [
        (cfg.then is not None, "a method schedule (switch_at / then) switches per-batch methods at an epoch; "
                               "pvll runs its own steps. Drop switch_at and then"),
        (cfg.relax not in ("softmax", "gumbel"),
         f"pvll samples by Gumbel-max from softmax(A) (relax softmax or gumbel), not relax {cfg.relax!r}"),
        (cfg.gumbel != GumbelConfig(), "pvll's Gumbel temperature is constant, pvll.tau (paper: 0.1); the gumbel "
                                       "section's schedule does not apply. Drop the gumbel settings"),
        (cfg.arch_optim != ArchOptimConfig(), "arch_optim configures the alpha optimizer of darts, milenas and "
                                              "single-level; pvll's A is optimized by Adam with pvll.arch_lr"),
        (cfg.xi is not None or cfg.fd_scale is not None, "xi and fd_scale belong to the virtual step of darts / "
                                                         "milenas order 2; pvll order 2 trains the sampled cell"),
        (cfg.data.eval_batches is not None, "data.eval_batches sizes the end-of-epoch validation of the other "
                                            "methods; pvll measures each cell on pvll.val_batches batches"),
        (cfg.alpha_data != "split", "pvll measures losses on the architecture half; alpha_data must be split"),
        (cfg.probes != ProbeConfig(), "the probes measure per-epoch gradients of the per-batch methods; they do "
                                      "not run with pvll. Drop the probe settings"),
        (cfg.collapse.lr_decay, "collapse.lr_decay lowers the lr at epoch ends; pvll has no epochs"),
        (cfg.collapse != CollapseConfig() and not cfg.collapse.lr_decay,
         "the collapse watch runs at epoch ends; pvll has no epochs. Drop the collapse settings"),
        (cfg.stop.at_size is not None or cfg.stop.when_smaller is not None,
         "the model-size stop rules (stop.at_size, stop.when_smaller) judge the genotype at epoch ends; pvll has "
         "no epochs. Drop them"),
        (not cfg.pvll.warmup and cfg.order == 1,
         "pvll.warmup false with order 1 would measure every loss on an untrained supernet (order 1 trains it "
         "only in the warm-up); use order 2"),
    ]
    for bad, message in problems:
        if bad:
            raise GradnasError(f"method pvll: {message}")


class PVLLSearch(Search):
    """A PVLL-NAS search run, built from a config; :meth:`run` executes the remaining rounds. It shares the
    run folder, split, checkpoint format and error style of :class:`~gradnas.search.loop.Search`."""

    def __init__(self, cfg: SearchConfig, out_dir, *, resume: bool = False, progress: bool = True):
        self.cfg, self.out, self.progress = cfg, Path(out_dir), progress
        check_names(cfg)  # includes check_pvll_config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.world = distributed.world()
        if self.world.size > 1:
            raise GradnasError("method pvll runs in one process (its steps are one architecture each); start it "
                               "without torchrun")
        self.device = resolve_device(cfg.device)
        self._prepare_folder(resume)
        pc = cfg.pvll

        data = load_dataset(cfg.data.dataset, cfg.data.data_dir)
        split_path = self.out / SPLIT_FILE
        if resume and split_path.is_file():
            self.split = SearchSplit.from_dict(json.loads(split_path.read_text()))
        else:
            self.split = make_search_split(len(data.train_y), fraction=cfg.data.split_fraction, seed=cfg.seed,
                                           subset=cfg.data.subset)
            _write_json(split_path, self.split.to_dict())
        self.augment = Augment(data.mean, data.std, crop_padding=cfg.data.crop_padding, flip=cfg.data.flip,
                               cutout=cfg.data.cutout)
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
        self.training_rounds = sum(1 for phase, _ in self.plan if self._trains(phase))
        self.round = 0
        self.trained = 0  # training rounds done: the index into the batch stream and the lr schedule
        self._stream = None  # (next batch position, iterator) of the training batch stream
        state = resume_point(self.out, unit="round", map_location=self.device) if resume else None
        if state is not None:
            self._load(state)

    # -- pieces of a round
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
                raise self._pvll_nan(round_index, f"training (batch {step})")
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
            raise self._pvll_nan(round_index, "validation")
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
        return {"config": self.cfg.to_dict(), "round": self.round, "trained": self.trained,
                "model": self.model.state_dict(), "w_optim": self.w_optim.state_dict(),
                "pvll": self.pvll.state_dict()}

    def _load(self, state: dict) -> None:
        self._check_same_config(state)  # Search's
        try:
            self.model.load_state_dict(state["model"])
            self.w_optim.load_state_dict(state["w_optim"])
            self.pvll.load_state_dict(state["pvll"])
            self.round, self.trained = int(state["round"]), int(state["trained"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise GradnasError(f"checkpoint in {self.out} does not match this search ({str(exc).splitlines()[0]}); "
                               "start a new --out") from None
        # Metrics lines past the checkpoint belong to rounds that will be run again.
        keep_metrics_until(self.out / METRICS_FILE, self.round)

    def _pvll_nan(self, round_index: int, where: str) -> GradnasError:
        last = (f"the last good checkpoint (round {self.round}) is in {self.out}" if self.round else
                "no round had finished, so there is no checkpoint")
        return GradnasError(f"the {where} loss became NaN/inf in round {round_index + 1} of pvll; {last}. Lower "
                            "the weight learning rate (w_optim.lr) or check the data, then start a new run.")

    # -- the loop
    def run(self, *, stop_after_round: int | None = None, stop_after_epoch: int | None = None,
            stop_on_signal: bool = False) -> dict:
        """Run the remaining rounds; ``stop_after_round`` ends early after that many (as a crash would).
        (``stop_after_epoch`` is the same, for callers written against :class:`Search`.) With
        ``stop_on_signal`` a SIGINT / SIGTERM lets the round in flight finish (its checkpoint is written at
        its end) and raises :class:`gradnas.signals.Interrupted`."""
        stop = stop_after_round if stop_after_round is not None else stop_after_epoch
        total = len(self.plan)
        bar = tqdm(total=total, initial=self.round, disable=not self.progress, unit="round", desc="pvll")
        try:
            with StopOnSignal(stop_on_signal) as guard:
                while self.round < total:
                    if stop is not None and self.round >= stop:
                        break
                    self._run_round(self.round, bar)
                    if guard.requested and self.round < total:
                        raise Interrupted(f"stopped by {guard.name} after round {self.round}/{total}; its checkpoint "
                                          f"is saved. Continue with:\n  gradnas search --resume {self.out}",
                                          signum=guard.requested)
        finally:
            bar.close()
        genotype, _ = self.derived()
        summary = {"rounds_done": self.round, "rounds": total, "finished": self.round >= total,
                   "genotype": genotype.to_string(), "run_dir": str(self.out)}
        if self.benchmark:
            summary[self.benchmark[0]] = self.benchmark[1](genotype)
        if summary["finished"]:
            # The argmax-of-A sub-network (for nb201 exactly the derived cell) measured as every sample was.
            self._set_architecture(torch.zeros_like(self.pvll.A, dtype=torch.float32).scatter_(
                -1, self.pvll.A.detach().argmax(-1, keepdim=True), 1.0))
            summary["valid_loss"], summary["valid_acc"] = self._measure(total)
            _write_json(self.out / SUMMARY_FILE, summary)
        return summary

    def _run_round(self, r: int, bar) -> None:
        t0 = time.time()
        pc = self.cfg.pvll
        phase, i = self.plan[r]
        record = {"epoch": r + 1, "phase": phase, "step": i + 1}
        noise = None
        if phase == "search":
            g = torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + r + _PVLL_STREAM) % 2**63)
            h, noise = self.pvll.draw(g)
        else:
            h = self.population[i]
        self._set_architecture(h)
        record["sampled"] = self._ops_of(h)
        if self._trains(phase):
            record.update(self._train(r))
        if phase != "warmup-train":
            loss, acc = self._measure(r)
            record.update(measured_loss=loss, measured_acc=acc)
            self.pvll.observe(h, loss)
            est = None
            if phase == "search":
                est = self.pvll.update_estimator()
                self.pvll.update_arch(noise)
            elif i == pc.population - 1:  # Algorithm 1 line 11: warm up psi on the whole population
                est = self.pvll.update_estimator(pc.warmup_updates)
            if est is not None and math.isfinite(est):
                record["estimator_loss"] = est
                record["kendall_tau"] = self.pvll.memory_tau()
            record["memory"] = len(self.pvll.memory)
        genotype, edge_weights = self.derived()
        record["genotype"] = genotype.to_string()
        if self.benchmark:
            record[self.benchmark[0]] = self.benchmark[1](genotype)
            if self.cfg.space == "nb201":
                from gradnas.space.genotype import NB201Genotype
                sampled = NB201Genotype.from_weights(h.tolist(), self.ops)
                record["sampled_" + self.benchmark[0]] = self.benchmark[1](sampled)
        record["edge_weights"] = edge_weights
        record["round_time"] = time.time() - t0
        self.round = r + 1
        with open(self.out / METRICS_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        save_genotype(genotype, self.out / GENOTYPE_FILE)
        save_checkpoint(self.state_dict(), self.out / CHECKPOINT_FILE)
        bar.update(1)
        if self.progress:
            post = {"phase": phase}
            if "measured_loss" in record:
                post["loss"] = f"{record['measured_loss']:.3f}"
            if record.get("kendall_tau") is not None:
                post["tau"] = f"{record['kendall_tau']:.2f}"
            bar.set_postfix(post)
            if phase == "search" and (i + 1) % 10 == 0 or r + 1 == len(self.plan):
                bench = (f"  {self.benchmark[0]} {format_benchmark(record[self.benchmark[0]])}"
                         if self.benchmark else "")
                tqdm.write(f"pvll step {i + 1}/{pc.search_steps}  {genotype}{bench}")
