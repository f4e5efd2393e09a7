"""`python -m services.quality`: serve the quality service."""

from services.quality.app import create
from services.quality.settings import Settings
from shared.runner import serve

if __name__ == "__main__":
    settings = Settings()
    serve("quality", create(settings), settings)
