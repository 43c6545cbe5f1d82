"""A search run: ``Search(cfg, out_dir, callbacks=[...]).run()`` for every method, PVLL-NAS included.

:class:`Search` is the run harness (``gradnas.run.Harness``) of a search: it checks the config against the
components that will run (:func:`check_search_config`), prepares the run folder, loads the data and the
search split (``split.json``: which training images train the weights, which the architecture), builds the
method's search algorithm from the one registry of methods (``gradnas.search.algorithm.METHODS``: the
per-batch architecture optimizers run in :class:`~gradnas.search.gradient.GradientSearch`'s epoch loop,
pvll in :class:`~gradnas.search.pvll_search.PVLLSearch`), attaches the algorithm's epoch-end extras
(``gradnas.search.callbacks``) and the user's callbacks, and drives the units. Model size-based search, the
collapse watch, the probes and the benchmark lookup are those callbacks; see their module.

Run folder: config.yaml (resolved), split.json, metrics.jsonl (one line per epoch, or per round for pvll),
checkpoint.pt, genotype.json, summary.json (when finished), sizes/ (index.json, size-N-R.json).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from gradnas import distributed
from gradnas.callbacks import check_callback_names
from gradnas.config import Claim, SearchConfig, check_components
from gradnas.data import Augment, SearchSplit, load_dataset, make_search_split
from gradnas.data.sources import ImageDataset, dataset_key
from gradnas.distributed import resolve_device
from gradnas.errors import GradnasError
from gradnas.relax import RELAXATIONS, make_relaxation
from gradnas.run import SPLIT_FILE, Harness, read_damaged_json, set_threads
from gradnas.search.algorithm import METHODS, SearchAlgorithm, method_class
from gradnas.search.gradient import GradientSearch, build_optimizers  # noqa: F401  (public here too)
from gradnas.search.methods import ArchOptimizer
from gradnas.space import SPACES, get_space
from gradnas.trackers import build_trackers


@dataclass
class SearchData:
    """What a search algorithm is built over: the dataset, the search split and the augmentation."""

    dataset: ImageDataset
    split: SearchSplit
    augment: Augment


def algorithm_class(cfg: SearchConfig) -> type:
    """The search algorithm that runs ``cfg.method``: the method itself if it has a loop of its own, else the
    epoch loop of the per-batch methods."""
    cls = method_class(cfg.method)
    return cls if issubclass(cls, SearchAlgorithm) else GradientSearch


def component_claims(cfg: SearchConfig, algorithm: type) -> list:
    """What every registered component reads (gradnas.config.Claim), and whether this search runs it."""
    running = " then ".join(cfg.methods)
    hints = algorithm.hints
    claims = []
    section = get_space(cfg.space).section
    for name, space in SPACES.items():
        claims.append(Claim(f"the {name} space", (space.section,), name == cfg.space,
                            f"this search uses space {cfg.space!r} (configured by the {section!r} section)", section=True,
                            strict=False))
    for name, cls in RELAXATIONS.items():
        if cls.config_section:
            reason = (f"this search uses relax {cfg.relax!r}" if algorithm.uses_relaxation else
                      f"method {cfg.method} uses no relaxation")
            claims.append(Claim(f"the {name} relaxation", (cls.config_section,),
                                algorithm.uses_relaxation and name == cfg.relax, reason,
                                hints.get(cls.config_section, ""), section=True,
                                strict=not algorithm.uses_relaxation))
    for name, cls in METHODS.items():
        active = name in cfg.methods
        for key in getattr(cls, "reads", ()):
            claims.append(Claim(f"method {name}", (key,), active, f"this search uses method {running!r}",
                                hints.get(key, "")))
        if getattr(cls, "config_section", None):
            claims.append(Claim(f"method {name}", (cls.config_section,), active,
                                f"this search uses method {running!r}", hints.get(cls.config_section, ""), section=True))
    loop_methods = ", ".join(sorted(n for n, c in METHODS.items() if issubclass(c, ArchOptimizer)))
    for key in GradientSearch.reads:
        claims.append(Claim(f"the epoch loop of methods {loop_methods}", (key,), algorithm is GradientSearch,
                            f"this search uses method {running!r}", hints.get(key, "")))
    return claims


def check_search_config(cfg: SearchConfig, *, given=None, file_keys=(), components: bool = True) -> type:
    """Fail fast, before any data is read, on unknown names, on a setting that no component of this search
    reads (``given``: the dotted keys the user set explicitly, or None to count every non-default value: see
    gradnas.config.check_components; ``components=False`` skips this, for a resumed search whose config is
    its folder's) and on what the algorithm cannot run; returns the algorithm class."""
    get_space(cfg.space)
    make_relaxation(cfg.relax)
    for name in cfg.methods:
        method_class(name)
    algorithm = algorithm_class(cfg)
    if components:
        check_components(cfg, component_claims(cfg, algorithm), given=given, file_keys=file_keys)
    algorithm.check_config(cfg)
    dataset_key(cfg.data.dataset)
    check_callback_names(cfg.callbacks)
    return algorithm


def check_names(cfg: SearchConfig) -> None:
    """The names and the algorithm's own refusals of a config from the command line (sweeps check every grid
    point before any run starts; the keys each point's command sets are checked when it runs)."""
    check_search_config(cfg, given=())


def load_search_data(cfg: SearchConfig, folder, *, resume: bool, main: bool, dataset=None) -> SearchData:
    """The dataset (``dataset``: already loaded), the split (read back from split.json on resume, else drawn
    from the seed and written) and the augmentation."""
    data = dataset if dataset is not None else load_dataset(cfg.data.dataset, cfg.data.data_dir)
    split_path = folder.file(SPLIT_FILE)
    if resume and split_path.is_file():
        split = read_split(split_path, len(data.train_y))
    else:
        split = make_search_split(len(data.train_y), fraction=cfg.data.split_fraction, seed=cfg.seed,
                                  subset=cfg.data.subset)
        if main:
            folder.write_json(SPLIT_FILE, split.to_dict(), indent=None)
    augment = Augment(data.mean, data.std, crop_padding=cfg.data.crop_padding, flip=cfg.data.flip,
                      cutout=cfg.data.cutout)
    augment.check_image_size(*data.train_x.shape[2:])  # before any epoch, not at the first batch
    return SearchData(data, split, augment)


def read_split(path, n_images: int) -> SearchSplit:
    """A resumed search's split.json, or one error naming the file and the fix: the file decides which images
    train the weights and which the architecture, so a search cannot continue exactly without it."""
    fix = "restore it from a copy, or start the search again with a new --out"
    record = read_damaged_json(path, fix=fix)
    try:
        split = SearchSplit.from_dict(record)
    except GradnasError as exc:
        raise GradnasError(f"{path} is damaged: {exc}; {fix}") from None
    both = torch.cat([split.weight_idx, split.arch_idx])
    if both.numel() and int(both.max()) >= n_images:
        raise GradnasError(f"{path} is damaged or of another dataset: it lists image {int(both.max())}, but the "
                           f"training set has {n_images} images; {fix}")
    return split


class Search(Harness):
    """A search run, built from a config; :meth:`run` executes the remaining units (epochs or PVLL rounds).

    ``callbacks``: user callbacks (``gradnas.callbacks.Callback``), run after the search's own extras and
    before the metrics writer; they may add keys to every metrics line and request a stop. ``explicit_keys``:
    the dotted config keys the user set explicitly (the command line's flags and --set), which are checked
    against the components that read them; None (Python): every value that differs from its default is.

    Everything that can be checked (config, threads, device, the data) is checked before the run folder is
    touched; a start that fails after that removes what it wrote there (``Harness.starting``)."""

    command, holds, noun = "search", "a search", "search"
    config_class = SearchConfig

    def __init__(self, cfg: SearchConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                 progress: bool = True, callbacks=(), explicit_keys=None):
        # a tracker's missing package fails here, before the run folder is made
        super().__init__(cfg, out_dir, progress=progress, trackers=build_trackers(cfg))
        algorithm = check_search_config(cfg, given=explicit_keys, components=not resume)  # before any data is read
        set_threads(cfg.threads)
        if self.world.size > 1 and not algorithm.distributed:
            raise GradnasError(f"method {cfg.method} runs in one process{algorithm.single_process_reason}; start it "
                               "without torchrun")
        distributed.check_divisible(cfg.batch_size)
        device = resolve_device(cfg.device)
        dataset = load_dataset(cfg.data.dataset, cfg.data.data_dir)  # a wrong data path fails before the folder
        with self.starting():
            distributed.run_on_main(lambda: self.folder.prepare(cfg.to_dict(), resume=resume))
            data = load_search_data(cfg, self.folder, resume=resume, main=self.is_main, dataset=dataset)
            self.algorithm = algorithm(cfg, data=data, device=device, world=self.world)
            self._attach(self.algorithm, self.algorithm.builtin_callbacks(), callbacks, resume=resume, device=device)
