"""The REST control plane (FastAPI). ``create_app`` builds it; routes live in ``api.routes``."""

from api.app import create_app

__all__ = ["create_app"]
