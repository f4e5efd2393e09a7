"""The supervisor `make up` runs (scripts/run_services.py), as a process on the real broker and
database: a service killed with SIGKILL comes back by itself while the others keep serving,
and SIGTERM (`make down`) still stops them all.

Two of the five services (QMS_UP_SERVICES) on free ports, in the run's own namespace, keep
it short; what happens to one service happens to any of them."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import test_namespace
from tests.e2e.harness import LOGS, ROOT, free_port
from tests.support import eventually


def started_pids(log: Path, name: str) -> list[int]:
    """The pids the supervisor said it started `name` with, in order."""
    return [int(pid) for pid in re.findall(rf"\[up\] {name} started \(pid (\d+)", log.read_text())]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_killed_service_is_restarted_while_another_keeps_serving_and_sigterm_stops_all(
        tmp_path):
    namespace = test_namespace("sup")
    ports = {"intake": free_port(), "quality": free_port()}
    env = os.environ | {
        "QMS_NAMESPACE": namespace,
        "QMS_UP_SERVICES": ",".join(ports),
        "QMS_RUN_DIR": str(tmp_path),  # not var/run: a `make up` may be running beside us
        "QMS_INTAKE_ATTACHMENT_DIR": str(ROOT / "var" / "test-attachments" / namespace),
        "QMS_RESTART_BACKOFF_S": "1",
        "PYTHONUNBUFFERED": "1",
    } | {f"QMS_{name.upper()}_HTTP_PORT": str(port) for name, port in ports.items()}
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{namespace}-supervisor.log"
    with open(log, "wb") as out:
        supervisor = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "run_services.py")],
                                      cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    intake = f"http://127.0.0.1:{ports['intake']}"
    quality = f"http://127.0.0.1:{ports['quality']}"
    try:
        async def all_ready() -> bool:
            assert supervisor.poll() is None, f"the supervisor exited; see {log}"
            return "[up] all services ready" in log.read_text()
        await eventually(all_ready, timeout=90, what=f"all services ready (see {log})",
                         interval=0.3)
        [first_intake] = started_pids(log, "intake")
        [quality_pid] = started_pids(log, "quality")

        # Quality is asked every 0.1 s from before the kill until intake is back.
        answers: list[int | str] = []
        watching = asyncio.Event()

        async def watch_quality() -> None:
            async with httpx.AsyncClient(timeout=2) as http:
                while not watching.is_set():
                    try:
                        answers.append((await http.get(f"{quality}/healthz")).status_code)
                    except httpx.HTTPError as exc:
                        answers.append(repr(exc))
                    await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch_quality())
        # A kept-alive connection to intake when it dies: its port is left with a connection
        # in TIME_WAIT, which the restarted intake must bind past.
        async with httpx.AsyncClient(timeout=2) as http:
            assert (await http.get(f"{intake}/healthz")).status_code == 200
            os.kill(first_intake, signal.SIGKILL)
            killed_at = time.monotonic()

        async def intake_back() -> bool:
            assert supervisor.poll() is None, f"the supervisor exited; see {log}"
            try:
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"{intake}/healthz")).status_code == 200
            except httpx.HTTPError:
                return False
        await eventually(intake_back, timeout=60, what=f"intake to answer again (see {log})",
                         interval=0.2)
        back_after = time.monotonic() - killed_at
        watching.set()
        await watcher

        text = log.read_text()
        assert "[up] intake exited with code -9; restart 1 in 1.0 s" in text
        [_, second_intake] = started_pids(log, "intake")
        assert second_intake != first_intake and started_pids(log, "quality") == [quality_pid]
        assert "address already in use" not in text.lower()
        assert len(answers) >= 5 and set(answers) == {200}, \
            f"quality did not answer throughout the {back_after:.1f} s: {answers}"
        async def said_ready_again() -> bool:
            return "[up] intake ready again (restart 1)" in log.read_text()
        await eventually(said_ready_again, timeout=30,
                         what="the supervisor to say intake is ready again")

        # `make down`: SIGTERM stops every service and the supervisor, which says so.
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(supervisor.wait, 40) == 0
        assert gone(second_intake) and gone(quality_pid)
        assert not (tmp_path / "services.pid").exists()
        assert "[up] stopping services" in log.read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(10)
        for name in ports:  # never leave a service behind, whatever failed
            for pid in started_pids(log, name):
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)
