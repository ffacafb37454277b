"""The bench's children: waiting for a child's own listening socket, not any process's on
that port (another program may take a free port between `free_port` and the child's bind)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from modelrouter.bench import procs

LISTEN = (
    "import socket, sys, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "time.sleep(30)\n"
)


def test_a_child_listening_on_its_port_is_waited_for() -> None:
    port = procs.free_port()
    child = subprocess.Popen([sys.executable, "-c", LISTEN, str(port)])
    try:
        procs.wait_listening(port, timeout=10, process=child)
    finally:
        child.kill()
        child.wait()


def test_a_port_another_process_took_is_not_the_childs() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        child = subprocess.Popen([sys.executable, "-c", LISTEN, str(port)])  # cannot bind
        try:
            with pytest.raises(procs.PortTaken):
                procs.wait_listening(port, timeout=10, process=child)
        finally:
            child.kill()
            child.wait()
