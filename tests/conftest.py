import os

import pytest
import torch

from gradnas.cli import main
from gradnas.relax import make_relaxation
from gradnas.space.darts import DartsSpaceConfig, DartsSupernet

#: where the device-aware tests (those taking the ``device`` fixture) run: GRADNAS_TEST_DEVICE=cuda (or cuda:N)
#: runs them on a GPU; the default is the CPU
TEST_DEVICE = os.environ.get("GRADNAS_TEST_DEVICE", "cpu").strip() or "cpu"


def pytest_configure(config):
    try:
        device = torch.device(TEST_DEVICE)
    except RuntimeError:
        raise pytest.UsageError(f"GRADNAS_TEST_DEVICE={TEST_DEVICE!r} is no device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"GRADNAS_TEST_DEVICE={TEST_DEVICE!r}: gradnas runs on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"GRADNAS_TEST_DEVICE={TEST_DEVICE} asks for a GPU, but torch.cuda.is_available() "
                                "is False here (no GPU, or a CPU build of torch); unset it to test on the CPU")


@pytest.fixture
def device():
    """The device of the device-aware tests (GRADNAS_TEST_DEVICE, default cpu). On CUDA, cuDNN picks
    deterministic convolution algorithms meanwhile, so that bit-for-bit comparisons mean what they say."""
    saved = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        yield torch.device(TEST_DEVICE)
    finally:
        torch.backends.cudnn.deterministic = saved


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _gradnas_messages():
    """The library's messages (gradnas.log) on stderr as the CLI shows them, for tests that call Search, Training
    or drive directly and read their warnings (a test of unconfigured library use undoes this)."""
    from gradnas.log import cli_logging
    with cli_logging():
        yield


def cli_fails(capsys, argv, *needles):
    """Run the CLI in this process; exactly one error line (warnings aside), exit 2, no traceback, every needle
    in the line, which is returned."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("gradnas: warning: ")]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("gradnas: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def tiny_supernet(relax="softmax", *, cells=3, channels=4, nodes=2, in_channels=3, classes=5, seed=0,
                  channels_last=False, ops=None, dtype=torch.float32):
    kw = {"ops": ops} if ops else {}
    cfg = DartsSpaceConfig(cells=cells, channels=channels, nodes=nodes, channels_last=channels_last, **kw)
    torch.manual_seed(seed)
    model = DartsSupernet(cfg, make_relaxation(relax), in_channels=in_channels, num_classes=classes,
                          generator=torch.Generator().manual_seed(seed))
    # spread alpha so op weights differ clearly
    with torch.no_grad():
        for a in model.arch_parameters():
            a.copy_(torch.randn(a.shape, generator=torch.Generator().manual_seed(seed + 1)))
    return model.to(dtype)


def batch(n=4, c=3, size=8, classes=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, size, size, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


def tiny_nb201(relax="softmax", *, cells_per_stage=1, channels=4, in_channels=3, classes=5, seed=0,
               channels_last=False, dtype=torch.float32):
    """A small NAS-Bench-201 supernet with spread-out alpha."""
    from gradnas.space.nb201 import NB201SpaceConfig, NB201Supernet
    cfg = NB201SpaceConfig(cells_per_stage=cells_per_stage, channels=channels, channels_last=channels_last)
    torch.manual_seed(seed)
    model = NB201Supernet(cfg, make_relaxation(relax), in_channels=in_channels, num_classes=classes,
                          generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        model.alpha.copy_(torch.randn(model.alpha.shape, generator=torch.Generator().manual_seed(seed + 1)))
    return model.to(dtype)


@pytest.fixture(autouse=True)
def _threads_per_xdist_worker(_threads):
    """Under pytest-xdist, each worker gets its share of the cores (2 workers on 2 cores: 1 thread each), and so do
    the processes it starts (OMP_NUM_THREADS, unless set): two workers of 2 threads each on 2 cores make OpenMP's
    threads wait on each other, many times slower on the tiny tensors of these tests."""
    import os
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        share = max(1, cores // workers)
        torch.set_num_threads(share)
        os.environ.setdefault("OMP_NUM_THREADS", str(share))
