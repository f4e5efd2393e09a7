"""`python -m services.reporting`: serve the reporting service."""

from services.reporting.app import create
from services.reporting.settings import Settings
from shared.runner import serve

if __name__ == "__main__":
    settings = Settings()
    serve("reporting", create(settings), settings)
