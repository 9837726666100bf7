"""The web page and HTTP API of mvpt: upload a video, get and play the ranked tracks and previews.

``create_app(index_dir)`` builds the FastAPI app (see :mod:`mvpt.serve.api`); ``mvpt serve``
runs it with uvicorn.
"""

from mvpt.serve.api import create_app

__all__ = ["create_app"]
