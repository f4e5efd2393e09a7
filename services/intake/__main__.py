"""`python -m services.intake`: serve the intake service."""

from services.intake.app import create
from services.intake.settings import Settings
from shared.runner import serve

if __name__ == "__main__":
    settings = Settings()
    serve("intake", create(settings), settings)
