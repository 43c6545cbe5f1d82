import sys

from gradnas.console import command

sys.exit(command())  # on jemalloc when GRADNAS_MALLOC asks (gradnas.malloc), then the CLI
