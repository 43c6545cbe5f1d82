"""Config sections of registered plug-ins: a plug-in method, relaxation or space may bring a section of its own.

``register_method`` / ``register_relaxation`` / ``register_space`` call :func:`register_section` for a plug-in
that declares ``config_section`` (the top-level key) and ``config_class`` (a frozen dataclass). SearchConfig then
parses that key with the class and keeps the result in ``SearchConfig.sections`` (``cfg.section(name)``).
This module depends on nothing else in gradnas, so every registry can use it without an import cycle.
"""
from __future__ import annotations

import dataclasses
import re

from gradnas.errors import GradnasError

# Top-level keys of SearchConfig (tests/test_registry.py checks this against the dataclass): never a section.
RESERVED_KEYS = frozenset({
    "space", "method", "order", "lambda", "lam", "xi", "fd_scale", "relax", "epochs", "batch_size", "seed",
    "device", "threads", "compile", "precision", "alpha_data", "switch_at", "then", "then_order", "data", "supernet", "nb201", "gumbel",
    "w_optim", "arch_optim", "probes", "collapse", "stop", "pvll", "callbacks", "log", "tracking", "sections"})

# section name -> (frozen config dataclass, owner, e.g. "method my-method")
SECTIONS: dict[str, tuple] = {}


def register_section(name: str, config_class: type, owner: str) -> None:
    """Let SearchConfig read the top-level section ``name`` with ``config_class`` (owned by ``owner``)."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise GradnasError(f"{owner}: config_section must be a lower-case identifier, got {name!r}")
    if name in RESERVED_KEYS:
        raise GradnasError(f"{owner}: config_section {name!r} is a built-in config key; choose another name")
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise GradnasError(f"{owner}: config_class of section {name!r} must be a dataclass, got {config_class!r}")
    if name in SECTIONS and SECTIONS[name][1] != owner:
        raise GradnasError(f"{owner}: config section {name!r} already belongs to {SECTIONS[name][1]}")
    SECTIONS[name] = (config_class, owner)


def unregister_section(name: str) -> None:
    SECTIONS.pop(name, None)
