"""`python -m services.capa`: serve the capa service."""

from services.capa.app import create
from services.capa.settings import Settings
from shared.runner import serve

if __name__ == "__main__":
    settings = Settings()
    serve("capa", create(settings), settings)
