"""gradnas: gradient-based neural architecture search (DARTS, MiLeNAS, single-level, PVLL-NAS) in PyTorch.

The extension points are reachable from here (loaded on first use, so ``import gradnas`` stays cheap):
``register_op``, ``register_dataset``, ``register_method``, ``register_relaxation``, ``register_space``,
``register_callback``, ``Callback``, ``Search``, ``Training``, ``SearchConfig``, ``TrainConfig``; and for the
found architecture ``load_network`` (a run or genotype as a torch network), ``export_network`` and
``genotypes`` (the published cells by name, the genotype forms).
"""
import importlib
import logging

__version__ = "0.1.0"

# Messages go to the "gradnas" logger (gradnas.log); a library leaves configuring it to the application.
logging.getLogger("gradnas").addHandler(logging.NullHandler())

# public name -> the module that defines it
_PUBLIC = {
    "register_op": "gradnas.space.ops",
    "register_dataset": "gradnas.data.sources",
    "register_method": "gradnas.search.algorithm",
    "register_relaxation": "gradnas.relax",
    "register_space": "gradnas.space.base",
    "register_callback": "gradnas.callbacks",
    "Callback": "gradnas.callbacks",
    "ArchOptimizer": "gradnas.search.methods",
    "SearchAlgorithm": "gradnas.search.algorithm",
    "Relaxation": "gradnas.relax",
    "SearchSpace": "gradnas.space.base",
    "Search": "gradnas.search.loop",
    "Training": "gradnas.train.loop",
    "SearchConfig": "gradnas.config",
    "TrainConfig": "gradnas.train.config",
    "load_genotype": "gradnas.space.genotype",
    "load_network": "gradnas.network",
    "export_network": "gradnas.export",
    "genotypes": "gradnas.genotypes",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        module = importlib.import_module(_PUBLIC[name])
        return module if module.__name__ == f"gradnas.{name}" else getattr(module, name)
    raise AttributeError(f"module 'gradnas' has no attribute {name!r}")
