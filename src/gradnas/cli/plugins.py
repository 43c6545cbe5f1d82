"""`--plugin MODULE`: import a user's module before a command runs.

A plugin registers what gradnas does not ship (ops, datasets, methods, relaxations, spaces, callbacks) as a
side effect of being imported, so that every command can name it. Plugins come from GRADNAS_PLUGINS
(comma-separated), then ``--plugin`` before the command, then ``--plugin`` after it; each is imported once,
in that order. A plugin is a module name (imported from sys.path) or the path of a .py file.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from gradnas.errors import GradnasError

ENV = "GRADNAS_PLUGINS"
HELP = ("import MODULE (a module name or a .py file) before the command runs, e.g. one that registers your own "
        f"ops, datasets, methods, relaxations, spaces or callbacks; repeatable; {ENV}=MOD1,MOD2 adds more")
# Two destinations: argparse copies a subcommand's defaults over the values parsed before the subcommand,
# so one shared destination would lose `gradnas --plugin x search`.
_DESTS = {True: "plugins_before", False: "plugins_after"}


def add_option(parser, *, before_command: bool):
    """Add ``--plugin`` to the top-level parser (before_command) or to a command's; returns the parser."""
    parser.add_argument("--plugin", action="append", dest=_DESTS[before_command], metavar="MODULE", help=HELP)
    return parser


def requested(args) -> list:
    """The plugins to import, in order and each once: GRADNAS_PLUGINS, then the --plugin options. Takes the
    two raw options out of ``args``, so that the returned list is the only record of them."""
    env = [p.strip() for p in os.environ.get(ENV, "").split(",") if p.strip()]
    given = [p for dest in _DESTS.values() for p in (vars(args).pop(dest, None) or [])]
    return list(dict.fromkeys(env + given))


def load(plugins) -> None:
    """Import each plugin; one that cannot be imported (missing, or failing as it runs) is a GradnasError."""
    for plugin in plugins:
        try:
            _import(plugin)
        except Exception as exc:  # whatever the user's module raises, the command reports it in one line
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            fix = (f"check that the file exists and imports cleanly (python {plugin} shows the full error)"
                   if _is_file(plugin) else
                   "check the name, that its folder is on PYTHONPATH (or give the path of its .py file), and "
                   f"that it imports cleanly (python -c 'import {plugin}' shows the full error)")
            raise GradnasError(f"cannot import plugin {plugin!r} ({reason}); {fix}") from exc


def portable(plugins) -> list:
    """The plugins as another process started elsewhere can import them: file paths made absolute."""
    return [str(Path(p).expanduser().resolve()) if _is_file(p) else p for p in plugins]


def _is_file(plugin: str) -> bool:
    return plugin.endswith(".py") or os.sep in plugin or (os.altsep is not None and os.altsep in plugin)


def _import(plugin: str) -> None:
    if not _is_file(plugin):
        importlib.import_module(plugin)
        return
    path = Path(plugin).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    # The module is named after the file, as `import` would name it, so that pickles and tracebacks read
    # naturally; a different module already holding that name is refused rather than replaced.
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None:
        if getattr(loaded, "__file__", None) and Path(loaded.__file__).resolve() == path:
            return  # named twice, e.g. in GRADNAS_PLUGINS and on the command line
        where = getattr(loaded, "__file__", None) or "built in"
        raise ImportError(f"a module named {name!r} is already imported ({where}); rename the file")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
