"""A tally service process that dies (SIGKILL) while handling its first event, before acking.

Run by the crash test: `python -m tests.integration.crashing_tally <namespace>`.
"""

import asyncio
import os
import signal
import sys

from shared.settings import InfraSettings
from tests.integration.kit_fixtures import tally_service


async def main(namespace: str) -> None:
    async def die(_event) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    svc = tally_service(InfraSettings(namespace=namespace, retry_delay_ms=200, max_attempts=3),
                        before_apply=die)
    await svc.start()
    print("ready", flush=True)
    await asyncio.sleep(60)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
