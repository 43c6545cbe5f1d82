"""The fast search step (issue 20): steps that never wait for the device, batches drawn ahead, a compiled
forward, bf16 autocast. Device-aware (GRADNAS_TEST_DEVICE); the compile tests use the aot_eager backend (the
eager kernels, so bit-for-bit). GRADNAS_TEST_COMPILE=full adds a DARTS-space case and the inductor comparison
(minutes of compilation on a CPU; a GPU check sets it)."""
import math
import os
import random

import pytest
import torch

from conftest import batch, tiny_nb201, tiny_supernet
from gradnas.config import SearchConfig
from gradnas.data import Augment, PairedBatches, make_search_split
from gradnas.errors import GradnasError
from gradnas.search import accel
from gradnas.search.gradient import RunningSums, build_optimizers
from gradnas.search.methods import StepStats, make_method

FULL_COMPILE = os.environ.get("GRADNAS_TEST_COMPILE") == "full"
full_compile = pytest.mark.skipif(not FULL_COMPILE, reason="compiles for a minute or more on a CPU; set "
                                                           "GRADNAS_TEST_COMPILE=full")
SMALL_OPS = ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3")  # a quick-to-trace DARTS supernet
METHODS = [("single-level", 1), ("darts", 1), ("darts", 2), ("milenas", 1), ("milenas", 2)]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny tensors on a shared CPU: more threads only wait for each other


def _method(name, order, model, *, relax="softmax", lr=0.0, xi=None, **kw):
    cfg = SearchConfig.from_dict({"w_optim": {"lr": max(lr, 1e-12), "lr_min": 0.0, "weight_decay": 0.0},
                                  "arch_optim": {"lr": lr, "weight_decay": 0.0}, "relax": relax})
    w_opt, a_opt, _ = build_optimizers(cfg, model)
    for group in w_opt.param_groups:
        group["lr"] = lr
    return make_method(name, model, w_optim=w_opt, a_optim=a_opt, order=order, grad_clip=5.0,
                       xi=xi if order == 2 else None, **kw)


def _batches(device, n=4, size=8, seeds=(1, 2)):
    return [tuple(t.to(device) for t in batch(n=n, size=size, seed=s)) for s in seeds]


# ------------------------------------------------------------------------------------- steps and sums

@pytest.mark.parametrize("name,order", METHODS)
def test_a_step_returns_device_tensors_and_waits_for_nothing(name, order, device):
    model = tiny_supernet().to(device)
    method = _method(name, order, model, lr=0.01, xi=0.01)
    tr, va = _batches(device)
    # on CUDA a synchronizing call (.item(), int(tensor), a host copy) in a first-order step is an error
    sync_free = device.type == "cuda" and order == 1
    if sync_free:
        torch.cuda.set_sync_debug_mode("error")
    try:
        stats = method.step(tr, va)
    finally:
        if sync_free:
            torch.cuda.set_sync_debug_mode("default")
    kinds = ("train",) if name == "single-level" else ("train", "val")
    assert sorted(stats) == sorted(f"{k}_{v}" for k in kinds for v in ("loss", "correct", "n"))
    for kind in kinds:
        loss, correct = stats[f"{kind}_loss"], stats[f"{kind}_correct"]
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.device == model.alpha_normal.device
        assert not loss.requires_grad and loss.dtype == torch.float32
        assert correct.dtype == torch.int64 and correct.dim() == 0 and 0 <= int(correct) <= 4
        assert stats[f"{kind}_n"] == 4 and isinstance(stats[f"{kind}_n"], int)
    numbers = stats.numbers()
    assert isinstance(numbers["train_loss"], float) and isinstance(numbers["train_correct"], int)
    assert math.isfinite(stats["train_loss"])  # what callbacks do with it still works


def test_running_sums_are_the_python_float_sums_bit_for_bit(device):
    """The loop used to add loss.item() * n, int correct and n as Python floats; the device sums in float64
    must give the very same numbers (metrics.jsonl and checkpoints are compared to the bit)."""
    rng = random.Random(0)
    losses = torch.tensor([rng.uniform(0.1, 3.0) for _ in range(50)], dtype=torch.float32)
    correct = [rng.randrange(0, 17) for _ in range(50)]
    want, running = {}, RunningSums(device)
    for step, (loss, c) in enumerate(zip(losses, correct)):
        n = 16 if step % 7 else 12
        for key, value in (("train_loss", loss.item() * n), ("train_correct", c), ("train_n", n)):
            want[key] = want.get(key, 0.0) + value
        running.add(step, StepStats(train_loss=loss.to(device), train_correct=torch.tensor(c, device=device),
                                    train_n=n))
    got = running.floats()
    assert got == want and all(type(v) is float for v in got.values())
    # a plug-in's Python numbers, and the sums of a resumed epoch, add up the same way
    resumed = RunningSums(device, {k: v for k, v in want.items()})
    resumed.add(50, StepStats(train_loss=1.25, train_correct=3, train_n=16))
    expect = {"train_loss": want["train_loss"] + 1.25 * 16, "train_correct": want["train_correct"] + 3,
              "train_n": want["train_n"] + 16}
    assert resumed.floats() == expect
    assert resumed.first_nonfinite(resumed.floats()) is None


def test_running_sums_name_the_first_nonfinite_step(device):
    running = RunningSums(device)
    for step, value in enumerate([1.0, 2.0, math.nan, 3.0, math.inf]):
        running.add(step + 10, StepStats(train_loss=torch.tensor(value, device=device),
                                         train_correct=torch.tensor(1, device=device), train_n=4,
                                         val_loss=0.5, val_correct=1, val_n=4))
    step, losses = running.first_nonfinite(running.floats())
    assert step == 12 and math.isnan(losses["train_loss"]) and losses["val_loss"] == 0.5


# ------------------------------------------------------------------------------------------- prefetch

def _paired(device, alpha_data="split"):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (40, 1, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (40,), generator=g)
    split = make_search_split(40, fraction=0.5, seed=0)
    return PairedBatches(x, y, split, batch_size=4, augment=Augment((0.5,), (0.25,), crop_padding=2, flip=True),
                         device=device, seed=5, alpha_data=alpha_data)


def _flat(items):
    return [t for pair in items for b in pair for t in b]


@pytest.mark.parametrize("ahead", [None, True, False])
@pytest.mark.parametrize("alpha_data", ["split", "same-batch"])
def test_prefetcher_yields_the_loaders_batches_in_order_from_any_step(ahead, alpha_data, device):
    batches = _paired(device, alpha_data)
    steps = len(batches)
    assert steps == 5
    for start in (0, 3, steps - 1):
        want = list(batches.epoch(1, start))
        got = list(accel.Prefetcher(batches.epoch(1, start), device, ahead=ahead))
        assert len(got) == len(want) == steps - start
        assert all(torch.equal(a, b) for a, b in zip(_flat(got), _flat(want)))
        assert all(t.device == torch.device(device) or t.device.type == torch.device(device).type
                   for t in _flat(got))
    assert list(accel.Prefetcher(iter(()), device, ahead=ahead)) == []


def test_prefetcher_draws_one_batch_ahead_at_most_and_moves_host_tensors(device):
    drawn = []

    def loader():
        for k in range(4):
            drawn.append(k)
            yield torch.full((2, 3), float(k)), torch.tensor([k, k])
    it = iter(accel.Prefetcher(loader(), device, ahead=True))
    x, y = next(it)
    assert drawn == [0, 1]  # the next one is drawn while the caller works on this one
    assert x.device.type == torch.device(device).type and torch.equal(x.cpu(), torch.zeros(2, 3))
    rest = list(it)
    assert drawn == [0, 1, 2, 3] and [int(b[1][0]) for b in rest] == [1, 2, 3]
    drawn.clear()
    lazy = iter(accel.Prefetcher(loader(), device, ahead=False))
    next(lazy)
    assert drawn == [0]


def test_a_search_stopped_mid_epoch_resumes_exactly_with_batches_drawn_ahead(tmp_path, monkeypatch):
    """With the loop drawing one batch ahead (as on CUDA), a SIGTERM during step 2 of epoch 2 and the resumed
    run end exactly where the uninterrupted one does (the batch drawn ahead is dropped and drawn again)."""
    import signal

    from gradnas.checkpoint import load_checkpoint
    from gradnas.search import gradient
    from gradnas.search.loop import Search
    from gradnas.signals import Interrupted
    from test_faults import _metrics, _same_state, _signal_at
    from test_search import tiny_config

    class Ahead(accel.Prefetcher):
        def __init__(self, batches, device):
            super().__init__(batches, device, ahead=True)
    monkeypatch.setattr(gradient, "Prefetcher", Ahead)
    cfg = tiny_config(method="darts", space="nb201", epochs=2, threads=1, batch_size=8,
                      data={"subset": 48, "eval_batches": 1}, nb201={"cells_per_stage": 1, "channels": 4})
    full = Search(cfg, tmp_path / "full", progress=False)
    full.run()
    steps = len(full.algorithm.batches)
    assert steps == 3
    stopped = Search(cfg, tmp_path / "run", progress=False)
    _signal_at(stopped.algorithm.method, "step", steps + 2, signal.SIGTERM)
    with pytest.raises(Interrupted, match="after step 2/3"):
        stopped.run(stop_on_signal=True)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 2)
    resumed = Search(cfg, tmp_path / "run", resume=True, progress=False)
    resumed.run()
    _same_state(full.state_dict(), resumed.state_dict())
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "run")


# -------------------------------------------------------------------------------------------- compile

@pytest.fixture
def aot_eager(monkeypatch):
    """torch.compile with the eager kernels (bit-for-bit), and a clean Dynamo cache before and after."""
    torch._dynamo.reset()
    monkeypatch.setattr(accel, "BACKEND", "aot_eager")
    yield
    torch._dynamo.reset()


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _run_steps(make_model, name, order, device, *, compile_mode, steps=2, precision="fp32"):
    model = make_model().to(device)
    net = accel.compile_forward(model, compile_mode)
    method = _method(name, order, model, lr=0.05, xi=0.01, net=net, precision=precision)
    pairs = [_batches(device, n=2, seeds=(2 * k + 1, 2 * k + 2)) for k in range(steps)]
    stats = []
    for tr, va in pairs:
        method.begin_step()
        stats.append(method.step(tr, va).numbers())
    return model, stats


@pytest.mark.parametrize("space,name,order", [("nb201", "darts", 2),
                                              pytest.param("darts", "milenas", 1, marks=full_compile)])
def test_compiled_steps_equal_eager_bit_for_bit_with_aot_eager(space, name, order, device, aot_eager):
    """Two steps, compiled (aot_eager: the eager kernels) against eager: every weight, buffer and alpha to the
    bit. darts-2nd runs the compiled forward through functional_call (virtual step, finite differences);
    milenas-1st the plain forward and the alpha-only pass."""
    make = (lambda: tiny_nb201()) if space == "nb201" else (lambda: tiny_supernet(ops=SMALL_OPS))
    eager, eager_stats = _run_steps(make, name, order, device, compile_mode="off")
    compiled, compiled_stats = _run_steps(make, name, order, device, compile_mode="default")
    assert compiled_stats == eager_stats
    want, got = _state(eager), _state(compiled)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert not torch.equal(want[[k for k in want if k.startswith("alpha")][0]], _state(make())["alpha"
                           if space == "nb201" else "alpha_normal"])  # the steps moved alpha


@full_compile
def test_inductor_steps_stay_close_to_eager(device):
    """Inductor fuses ops (other rounding), so no bit equality: two single-level steps agree to 1e-4 (the max
    difference measured on a CPU is printed)."""
    torch._dynamo.reset()
    make = lambda: tiny_supernet(ops=SMALL_OPS)  # noqa: E731
    eager, _ = _run_steps(make, "single-level", 1, device, compile_mode="off")
    compiled, _ = _run_steps(make, "single-level", 1, device, compile_mode="default")
    diffs = {k: (a.double() - b.double()).abs().max().item() for (k, a), b in
             zip(_state(eager).items(), _state(compiled).values()) if a.is_floating_point()}
    print(f"inductor vs eager, max abs difference after 2 steps: {max(diffs.values()):.3g} "
          f"({max(diffs, key=diffs.get)}); alphas {max(v for k, v in diffs.items() if k.startswith('alpha')):.3g}")
    assert max(diffs.values()) < 1e-4


def test_a_compiled_search_saves_the_eager_keys_and_resumes_either_way(tmp_path):
    """compile changes how the step runs, not the state: the checkpoint of a compiled search has the eager
    model's keys (no ``_orig_mod.``), and a search resumed with or without compile loads it."""
    from gradnas import overrides
    from gradnas.search.loop import Search
    from test_search import tiny_config
    cfg = tiny_config(method="milenas", epochs=2, threads=1, data={"subset": 32, "eval_batches": 1})
    eager = Search(cfg, tmp_path / "run", progress=False)
    eager.run(stop_after=1)
    saved = overrides.saved_search_config(tmp_path / "run")
    assert saved.compile == "off" and saved.precision == "fp32"
    again = overrides.resumed_search_config(tmp_path / "run", saved, {"compile": "default"}, [])
    assert again.compile == "default"
    resumed = Search(again, tmp_path / "run", resume=True, progress=False)
    job = resumed.algorithm
    assert isinstance(job.net, accel.CompiledForward) and job.method.net is job.net
    state = job.state_dict()
    assert state["model"].keys() == eager.model.state_dict().keys()
    assert not any("_orig_mod" in k for k in state["model"])
    for a, b in zip(state["model"].values(), eager.model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(GradnasError, match="precision='fp32', not 'bf16'"):
        overrides.resumed_search_config(tmp_path / "run", saved, {"precision": "bf16"}, [])


def test_compile_refuses_what_it_cannot_capture_or_nobody_reads():
    from gradnas.overrides import search_config
    from gradnas.search.loop import check_search_config
    with pytest.raises(GradnasError, match="compile default cannot capture relaxation 'gumbel'"):
        check_search_config(SearchConfig.from_dict({"relax": "gumbel", "compile": "default"}))
    with pytest.raises(GradnasError, match="compile must be one of off, default, reduce-overhead, max-autotune"):
        SearchConfig.from_dict({"compile": "fast"})
    with pytest.raises(GradnasError, match="precision must be one of fp32, bf16"):
        SearchConfig.from_dict({"precision": "fp16"})
    with pytest.raises(GradnasError, match="reduce-overhead captures CUDA graphs and needs a CUDA device"):
        accel.check_compile("reduce-overhead", device="cpu")
    for key, value in (("compile", "default"), ("precision", "bf16")):  # pvll runs its own loop
        with pytest.raises(GradnasError, match=f"{key} is read by the epoch loop of methods"):
            search_config({"method": "pvll", "relax": "softmax"}, {key: value}, [])
    check_search_config(SearchConfig.from_dict({"relax": "sigmoid", "method": "darts", "order": 2,
                                                "compile": "max-autotune", "precision": "bf16"}))


def test_search_flags_set_compile_and_precision():
    from gradnas.cli import build_parser
    from gradnas.cli.search import resolve_search_config
    args = build_parser().parse_args(["search", "--compile", "reduce-overhead", "--precision", "bf16"])
    cfg = resolve_search_config(args)
    assert (cfg.compile, cfg.precision) == ("reduce-overhead", "bf16")
    assert cfg.to_dict()["compile"] == "reduce-overhead"


# ----------------------------------------------------------------------------------------------- bf16

def _alpha_grads(model, name, order, device, precision, relax):
    method = _method(name, order, model, relax=relax, lr=0.0, xi=0.01, precision=precision)
    seen = []  # per forward pass of the step: under autocast?
    hook = model.register_forward_pre_hook(lambda m, a: seen.append(torch.is_autocast_enabled(device.type)))
    tr, va = _batches(device)
    try:
        stats = method.step(tr, va)
    finally:
        hook.remove()
    # order 2: the two finite-difference passes of each unrolled term (milenas: two terms) run in float32
    fd_passes = 0 if order == 1 else 2 * (2 if name == "milenas" else 1)
    if precision == "bf16":
        assert seen.count(False) == fd_passes and seen.count(True) >= (1 if name == "single-level" else 2)
    else:
        assert not any(seen)
    assert stats["train_loss"].dtype == torch.float32 and math.isfinite(stats["train_loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights and alphas stay fp32
    return [a.grad.clone() for a in model.arch_parameters()]


@pytest.mark.parametrize("name,order,relax", [*((n, o, "softmax") for n, o in METHODS), ("milenas", 1, "gumbel"),
                                              ("darts", 2, "gumbel")])
def test_bf16_step_runs_its_forward_passes_under_autocast_and_stays_close(name, order, relax, device):
    """In precision bf16 the forward passes of a step (Gumbel's too) run under bfloat16 autocast, but for the
    finite differences of order 2 (float32: bf16 cannot resolve their weight perturbation); in fp32 none does.
    Alpha's gradient points where fp32's does: cosine >= 0.9 in first order, >= 0.8 in second (measured on
    this 4-channel supernet: 0.949 to 0.998 and 0.84 to 0.9999; the norms differ by up to 25% and 75%)."""
    make = lambda: tiny_supernet(relax).to(device)  # noqa: E731
    torch.manual_seed(0)
    g32 = _alpha_grads(make(), name, order, device, "fp32", relax)
    torch.manual_seed(0)
    g16 = _alpha_grads(make(), name, order, device, "bf16", relax)
    for a, b in zip(g32, g16):
        assert a.dtype == b.dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), 0).item()
        assert cos >= (0.9 if order == 1 else 0.8), cos
    assert any(not torch.equal(a, b) for a, b in zip(g32, g16))  # bf16 really ran


def test_fp32_is_the_default_and_takes_no_autocast(device):
    """precision fp32 (the default) is the eager fp32 step of before: bit for bit what a method built without
    the new arguments computes (tests/test_golden.py holds the searches to their recorded numbers)."""
    tr, va = _batches(device)
    states = []
    for kw in ({}, {"precision": "fp32", "net": None}):
        model = tiny_supernet().to(device)
        _method("milenas", 2, model, lr=0.05, xi=0.01, **kw).step(tr, va)
        states.append(_state(model))
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    with pytest.raises(GradnasError, match="precision must be one of fp32, bf16"):
        _method("darts", 1, tiny_supernet(), precision="fp16")


@pytest.mark.parametrize("ahead", [False, True])
def test_prefetcher_keeps_a_repeated_batch_one_object(ahead, device):
    """Same-batch alpha data hands the train pair as the validation pair: after the move it is still the very
    same pair (the methods may rely on it, tests/test_switches.py checks ``val is train``)."""
    pair = (torch.randn(2, 3), torch.arange(2))
    (train, val), = list(accel.Prefetcher([(pair, pair)], device, ahead=ahead))
    assert val is train and train[0].device.type == torch.device(device).type
