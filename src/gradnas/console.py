"""The ``gradnas`` console command: first the allocator (gradnas.malloc: it may start the command again on
jemalloc, which must be loaded before torch), then the CLI."""
import sys

from gradnas.errors import GradnasError
from gradnas.malloc import reexec_if_needed


def command() -> int:
    try:
        reexec_if_needed()
    except GradnasError as exc:
        print(f"gradnas: error: {exc}", file=sys.stderr)
        return 2
    from gradnas.cli import main
    return main()
