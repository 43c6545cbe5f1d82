"""The found architecture as a PyTorch network: :func:`load_network`.

``gradnas.load_network(source)`` returns the evaluation network (``torch.nn.Module``, in eval mode) of

* a **training run folder** (``gradnas train --out RUN``): the network it trained, shaped as it was (cells,
  channels, stem, auxiliary head, input channels and classes from its config.yaml and network.json), with
  the weights of its last checkpoint (``weights=False``: the same network, untrained);
* a **search run folder**: the evaluation network of the genotype ``pick`` chooses (``"best"``, the default as
  in ``gradnas train --genotype RUN``: best-genotype.json, the epoch with the best validation accuracy;
  ``"last"``: the final genotype), untrained, for the images it was searched on (input channels and
  classes of its dataset);
* a **genotype**: a JSON file, a string of any form (``normal=|...|``, ``Genotype(normal=[...], ...)``,
  ``|op~0|+|...|``), genotype JSON text, the name of a published cell (``DARTS_V2``; gradnas.genotypes.named())
  or a Genotype object: its evaluation network, untrained.

The untrained networks (search runs and genotypes) are shaped by a training setting (``setting=``, a name
or a YAML file, as ``gradnas train --setting``): by default the one ``gradnas train`` would use for the
genotype, ``quick`` for a DARTS genotype (5 cells, 8 channels, auxiliary head; Fashion-MNIST's 1 x 28 x 28
images, 10 classes) and ``nb201`` for an NB-201 cell (N = 5, C = 16; CIFAR-10's 3 x 32 x 32 images). A
search run's own dataset decides its input channels and classes. ``setting="cifar"`` gives the papers'
CIFAR-10 network (20 cells, 36 channels). Nothing is drawn from a seed: an untrained network's initial
weights come from torch's global random generator (seed it with ``torch.manual_seed`` first).

``cells``, ``channels`` (the train config's ``network.cells`` / ``network.channels``; NB-201: cells per
stage), ``classes`` and ``in_channels`` override the shape. The weights of a training run fit only its own
shape, so with ``weights=True`` an override that differs from the run's is refused (``weights=False`` takes
it).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import NamedTuple

import torch

from gradnas.errors import GradnasError
from gradnas.run import CHECKPOINT_FILE, CONFIG_FILE, GENOTYPE_FILE, NETWORK_FILE, config_kind

# The image shape (channels, (height, width)) and class count of the builtin datasets, known without loading
# them; any other dataset (imagefolder, registered ones) needs in_channels= and classes=.
DATASET_SHAPES = {"fashion-mnist": (1, (28, 28), 10), "cifar10": (3, (32, 32), 10)}
# The setting whose network an untrained genotype gets by default, per space (others: quick).
DEFAULT_SETTINGS = {"darts": "quick", "nb201": "nb201"}
OVERRIDES = ("cells", "channels", "classes", "in_channels")


class NetworkPlan(NamedTuple):
    """Everything :func:`load_network` resolved about a source before building it."""

    genotype: object
    net_cfg: object            # a gradnas.train.config.NetworkConfig
    in_channels: int
    num_classes: int
    image_size: tuple | None   # (height, width) of the images it is for; None when not known
    checkpoint: Path | None    # the trained weights to load, if any
    kind: str                  # "training run", "search run" or "genotype"
    source: str                # the source as given, for messages

    @property
    def input_shape(self) -> tuple | None:
        """(channels, height, width) of one input image, or None when the image size is not known."""
        return None if self.image_size is None else (self.in_channels, *self.image_size)


def load_network(source, *, weights: bool = True, device="cpu", setting: str | None = None,
                 pick: str | None = None, cells: int | None = None, channels: int | None = None,
                 classes: int | None = None, in_channels: int | None = None) -> torch.nn.Module:
    """The evaluation network of ``source`` in eval mode on ``device`` (see the module doc for the sources,
    ``setting``, ``pick`` and the overrides). Every bad source or option is one GradnasError naming the fix."""
    plan = plan_network(source, weights=weights, setting=setting, pick=pick, cells=cells, channels=channels,
                        classes=classes, in_channels=in_channels)
    return build_planned(plan, device=device)


def plan_network(source, *, weights: bool = True, setting: str | None = None, pick: str | None = None,
                 **overrides) -> NetworkPlan:
    """What :func:`load_network` builds for these arguments, without building it."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise GradnasError(f"load_network: unknown option(s) {', '.join(unknown)}; the shape options are "
                           f"{', '.join(OVERRIDES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    for key, value in given.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise GradnasError(f"load_network: {key} must be a positive integer, got {value!r}")
    if not isinstance(weights, bool):
        raise GradnasError(f"load_network: weights must be True or False, got {weights!r}")
    folder = _run_folder(source)
    if pick is not None and (folder is None or (folder / NETWORK_FILE).is_file()):
        raise GradnasError("load_network: pick= chooses the epoch of a search run folder; drop it for a training "
                           "run or a genotype")
    if folder is not None and (folder / NETWORK_FILE).is_file():
        if setting is not None:
            raise GradnasError(f"load_network: {folder} is a training run, built as its config.yaml says; drop "
                               "setting= (it shapes networks of genotypes and search runs)")
        return _training_plan(folder, weights, given)
    if folder is not None:
        genotype, dataset = _search_run(folder, pick or "best")
        return _genotype_plan(genotype, setting, given, dataset=dataset, kind="search run", source=str(folder))
    return _genotype_plan(_genotype(source), setting, given, dataset=None, kind="genotype", source=str(source))


def build_planned(plan: NetworkPlan, *, device="cpu") -> torch.nn.Module:
    """The network of a :class:`NetworkPlan` (with its checkpoint's weights), in eval mode on ``device``."""
    from gradnas.checkpoint import load_checkpoint
    from gradnas.space import build_network
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise GradnasError(f"load_network: device {device!r} is not a device ({exc}); use cpu, cuda or cuda:N") \
            from None
    net = build_network(plan.genotype, plan.net_cfg, in_channels=plan.in_channels, num_classes=plan.num_classes)
    if plan.checkpoint is not None:
        state = load_checkpoint(plan.checkpoint)
        if state.get("genotype") != plan.genotype.to_string() or not isinstance(state.get("model"), dict):
            raise GradnasError(f"{plan.checkpoint} holds the weights of another network than {plan.source}'s "
                               f"genotype.json; the folder was changed after training. Train it again, or pass "
                               f"weights=False")
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise GradnasError(f"the weights in {plan.checkpoint} do not fit the network its run folder describes "
                               f"({first}); the folder was changed after training") from None
    try:
        net = net.to(device)
    except (RuntimeError, AssertionError) as exc:  # e.g. cuda on a machine without a GPU
        raise GradnasError(f"load_network: cannot use device {str(device)!r} here ({exc}); use device='cpu'") \
            from None
    return net.eval()


# ---- sources -----------------------------------------------------------------------------------

def _run_folder(source) -> Path | None:
    """``source`` as a run folder, or None when it is a genotype (of any form) or a file."""
    from gradnas.space.genotype import looks_like_genotype
    if not isinstance(source, (str, os.PathLike)) or looks_like_genotype(source):
        return None
    path = Path(source)
    try:
        is_dir = path.is_dir()
    except OSError:  # a string longer than a path may be
        return None
    if not is_dir:
        return None
    if not (path / CONFIG_FILE).is_file():
        raise GradnasError(f"{path} is not a gradnas run folder: a training run (gradnas train) holds "
                           f"{NETWORK_FILE} and {CHECKPOINT_FILE}, a search run {CONFIG_FILE} and "
                           f"{GENOTYPE_FILE}; give one of those, a genotype file or a genotype string")
    return path


def _genotype(source):
    from gradnas.space.base import SPACES
    from gradnas.space.genotype import load_genotype, looks_like_genotype
    if any(isinstance(source, space.genotype_class) for space in SPACES.values()):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise GradnasError(f"load_network: a source is a run folder, a genotype file, a genotype string, a "
                           f"published cell's name or a genotype; got a {type(source).__name__}")
    if not looks_like_genotype(source):
        try:
            exists = Path(source).exists()
        except OSError:
            exists = False
        if not exists:
            text = str(source)
            shown = text if len(text) <= 100 else text[:100] + "..."
            raise GradnasError(f"load_network: {shown!r} is neither a run folder, a genotype file, a genotype "
                               "string nor the name of a published cell (e.g. DARTS_V2; gradnas.genotypes.named() "
                               "lists them)")
    return load_genotype(source)


def _search_run(folder: Path, pick: str) -> tuple:
    """(genotype, dataset name) of a search run folder, the genotype ``pick`` chooses as `gradnas train
    --genotype RUN --pick` does; a training run folder without network.json and any other config are
    refused."""
    from gradnas.config import SearchConfig, load_yaml
    from gradnas.train.genotypes import genotype_from_source
    saved = load_yaml(str(folder / CONFIG_FILE))
    if (config_kind(saved) or (None, None))[1] != "search":
        raise GradnasError(f"{folder} holds a training config but no {NETWORK_FILE}; it is not a complete "
                           f"training run folder. Give a training run written by `gradnas train`")
    genotype, _ = genotype_from_source(str(folder), pick=pick)
    data = saved.get("data")
    dataset = data.get("dataset") if isinstance(data, dict) else None
    return genotype, dataset or SearchConfig().data.dataset


def _training_plan(folder: Path, weights: bool, given: dict) -> NetworkPlan:
    from gradnas import overrides
    from gradnas.space.genotype import load_genotype
    cfg = overrides.saved_train_config(folder)
    try:
        info = json.loads((folder / NETWORK_FILE).read_text())
        c, h, w = (int(v) for v in info["input"])
        num_classes = int(info["num_classes"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise GradnasError(f"{folder / NETWORK_FILE} is not a network description written by gradnas train "
                           "(input, num_classes)") from None
    genotype = load_genotype(folder / GENOTYPE_FILE)
    if info.get("genotype") != genotype.to_string():
        raise GradnasError(f"{folder}: {NETWORK_FILE} and {GENOTYPE_FILE} name different genotypes; the "
                           "folder was changed after training")
    trained = {"cells": cfg.network.cells, "channels": cfg.network.channels, "classes": num_classes,
               "in_channels": c}
    checkpoint = None
    if weights:
        wrong = [f"{k}={v} (trained with {k}={trained[k]})" for k, v in given.items() if v != trained[k]]
        if wrong:
            raise GradnasError(f"load_network: {', '.join(wrong)} does not fit the trained weights of {folder}; "
                               f"drop it, or pass weights=False for an untrained network of that shape")
        checkpoint = folder / CHECKPOINT_FILE
        if not checkpoint.is_file():
            raise GradnasError(f"{folder} has no {CHECKPOINT_FILE} yet (stopped before its first epoch ended); "
                               f"continue it with `gradnas train --resume {folder}`, or pass weights=False for "
                               "the untrained network")
    shape = {**trained, **given}
    net_cfg = dataclasses.replace(cfg.network, cells=shape["cells"], channels=shape["channels"])
    return NetworkPlan(genotype, net_cfg, shape["in_channels"], shape["classes"], (h, w), checkpoint,
                       "training run", str(folder))


def _genotype_plan(genotype, setting: str | None, given: dict, *, dataset: str | None, kind: str,
                   source: str) -> NetworkPlan:
    from gradnas.train.config import TrainConfig, load_setting
    name = setting or DEFAULT_SETTINGS.get(genotype.space, "quick")
    cfg = TrainConfig.from_dict(load_setting(name))
    dataset = dataset or cfg.data.dataset
    known = DATASET_SHAPES.get(dataset)
    if known is None and not {"in_channels", "classes"} <= set(given):
        raise GradnasError(f"load_network: the images of dataset {dataset!r} (of the {kind} {source!r}, setting "
                           f"{name!r}) are not known without loading it; pass in_channels= and classes=")
    c, size, num_classes = known if known is not None else (given["in_channels"], None, given["classes"])
    if cfg.data.random_resized_crop:
        size = (cfg.data.random_resized_crop,) * 2
    net_cfg = dataclasses.replace(cfg.network, cells=given.get("cells", cfg.network.cells),
                                  channels=given.get("channels", cfg.network.channels))
    return NetworkPlan(genotype, net_cfg, given.get("in_channels", c), given.get("classes", num_classes), size,
                       None, kind, source)
