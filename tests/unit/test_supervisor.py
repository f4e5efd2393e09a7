"""The supervisor `make up` runs (scripts/run_services.py), without starting any service:
its port check and its restart waits. tests/e2e/test_supervisor.py runs it for real."""

import socket
import subprocess
from pathlib import Path

import pytest

from tests.support import load_script

ROOT = Path(__file__).resolve().parents[2]


def load_supervisor():
    return load_script("scripts/run_services.py", "qms_run_services")


run_services = load_supervisor()


def port_left_in_time_wait() -> int:
    """A port whose server closed a connection first and stopped listening: TIME_WAIT."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server side closes first, as a stopped service does
    client.recv(1)
    client.close()
    server.close()
    return port


def test_a_port_left_in_time_wait_by_a_stopped_service_counts_as_free():
    port = port_left_in_time_wait()
    waiting = subprocess.run(["ss", "-Htan", "state", "time-wait", f"sport = :{port}"],
                             capture_output=True, text=True).stdout
    if not waiting.strip():
        pytest.skip("no connection in TIME_WAIT to test with (ss missing?)")
    assert run_services.port_holder(port) is None


def test_a_port_another_process_listens_on_is_named_as_taken():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        assert run_services.port_holder(other.getsockname()[1]) is not None


class ExitedProcess:
    """Stands in for a service's process that has already exited."""

    def __init__(self, code: int = -9):
        self.returncode = code
        self.pid = 4242

    def poll(self) -> int:
        return self.returncode


def test_a_crashing_service_is_restarted_after_waits_that_double_up_to_the_maximum(
        monkeypatch, capsys):
    monkeypatch.setattr(run_services, "BACKOFF_FIRST_S", 1.0)
    monkeypatch.setattr(run_services, "BACKOFF_MAX_S", 30.0)
    monkeypatch.setattr(run_services, "STABLE_S", 60.0)
    svc = run_services.Supervised("intake", {})
    spawned: list[float] = []

    def spawn(now: float) -> None:
        spawned.append(now)
        svc.proc, svc.started_at = ExitedProcess(), now

    monkeypatch.setattr(svc, "spawn", spawn)
    now = 0.0
    svc.spawn(now)
    waits = []
    for _ in range(7):  # it dies at once every time
        svc.check(now)
        waits.append(svc.due - now)
        now = svc.due
        svc.check(now)  # due: started again
    assert waits == [1, 2, 4, 8, 16, 30, 30]
    assert spawned == [0, 1, 3, 7, 15, 31, 61, 91]
    log = capsys.readouterr().err
    assert "intake exited with code -9; restart 1 in 1.0 s" in log
    assert "intake exited with code -9; restart 7 in 30.0 s" in log

    # After a minute up, a crash is not a crash loop: the wait starts over at 1 s, the
    # counter does not.
    now += 61
    svc.check(now)
    assert svc.due - now == 1
    assert "intake exited with code -9; restart 8 in 1.0 s" in capsys.readouterr().err
