"""`make up`: start the five services and the web console, wait until each is ready, stream
their logs.

A service that exits (a crash, kill -9, out of memory) is started again, after 1 s, then
2, 4 … up to 30 s when it keeps failing; once it has stayed up a minute the wait starts over
at 1 s. Each restart is logged with the service's restart counter; the other services keep
serving. Ctrl-C (or `make down`, which signals this process) stops them all cleanly.
Every wait has a deadline; a port already taken is named with its process.

Environment: QMS_<SERVICE>_HTTP_PORT and QMS_NOTIFY_INBOUND_PORT (ports), QMS_UP_SERVICES
(a comma-separated subset to run, e.g. `intake,quality`), QMS_RESTART_BACKOFF_S,
QMS_RESTART_BACKOFF_MAX_S and QMS_RESTART_STABLE_S (the waits above), QMS_READY_DEADLINE
(seconds to the first "all ready"), QMS_RUN_DIR (where services.pid goes; var/run).
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = Path(os.environ.get("QMS_RUN_DIR") or ROOT / "var" / "run")
SERVICES = {"intake": 8001, "quality": 8002, "capa": 8003, "reporting": 8004, "notify": 8005,
            "console": 8000}  # the web console: pages over the five APIs
INBOUND_SMTP_PORT = 2525  # notify's complaints mailbox
READY_DEADLINE_S = float(os.environ.get("QMS_READY_DEADLINE", "60"))
BACKOFF_FIRST_S = float(os.environ.get("QMS_RESTART_BACKOFF_S", "1"))
BACKOFF_MAX_S = float(os.environ.get("QMS_RESTART_BACKOFF_MAX_S", "30"))
STABLE_S = float(os.environ.get("QMS_RESTART_STABLE_S", "60"))  # up this long: backoff resets
TICK_S = 0.5


def selected() -> list[str]:
    """The services to run: all of them, or the subset QMS_UP_SERVICES names."""
    asked = [n.strip() for n in os.environ.get("QMS_UP_SERVICES", "").split(",") if n.strip()]
    unknown = [n for n in asked if n not in SERVICES]
    if unknown:
        raise SystemExit(f"[up] ERROR: QMS_UP_SERVICES names unknown services {unknown}; "
                         f"use {', '.join(SERVICES)}")
    return [n for n in SERVICES if n in asked] if asked else list(SERVICES)


def port_of(name: str) -> int:
    return int(os.environ.get(f"QMS_{name.upper()}_HTTP_PORT", SERVICES[name]))


def service_broker_urls() -> dict[str, str]:
    """Each service connects as its own least-privilege broker user, the console as the
    read-only `qms-console` (QMS_CONSOLE_AMQP_URL; scripts/infra.sh made them)."""
    out = subprocess.run([str(ROOT / "scripts" / "rabbitmq_users.sh"), "--print-env"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def console_env() -> dict[str, str]:
    """The console calls the services where `make up` runs them, and offers the development
    sign-in (off by default and in the deploy files)."""
    urls = {f"QMS_CONSOLE_{n.upper()}_URL": f"http://127.0.0.1:{port_of(n)}"
            for n in SERVICES if n != "console"}
    return urls | {"QMS_CONSOLE_DEV_SIGNIN": "true"}


def ports(names: list[str]) -> list[tuple[str, str, int]]:
    """(service, setting, port) of every port `make up` listens on."""
    listed = [(n, f"QMS_{n.upper()}_HTTP_PORT", port_of(n)) for n in names]
    if "notify" not in names:
        return listed
    inbound = int(os.environ.get("QMS_NOTIFY_INBOUND_PORT", INBOUND_SMTP_PORT))
    return [*listed, ("notify (inbound SMTP)", "QMS_NOTIFY_INBOUND_PORT", inbound)]


def port_holder(port: int) -> str | None:
    """Who holds `port` on loopback: None when it is free.

    Connections in TIME_WAIT (a service stopped a moment ago) do not hold it: the services
    bind with SO_REUSEADDR (uvicorn and asyncio both set it), and so does this probe."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            return None
        except OSError:
            pass
    try:  # name the process when iproute2's `ss` is there to tell
        line = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        line = ""
    if "users:((" in line:
        return line.split("users:((", 1)[1].split(")")[0].replace('"', "")
    return "another process"


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def say(message: str, *, error: bool = False) -> None:
    print(f"[up] {message}", file=sys.stderr if error else sys.stdout, flush=True)


def pump(name: str, stream) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{name:<9} | {line.decode(errors='replace')}")
        sys.stdout.flush()


class Supervised:
    """One service's process, started again with backoff whenever it exits."""

    def __init__(self, name: str, env: dict[str, str]):
        self.name, self.port, self.env = name, port_of(name), env
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.backoff = BACKOFF_FIRST_S  # the wait before the next restart
        self.started_at = 0.0
        self.due = 0.0  # when to start it (again)
        self.ready = False

    def spawn(self, now: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.started_at, self.ready = now, False
        threading.Thread(target=pump, args=(self.name, self.proc.stdout), daemon=True).start()
        again = f", restart {self.restarts}" if self.restarts else ""
        say(f"{self.name} started (pid {self.proc.pid}{again})")

    def check(self, now: float) -> None:
        """Restart it if it is due, note when it has exited, and when it is ready."""
        if self.proc is not None and (code := self.proc.poll()) is not None:
            if now - self.started_at >= STABLE_S:
                self.backoff = BACKOFF_FIRST_S  # it had stayed up: not a crash loop
            self.restarts += 1
            say(f"{self.name} exited with code {code}; restart {self.restarts} in "
                f"{self.backoff:.1f} s", error=True)
            self.proc, self.ready, self.due = None, False, now + self.backoff
            self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
        if self.proc is None:
            if now >= self.due:
                self.spawn(now)
            return
        if not self.ready and ready(self.port):
            self.ready = True
            if self.restarts:
                say(f"{self.name} ready again (restart {self.restarts})")


def stop(services: list[Supervised]) -> None:
    procs = {s.name: s.proc for s in services if s.proc is not None}
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 25
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop in time; killing it")
            proc.kill()
    (RUN / "services.pid").unlink(missing_ok=True)


def main() -> int:
    names = selected()
    taken = [(n, setting, port, h) for n, setting, port in ports(names)
             if (h := port_holder(port))]
    if taken:
        for name, setting, port, holder in taken:
            say(f"ERROR: port {port} for {name} is taken by {holder}. Stop it, or set "
                f"{setting}.", error=True)
        return 1
    RUN.mkdir(parents=True, exist_ok=True)
    (RUN / "services.pid").write_text(str(os.getpid()))
    stopping = threading.Event()

    def on_signal(*_):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env = service_broker_urls() | console_env() | os.environ | {"PYTHONUNBUFFERED": "1"}
    services = [Supervised(name, env) for name in names]
    deadline = time.monotonic() + READY_DEADLINE_S
    announced = False
    while not stopping.is_set():
        now = time.monotonic()
        for svc in services:
            if not stopping.is_set():
                svc.check(now)
        if not announced and all(s.ready for s in services):
            announced = True
            say("all services ready:")
            for svc in services:
                what = "open it in a browser" if svc.name == "console" else "API docs: /docs"
                say(f"  {svc.name:<9} http://127.0.0.1:{svc.port}  ({what})")
            say("a service that exits is started again; Ctrl-C or `make down` stops them.")
        elif not announced and now > deadline:
            waiting = sorted(s.name for s in services if not s.ready)
            say(f"ERROR: not ready after {READY_DEADLINE_S:.0f}s: {waiting} (their log is "
                f"above)", error=True)
            stop(services)
            return 1
        stopping.wait(TICK_S)
    say("stopping services")
    stop(services)
    return 0


if __name__ == "__main__":
    sys.exit(main())
