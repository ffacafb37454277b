"""scripts/system-tools.sh: `make test` (and .ci/run) get the system tools the tests drive on a
fresh machine: installed as root, else named, with the one command that installs them, before
anything else runs. apt-get, id and the tools are stand-ins on a PATH of the test's own."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "system-tools.sh"
PACKAGES = {  # what `make test` needs: Debian package -> the tool it brings
    "tinyproxy-bin": "tinyproxy",
    "redis-server": "redis-server",
    "redis-tools": "redis-cli",
    "prometheus": "promtool",
    "chromium": "chromium",
}
APT_GET = """#!/bin/sh
echo "$*" >> "$APT_LOG"
[ "$1" = install ] || exit 0
for package in "$@"; do
    case "$package" in
        tinyproxy-bin) tool=tinyproxy ;; redis-tools) tool=redis-cli ;;
        prometheus) tool=promtool ;; -*|install) continue ;; *) tool=$package ;;
    esac
    printf '#!/bin/sh\\n' > "$FAKE_BIN/$tool" && chmod +x "$FAKE_BIN/$tool"
done
"""


class Machine:
    """A PATH with `id` saying `uid`, an apt-get that records its calls, and `tools`."""

    def __init__(self, root: Path, *, uid: int, tools: tuple[str, ...] = ()) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.apt_log = root / "apt.log"
        self.apt_log.touch()
        self._script("id", f"#!/bin/sh\necho {uid}\n")
        self._script("apt-get", APT_GET)
        for real in ("timeout", "chmod"):  # the script's, and the fake apt-get's
            found = shutil.which(real)
            assert found is not None
            (self.bin / real).symlink_to(found)
        for tool in tools:
            self._script(tool, "#!/bin/sh\n")

    def _script(self, name: str, text: str) -> None:
        path = self.bin / name
        path.write_text(text)
        path.chmod(0o755)

    def run(self, *suites: str) -> subprocess.CompletedProcess[str]:
        bash = shutil.which("bash")
        assert bash is not None
        env = {"PATH": str(self.bin), "APT_LOG": str(self.apt_log), "FAKE_BIN": str(self.bin)}
        return subprocess.run(
            [bash, str(SCRIPT), *suites],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    @property
    def apt_calls(self) -> list[str]:
        return self.apt_log.read_text().splitlines()


def test_a_user_without_the_tools_is_told_the_one_command_and_nothing_is_run(
    tmp_path: Path,
) -> None:
    machine = Machine(tmp_path, uid=1000)
    done = machine.run("test")
    assert done.returncode == 1
    command = "sudo apt-get install -y --no-install-recommends " + " ".join(PACKAGES)
    assert command in done.stderr
    assert machine.apt_calls == []


def test_root_without_the_tools_gets_them_installed(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=0, tools=("redis-server",))
    done = machine.run("test")
    assert done.returncode == 0, done.stderr
    missing = [p for p in PACKAGES if p != "redis-server"]
    assert machine.apt_calls == ["install -y --no-install-recommends " + " ".join(missing)]
    assert all((machine.bin / tool).exists() for tool in PACKAGES.values())


def test_with_every_tool_there_nothing_is_installed_or_asked(tmp_path: Path) -> None:
    machine = Machine(tmp_path, uid=1000, tools=tuple(PACKAGES.values()))
    done = machine.run("test")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert machine.apt_calls == []


def test_make_test_checks_the_system_tools_before_anything_else_and_ci_uses_the_same_script() -> (
    None
):
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(
        [make, "-n", "--no-print-directory", "test"],  # run under `make test` too
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=os.environ | {"MAKEFLAGS": ""},
    )
    commands = dry.stdout.splitlines()
    assert commands[0] == "bash scripts/system-tools.sh test"
    assert any("pytest" in line for line in commands[1:])
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/system-tools.sh test e2e" in ci
    assert "apt-get" not in ci, "one list of packages, in the script"
