"""`make up`: start the five services, wait until each is ready, stream their logs.

Ctrl-C (or `make down`, which signals this process) stops them cleanly.
Every wait has a deadline; a port already taken is named with its process.
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
RUN = ROOT / "var" / "run"
SERVICES = {"intake": 8001, "quality": 8002, "capa": 8003, "reporting": 8004, "notify": 8005}
INBOUND_SMTP_PORT = 2525  # notify's complaints mailbox
READY_DEADLINE_S = float(os.environ.get("QMS_READY_DEADLINE", "60"))


def port_of(name: str) -> int:
    return int(os.environ.get(f"QMS_{name.upper()}_HTTP_PORT", SERVICES[name]))


def service_broker_urls() -> dict[str, str]:
    """Each service connects as its own least-privilege broker user (scripts/infra.sh made them)."""
    out = subprocess.run([str(ROOT / "scripts" / "rabbitmq_users.sh"), "--print-env"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def ports() -> list[tuple[str, str, int]]:
    """(service, setting, port) of every port `make up` listens on."""
    listed = [(n, f"QMS_{n.upper()}_HTTP_PORT", port_of(n)) for n in SERVICES]
    inbound = int(os.environ.get("QMS_NOTIFY_INBOUND_PORT", INBOUND_SMTP_PORT))
    return [*listed, ("notify (inbound SMTP)", "QMS_NOTIFY_INBOUND_PORT", inbound)]


def port_holder(port: int) -> str | None:
    """Who holds `port` on loopback: None when it is free."""
    with socket.socket() as probe:
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


def pump(name: str, stream) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"{name:<9} | {line.decode(errors='replace')}")
        sys.stdout.flush()


def stop(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 25
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"[up] {name} did not stop in time; killing it", flush=True)
            proc.kill()
    (RUN / "services.pid").unlink(missing_ok=True)


def main() -> int:
    taken = [(n, setting, port, h) for n, setting, port in ports() if (h := port_holder(port))]
    if taken:
        for name, setting, port, holder in taken:
            print(f"[up] ERROR: port {port} for {name} is taken by {holder}. "
                  f"Stop it, or set {setting}.", file=sys.stderr)
        return 1
    RUN.mkdir(parents=True, exist_ok=True)
    (RUN / "services.pid").write_text(str(os.getpid()))
    procs: dict[str, subprocess.Popen] = {}
    stopping = threading.Event()

    def on_signal(*_):
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env = service_broker_urls() | os.environ | {"PYTHONUNBUFFERED": "1"}
    for name in SERVICES:
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        threading.Thread(target=pump, args=(name, procs[name].stdout), daemon=True).start()

    deadline = time.monotonic() + READY_DEADLINE_S
    waiting = set(SERVICES)
    while waiting and not stopping.is_set():
        for name in sorted(waiting):
            if procs[name].poll() is not None:
                print(f"[up] ERROR: {name} exited with {procs[name].returncode} "
                      f"(its log is above)", file=sys.stderr)
                stop(procs)
                return 1
            if ready(port_of(name)):
                waiting.discard(name)
        if time.monotonic() > deadline:
            print(f"[up] ERROR: not ready after {READY_DEADLINE_S:.0f}s: {sorted(waiting)}",
                  file=sys.stderr)
            stop(procs)
            return 1
        time.sleep(0.3)
    if not stopping.is_set():
        print("[up] all services ready:", flush=True)
        for name in SERVICES:
            port = port_of(name)
            print(f"[up]   {name:<9} http://127.0.0.1:{port}  (API docs: /docs)", flush=True)
        print("[up] Ctrl-C or `make down` stops them.", flush=True)
    while not stopping.is_set():
        dead = [n for n, p in procs.items() if p.poll() is not None]
        if dead:
            print(f"[up] ERROR: {dead} exited; stopping the rest", file=sys.stderr)
            stop(procs)
            return 1
        stopping.wait(1)
    print("[up] stopping services", flush=True)
    stop(procs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
