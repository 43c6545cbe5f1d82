"""The allocator switch of the gradnas command (gradnas.malloc): when it starts itself again on jemalloc,
with what environment, the errors, and (where jemalloc is installed) that the command then runs on it."""
import os
import subprocess
import sys

import pytest

from gradnas import malloc
from gradnas.errors import GradnasError

JE = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


def test_jemalloc_on_request_once():
    ask = {"PATH": "/bin", malloc.ENV: "jemalloc"}
    env = malloc.plan(ask, jemalloc_path=JE, running="system")
    assert env["LD_PRELOAD"] == JE and env["PATH"] == "/bin" and "MALLOC_CONF" not in env
    # the started-again process goes on as it is, even if the library did not load
    assert malloc.plan(env, jemalloc_path=JE, running="system") is None
    assert malloc.plan(ask, jemalloc_path=JE, running="jemalloc") is None  # already on it (preloaded by the user)


def test_a_users_preload_and_jemalloc_settings_are_kept():
    env = malloc.plan({malloc.ENV: "jemalloc", "LD_PRELOAD": "/opt/libx.so", "MALLOC_CONF": "narenas:1"},
                      jemalloc_path=JE, running="system")
    assert env["LD_PRELOAD"] == f"{JE} /opt/libx.so" and env["MALLOC_CONF"] == "narenas:1"


def test_system_by_default_and_missing_jemalloc():
    assert malloc.plan({}, jemalloc_path=JE, running="system") is None
    assert malloc.plan({malloc.ENV: "system"}, jemalloc_path=JE, running="system") is None
    with pytest.raises(GradnasError, match="libjemalloc.so.2 is not installed.*apt-get install libjemalloc2"):
        malloc.plan({malloc.ENV: "jemalloc"}, jemalloc_path=None, running="system")
    with pytest.raises(GradnasError, match="GRADNAS_MALLOC='tcmalloc': valid values are system, jemalloc"):
        malloc.plan({malloc.ENV: "tcmalloc"}, jemalloc_path=JE, running="system")


def test_find_and_loaded(tmp_path):
    assert malloc.find_jemalloc([str(tmp_path)]) is None
    (tmp_path / "libjemalloc.so.2").write_bytes(b"")
    assert malloc.find_jemalloc([str(tmp_path / "nothing"), str(tmp_path)]) == str(tmp_path / "libjemalloc.so.2")
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert malloc.loaded(str(maps)) == "system"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert malloc.loaded(str(maps)) == "jemalloc"
    assert malloc.loaded(str(tmp_path / "absent")) == "system"


def test_a_bad_choice_is_one_error_line():
    env = dict(os.environ, **{malloc.ENV: "fast"})
    out = subprocess.run([sys.executable, "-m", "gradnas", "--version"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "gradnas: error: GRADNAS_MALLOC='fast': valid values are system, jemalloc (the default: system)"]


@pytest.mark.skipif(malloc.find_jemalloc() is None or not sys.platform.startswith("linux"),
                    reason="jemalloc is not installed here (apt-get install libjemalloc2)")
def test_the_command_runs_on_jemalloc_when_asked():
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", malloc.ENV, malloc._GUARD)}

    def allocator_line(**extra):
        out = subprocess.run([sys.executable, "-m", "gradnas", "doctor"], capture_output=True, text=True,
                             env=dict(env, **extra), timeout=120)
        return next(line for line in out.stdout.splitlines() if line.startswith("allocator"))
    assert "jemalloc (" in allocator_line(**{malloc.ENV: "jemalloc"})  # the started-again process runs doctor
    assert "the system's malloc" in allocator_line()
