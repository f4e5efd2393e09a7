"""`python -m services.notify`: serve the notify service."""

from services.notify.app import create
from services.notify.settings import Settings
from shared.runner import serve

if __name__ == "__main__":
    settings = Settings()
    serve("notify", create(settings), settings)
