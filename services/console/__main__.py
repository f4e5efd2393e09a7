"""`python -m services.console`: serve the web console."""

from services.console.app import create
from services.console.settings import Settings
from shared.runner import serve

if __name__ == "__main__":
    settings = Settings()
    serve("console", create(settings), settings)
