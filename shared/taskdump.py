"""Where a service's asyncio tasks are waiting: for a process that is alive but stuck.

A thread dump (py-spy) shows only the event loop idling; the stuck work is a suspended
coroutine. `await_chain` walks a task's `await` chain (coroutine → the coroutine it awaits →
… → the future at the bottom) and names each frame, e.g. `retention.py:217 in _list`
above `locks.py:114 in acquire`. `kill -USR1 <pid>` logs every task's chain at ERROR
(`install`, done by `Service.start`); the consumer's watchdog logs the chain of an event
handled for too long (`shared.stallwatch`).
"""

import asyncio
import logging
import signal
from typing import Any

log = logging.getLogger("qms.tasks")


def await_chain(task: asyncio.Task) -> list[str]:
    """`file:line in function` for each coroutine the task is suspended in, outermost first
    (the innermost is what it waits on, e.g. `asyncio/locks.py:114 in acquire`)."""
    chain: list[str] = []
    obj: Any = task.get_coro()
    for _ in range(200):  # a chain is a few dozen deep; stop on anything cyclic
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None) \
            or getattr(obj, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        where = "/".join(code.co_filename.split("/")[-2:])  # e.g. reporting/retention.py
        chain.append(f"{where}:{frame.f_lineno} in {code.co_name}")
        nxt = getattr(obj, "cr_await", None) or getattr(obj, "ag_await", None) \
            or getattr(obj, "gi_yieldfrom", None)
        if nxt is None:
            break
        obj = nxt
    return chain


def describe(task: asyncio.Task) -> str:
    lines = "\n".join(f"    {step}" for step in await_chain(task)) or "    (not started)"
    return f"task {task.get_name()!r}:\n{lines}"


def dump_tasks() -> str:
    """Every task of the running loop with its await chain."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    return f"{len(tasks)} asyncio task(s)\n" + "\n".join(describe(t) for t in tasks)


def install(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """`kill -USR1 <pid>` logs `dump_tasks()`; False where signals cannot be handled here
    (not the main thread, or no SIGUSR1 on this platform). Installing again (a second
    service in one process) replaces the handler with the same one."""
    loop = loop or asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGUSR1, lambda: log.error("SIGUSR1: %s", dump_tasks()))
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        return False
    return True
