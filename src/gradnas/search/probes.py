"""Optional per-epoch probes of a search: the quantities the papers plot to explain what a search does.

All are off by default; each is switched on in the ``probes`` config section (or a `gradnas search`
flag) and recorded in metrics.jsonl under its own key, once per epoch, after the epoch's validation:

* ``gap`` (MiLeNAS Figure 2a): loss and accuracy of the supernet on the weight half and on the
  architecture half, both in eval mode without augmentation over the same number of batches
  (``data.eval_batches``), and their differences. Cost: one more validation-sized pass.
* ``grad_corr`` (single-level paper eq. 13, Figure 2): per intermediate node of the chosen cells, the
  correlation between the loss gradients with respect to that node's output on the batch that updates w
  and on the batch that updates alpha, eq. 13's per-sample form by default (definition below).
* ``dl_dp`` (single-level paper eq. 8, Figure 3): dL/dp_i, the gradient of the loss alpha descends with
  respect to each op's relaxed weight p_i, on chosen edges of chosen cells.

The relaxed weights p of every edge are recorded every epoch by the loop itself (``edge_weights``); that
record is the op-weight probe of the single-level paper's Figure 1 and costs nothing, so it has no switch.

Gradient correlation, precisely. Eq. 13 is the cross term of dL_val/dp_i after one SGD step of w:
S = sum_{j,k} (dL(x_val^j)/dx_bar)^T (dL(x_train^k)/dx_bar) (x_train^k . x_val^j), over the N samples j of the
batch that updates alpha and the M samples k of the batch that updates w, with x_bar an edge's output and x
its input (eq. 8-12 read an op as a linear map W_i x). Two forms (``probes.grad_corr_form``):

* ``exact`` (the default): eq. 13 as written. g^j = dL(x^j)/dx_bar is sample j's own loss differentiated at
  its own slice of the node's output (one backward per sample, in the batch's forward with batch statistics,
  as a search step runs it; x_bar of an edge into a node is the node's sum, so g is the node's), x^j is the
  edge's input, flattened; the edges into a node are summed: S(u, v) = sum_s sum_{j,k} (g_u^j . g_v^k)
  (x_u^{s,j} . x_v^{s,k}) over the node's sources s. S(u, v) is the Frobenius product of the two batches'
  gradients of a dense linear op on each of the node's edges (sum_j g^j (x^j)^T), so it is reported as
  their cosine, S(a, w) / sqrt(S(a, a) S(w, w)): 1 when both batches are the same (single-level), near 0
  when they are independent (the paper's bilevel case), the scale of Figure 2. Cost: one backward per
  sample of the probe batches.
* ``proxy``: the node-gradient part alone, batch-summed: with G = sum_j g^j (the gradient of the batch-mean
  loss at the node, a C x H x W map) the cosine G_a . G_w / (|G_a| |G_w|). It drops the input factor
  x_train^k . x_val^j and the per-sample pairing; one backward per batch.

The record says which form ran (``grad_corr_form``).
"The batch that updates alpha" follows the method: the weight batch for single-level, the architecture
batch for DARTS, and for MiLeNAS the gradient of its alpha objective L_tr + lambda L_val (eq. 6; second
order: L_val + lambda L_tr), so first-order lambda = 0 gives single-level's 1 and a large lambda approaches
DARTS. ``dl_dp`` uses the same objective (see ``alpha_objective``).
Both are averaged over ``probes.batches`` (weight batch, architecture batch) pairs: the first pairs of
the epoch just run, at the weights the epoch ended with.

Probes never change the search: they compute gradients with torch.autograd.grad (no .grad is written),
save and restore every buffer (BatchNorm statistics), run under a forked RNG, draw their batches from
the loop's (seed, epoch) generators (which hold no state between calls) and touch no optimizer.
"""
from __future__ import annotations

import contextlib
import itertools
import time
from typing import Callable

import torch
import torch.nn.functional as F

from gradnas.config import ProbeConfig, parse_edge_spec  # noqa: F401  (re-exported: the probes section)
from gradnas.errors import GradnasError
from gradnas.relax import Relaxation
from gradnas.space.base import space_of_model

# The most numbers (samples at once x batch x node sizes) one batched per-sample backward of grad_corr may hold.
_PER_SAMPLE_BUDGET = 2 ** 25


def alpha_objective(method) -> tuple[float, float]:
    """(c_w, c_a): alpha descends c_w L(weight batch) + c_a L(architecture batch) under this method.

    A first-order view at the current weights: second-order methods evaluate their losses at a virtual
    step w' and add a Hessian term, which the probes do not model."""
    if not method.uses_val_batch:
        return 1.0, 0.0                     # single-level (eq. 3): one batch drives w and alpha
    if method.name == "milenas":
        # MiLeNAS first order (eq. 6): grad L_tr + lambda grad L_val; its second-order update puts lambda
        # on the training term instead (supplementary B), as gradnas.search.methods implements it.
        lam = float(method.lam)
        return (1.0, lam) if method.order == 1 else (lam, 1.0)
    if method.name == "darts":
        return 0.0, 1.0                     # bilevel: alpha from the validation half
    raise GradnasError(f"probes grad_corr and dl_dp know the alpha objective of single-level, darts and milenas, "
                       f"not of method {method.name!r}; run without them (the gap probe works with every method)")


def cosine(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """a . b / (|a| |b|) in float64; None when either is zero (no direction to compare)."""
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    na, nb = a.norm(), b.norm()
    if na == 0 or nb == 0:
        return None
    return float(a.dot(b) / (na * nb))


@contextlib.contextmanager
def untouched(model: torch.nn.Module, device: torch.device):
    """Run probe passes without leaving a trace: buffers, train/eval mode and RNG streams (the global ones
    and a relaxation's own generator) are restored."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    training = model.training
    devices = [device] if device.type == "cuda" else []
    generator = getattr(getattr(model, "relaxation", None), "generator", None)
    saved = generator.get_state() if generator is not None else None
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        model.train(training)
        if generator is not None:
            generator.set_state(saved)


class SearchedCells:
    """What the gradient probes need of a supernet, per space: its searched cells in forward order, each
    cell's kind (the alpha it shares), the position of the op-weight argument of a cell's forward, and
    the (target, source) edges in alpha-row order. A cell reports each node through ``on_node``."""

    def __init__(self, model):
        try:
            space = space_of_model(model)
        except GradnasError:
            raise GradnasError(f"probes grad_corr and dl_dp need the supernet of a registered space, not "
                               f"{type(model).__name__}; the gap probe works in every space") from None
        layout = space.searched_cells(model)  # see gradnas.space.base.SupernetCells
        self.cells, self.kinds, self.edges = layout.cells, layout.kinds, layout.edges
        self.weight_arg = layout.weight_arg
        if type(model.relaxation).forward_weights is not Relaxation.forward_weights:
            # A sampling relaxation (gumbel) computes only the sampled ops: dL/dp of the others, and the node
            # gradients of the full mixture, are not what its search sees.
            raise GradnasError(f"probes grad_corr and dl_dp need a relaxation that computes every op (softmax, "
                               f"sigmoid), not {model.relaxation.name!r}; the gap probe works with every one")
        self.targets = sorted({t for t, _ in self.edges})


class Probes:
    """Built once per search from the ``probes`` config; ``after_epoch`` returns the keys to record."""

    def __init__(self, cfg: ProbeConfig, *, model, method, batches, train_x: torch.Tensor, train_y: torch.Tensor,
                 evaluate: Callable, device: torch.device):
        self.cfg, self.model, self.method, self.batches = cfg, model, method, batches
        self.train_x, self.train_y = train_x, train_y
        self.evaluate = evaluate
        self.device = device
        self.node_cells: list[int] = []
        self.edges: list[tuple[str, int, int]] = []  # (cell key, target, source), wildcards expanded
        if cfg.needs_gradients:
            self.space = SearchedCells(model)
            self.coef = alpha_objective(method)
            n_cells = len(self.space.cells)
            if cfg.grad_corr:
                cells = cfg.grad_corr_cells if cfg.grad_corr_cells is not None else (0, n_cells // 2, -1)
                self.node_cells = sorted({self._cell_index(c, f"probes.grad_corr_cells {c}") for c in cells})
            for spec in cfg.dl_dp_edges:
                self.edges += self._expand(spec)

    # -- configuration against the model
    def _cell_index(self, c: int, where: str) -> int:
        n = len(self.space.cells)
        if not -n <= c < n:
            raise GradnasError(f"{where}: the supernet has searched cells 0..{n - 1} (or -1..-{n} from the end)")
        return c % n

    def _expand(self, spec: str) -> list:
        cell, target, source = parse_edge_spec(spec)
        kinds = sorted(set(self.space.kinds))
        if cell.lstrip("-").isdigit():
            key = str(self._cell_index(int(cell), f"probe edge {spec!r}"))
        elif cell in kinds:
            key = cell
        else:
            raise GradnasError(f"probe edge {spec!r}: cell {cell!r} is neither an index, last, nor a cell kind of "
                               f"this space ({', '.join(kinds)})")
        targets = self.space.targets
        if target not in targets:
            raise GradnasError(f"probe edge {spec!r}: target node must be {targets[0]}..{targets[-1]}")
        sources = [s for t, s in self.space.edges if t == target]
        if source is not None and source not in sources:
            raise GradnasError(f"probe edge {spec!r}: node {target} reads nodes {sources[0]}..{sources[-1]}")
        return [(key, target, s) for s in (sources if source is None else [source])]

    def _cells_of(self, key: str) -> list[int]:
        if not key.isdigit():
            return [i for i, kind in enumerate(self.space.kinds) if kind == key]
        return [int(key)]

    # -- the hook the loop calls
    def after_epoch(self, epoch: int, record: dict) -> dict:
        """Keys to add to this epoch's metrics line ({} when every probe is off)."""
        if not self.cfg.enabled:
            return {}
        t0 = time.time()
        out = {}
        with untouched(self.model, self.device):
            if self.cfg.gap:
                out["gap"] = self._gap(record)
            if self.cfg.needs_gradients:
                out.update(self._gradient_probes(epoch))
        out["probe_time"] = time.time() - t0
        return out

    def _gap(self, record: dict) -> dict:
        train_loss, train_acc = self.evaluate(self.train_x, self.train_y)
        return {"train_loss": train_loss, "train_acc": train_acc,
                "valid_loss": record["valid_loss"], "valid_acc": record["valid_acc"],
                "loss_gap": record["valid_loss"] - train_loss, "acc_gap": train_acc - record["valid_acc"]}

    def _gradient_probes(self, epoch: int) -> dict:
        self.model.train()  # batch statistics, as in a search step
        c_w, c_a = self.coef
        exact = self.cfg.grad_corr and self.cfg.grad_corr_form == "exact"
        corr_sums: dict = {}
        dp_sums: dict = {}
        pairs = itertools.islice(self.batches.epoch(epoch), self.cfg.batches)
        n_pairs = 0
        for w_batch, a_batch in pairs:
            nodes_w, p_w = self._gradients(w_batch, with_nodes=not exact)
            if c_a == 0:        # alpha's gradient comes from the weight batch alone
                nodes_a, p_a = nodes_w, p_w
            else:
                nodes_a, p_a = self._gradients(a_batch, with_nodes=not exact)
                if c_w:
                    nodes_a = {k: c_w * nodes_w[k] + c_a * v for k, v in nodes_a.items()}
                    p_a = {k: c_w * p_w[k] + c_a * v for k, v in p_a.items()}
                else:
                    nodes_a = {k: c_a * v for k, v in nodes_a.items()}
                    p_a = {k: c_a * v for k, v in p_a.items()}
            if exact:
                for key, value in self._eq13(w_batch, a_batch, c_w, c_a).items():
                    corr_sums.setdefault(key, []).append(value)
            for key in nodes_w:
                corr_sums.setdefault(key, []).append(cosine(nodes_w[key], nodes_a[key]))
            for cell_key, target, source in self.edges:
                row = self._row(target, source)
                g = sum(p_a[i][row] for i in self._cells_of(cell_key))
                dp_sums.setdefault(f"{cell_key}:{target}<-{source}", []).append(g)
            n_pairs += 1
        out = {}
        if self.cfg.grad_corr:
            corr = {}
            for (cell, node), values in sorted(corr_sums.items()):
                kept = [v for v in values if v is not None]
                corr.setdefault(str(cell), {})[str(node)] = sum(kept) / len(kept) if kept else None
            out["grad_corr"] = corr
            out["grad_corr_form"] = self.cfg.grad_corr_form
        if self.edges:
            ops = self.model.cfg.ops
            out["dl_dp"] = {key: {op: float(v) for op, v in zip(ops, (sum(gs) / n_pairs).tolist())}
                            for key, gs in dp_sums.items()}
        return out

    def _row(self, target: int, source: int) -> int:
        return self.space.edges.index((target, source))

    # -- eq. 13, exact
    def _eq13(self, w_batch, a_batch, c_w: float, c_a: float) -> dict:
        """{(cell, node): cosine of eq. 13} for one (weight batch, architecture batch) pair (module doc): the alpha
        batch's gradient is c_w (weight batch) + c_a (architecture batch), so by bilinearity S(alpha, w) =
        c_w S(w, w) + c_a S(a, w) and S(alpha, alpha) = c_w^2 S(w, w) + 2 c_w c_a S(a, w) + c_a^2 S(a, a)."""
        gw, xw = self._per_sample(w_batch)
        ga, xa = (gw, xw) if c_a == 0 else self._per_sample(a_batch)
        out = {}
        for key in gw:
            cell, target = key
            sources = [(cell, s) for t, s in self.space.edges if t == target]

            def S(g1, x1, g2, x2):  # sum_{j,k} (g1^j . g2^k) sum_s (x1^{s,j} . x2^{s,k})
                kx = sum(x1[src] @ x2[src].T for src in sources)
                return float(((g1[key] @ g2[key].T) * kx).sum())
            s_ww = S(gw, xw, gw, xw)
            if c_a == 0:
                s_aw, s_aa = s_ww, s_ww
            else:
                s_aw, s_aa = S(ga, xa, gw, xw), S(ga, xa, ga, xa)
            num = c_w * s_ww + c_a * s_aw
            norm2 = c_w ** 2 * s_ww + 2 * c_w * c_a * s_aw + c_a ** 2 * s_aa
            out[key] = None if s_ww <= 0 or norm2 <= 0 else num / (s_ww * norm2) ** 0.5
        return out

    def _per_sample(self, batch) -> tuple:
        """({(cell, node): (B, D) per-sample dL(x^j)/d node at sample j}, {(cell, node): (B, D) node outputs})
        for the probed cells: every node's output (inputs included, the edges' x) and, per sample, the gradient
        of that sample's loss at its own slice of each intermediate node (one backward per sample)."""
        nodes: dict = {}

        def observer(cell_index):
            def on_node(node, tensor):
                nodes[(cell_index, node)] = tensor
            return on_node

        cells = self.space.cells
        try:
            for i in self.node_cells:
                cells[i].on_node = observer(i)
            x, y = batch
            losses = F.cross_entropy(self.model(x), y, reduction="none")
        finally:
            for i in self.node_cells:
                cells[i].on_node = None
        keys = [(i, t) for i in self.node_cells for t in self.space.targets]
        sources = {(i, s) for i in self.node_cells for _, s in self.space.edges}
        missing = [k for k in sorted(sources | set(keys)) if k not in nodes]
        if missing:
            raise GradnasError(f"probes.grad_corr_form exact reads every node of a probed cell, inputs included, but "
                               f"cell {missing[0][0]} did not report node {missing[0][1]} (on_node); use "
                               "probes.grad_corr_form: proxy with this space")
        tensors = [nodes[k] for k in keys]
        grads = {k: torch.zeros(len(y), t[0].numel(), dtype=torch.float64, device=t.device)
                 for k, t in zip(keys, tensors)}
        n = len(y)
        # Several samples' backward passes at once (autograd's batched gradients, vmap over the backward) in chunks
        # that keep chunk x batch x node-size numbers within _PER_SAMPLE_BUDGET; one sample at a time where an op
        # has no batching rule.
        chunk = max(1, min(n, _PER_SAMPLE_BUDGET // max(1, n * sum(t[0].numel() for t in tensors))))
        eye = torch.eye(n, dtype=losses.dtype, device=losses.device)
        for start in range(0, n, chunk):
            rows = range(start, min(n, start + chunk))
            try:
                batched = torch.autograd.grad(losses, tensors, grad_outputs=eye[start:rows.stop], retain_graph=True,
                                              is_grads_batched=True, allow_unused=True)
                per_sample = [[None if g is None else g[i, j] for g in batched] for i, j in enumerate(rows)]
            except RuntimeError:  # an op without a batching rule
                per_sample = [[None if g is None else g[j] for g in torch.autograd.grad(
                    losses[j], tensors, retain_graph=True, allow_unused=True)] for j in rows]
            for j, gs in zip(rows, per_sample):
                for k, g in zip(keys, gs):
                    if g is not None:
                        grads[k][j] = g.detach().flatten().double()
        inputs = {k: nodes[k].detach().flatten(1).double() for k in sources}
        return grads, inputs

    def _gradients(self, batch, *, with_nodes: bool = True):
        """({(cell, node): batch-summed dL/d node}, {cell: dL/dp (edges x ops)}) for one batch's mean loss
        (``with_nodes`` false: the dL/dp part only, no node gradients)."""
        p_cells = sorted({i for key, _, _ in self.edges for i in self._cells_of(key)})
        node_cells = self.node_cells if with_nodes else []
        if not node_cells and not p_cells:
            return {}, {}
        nodes: dict = {}
        leaves: dict = {}
        handles = []

        def observer(cell_index):
            def on_node(target, tensor):
                if target in targets:  # the intermediate nodes (a cell reports its inputs too)
                    nodes[(cell_index, target)] = tensor
            return on_node

        targets = set(self.space.targets)

        def leaf_weights(cell_index):
            # This cell gets its own copy of p as a leaf, so dL/dp is this cell's share of the gradient
            # (alpha is shared by all cells of a kind; the shared dL/dp is the sum over them).
            def pre_hook(module, args):
                k = self.space.weight_arg
                leaves[cell_index] = args[k].detach().requires_grad_(True)
                return (*args[:k], leaves[cell_index], *args[k + 1:])
            return pre_hook

        cells = self.space.cells
        try:
            for i in node_cells:
                cells[i].on_node = observer(i)
            for i in p_cells:
                handles.append(cells[i].register_forward_pre_hook(leaf_weights(i)))
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            if node_cells and len(nodes) != len(node_cells) * len(self.space.targets):
                raise GradnasError("a probed cell did not report its nodes (on_node); the space's cell must "
                                   "call it for every node")
            keys_n, keys_p = list(nodes), list(leaves)
            grads = torch.autograd.grad(loss, [nodes[k] for k in keys_n] + [leaves[k] for k in keys_p])
        finally:
            for i in node_cells:
                cells[i].on_node = None
            for h in handles:
                h.remove()
        node_grads = {k: g.detach().sum(0).double() for k, g in zip(keys_n, grads[:len(keys_n)])}
        p_grads = {k: g.detach().double().cpu() for k, g in zip(keys_p, grads[len(keys_n):])}
        return node_grads, p_grads
