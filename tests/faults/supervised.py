"""The five services under `make up`'s own supervisor (scripts/run_services.py), in the run's
namespace: a service killed here comes back the way it does on a plant's machine, started
again by the supervisor, not by the test."""

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile

from tests.e2e.harness import LOGS, ROOT, System
from tests.support import eventually


def alive(pid: int) -> bool:
    """Running: neither gone nor a zombie its parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class SupervisedSystem(System):
    """A `System` whose processes the supervisor owns: `kill` one, and it comes back alone."""

    def __init__(self, namespace: str, env: dict[str, str] | None = None):
        super().__init__(namespace, env)
        self.log = LOGS / f"{namespace}-supervisor.log"
        self.supervisor: subprocess.Popen | None = None

    def _supervisor_env(self) -> dict[str, str]:
        ports = {f"QMS_{name.upper()}_HTTP_PORT": str(port) for name, port in self.ports.items()}
        return os.environ | self.env | ports | {
            "QMS_UP_SERVICES": ",".join(self.services),  # the five, not the console
            # not var/run: a `make up` may be running beside us
            "QMS_RUN_DIR": tempfile.mkdtemp(prefix=f"{self.namespace}-run-"),
            "QMS_READY_DEADLINE": "180",  # two shared cores, other tests beside us
        }

    async def start(self, deadline_s: float = 180) -> "SupervisedSystem":
        LOGS.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.supervisor = subprocess.Popen(
                [sys.executable, str(ROOT / "scripts" / "run_services.py")], cwd=ROOT,
                env=self._supervisor_env(), stdout=out, stderr=subprocess.STDOUT)

        async def all_ready() -> bool:
            assert self.supervisor is not None and self.supervisor.poll() is None, \
                f"the supervisor exited; see {self.log}"
            return "[up] all services ready" in self.text()
        await eventually(all_ready, timeout=deadline_s, interval=0.3,
                         what=f"all services ready (see {self.log})")
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self, name: str) -> list[int]:
        """The pids the supervisor said it started `name` with, in order."""
        return [int(p) for p in re.findall(rf"\[up\] {name} started \(pid (\d+)", self.text())]

    def restarts(self) -> int:
        """How many times the supervisor has seen a service exit so far."""
        return len(re.findall(r"\[up\] \w+ exited with code", self.text()))

    def kill(self, name: str) -> int:
        """kill -9 the running process of `name`; its pid."""
        pid = self.pids(name)[-1]
        os.kill(pid, signal.SIGKILL)
        return pid

    async def back(self, name: str, killed: int, timeout: float = 120) -> None:
        """Until the supervisor has started `name` again (a new pid) and it is ready."""
        async def ready_again() -> bool:
            assert self.supervisor is not None and self.supervisor.poll() is None, \
                f"the supervisor exited; see {self.log}"
            pids, text = self.pids(name), self.text()
            again = len(re.findall(rf"\[up\] {name} ready again", text))
            return pids[-1] != killed and again >= len(pids) - 1
        await eventually(ready_again, timeout=timeout, interval=0.3,
                         what=f"{name} restarted by the supervisor and ready (see {self.log})")

    async def stop(self) -> None:
        """`make down`: SIGTERM to the supervisor, which stops the services; then make sure."""
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.supervisor.wait, 40)
            except subprocess.TimeoutExpired:
                self.supervisor.kill()
        for name in self.services:  # never leave a service behind, whatever failed
            for pid in self.pids(name):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
