"""mvpt: recommend music for a video and video for music (MVPt, CVPR 2022).

The stable Python API; the CLI and the HTTP server call these same functions::

    import mvpt
    mvpt.extract(["videos/"], "store")                     # media -> feature store
    mvpt.train("store", "runs/mvpt", model="mvpt")         # -> run folder (checkpoints)
    mvpt.evaluate("runs/mvpt", "store", level="track")     # -> metrics dict
    mvpt.build_index("runs/mvpt", ["music/"], "index")     # -> searchable music index
    mvpt.recommend("index", "my_video.mp4", top=10)        # -> ranked tracks with offsets

Heavy modules (torch, faiss) load on first use.
"""

from importlib import import_module

from mvpt.errors import MvptError

__version__ = "0.1.0"

_API = {
    "extract": "mvpt.extract",
    "train": "mvpt.train",
    "evaluate": "mvpt.eval",
    "build_index": "mvpt.index",
    "recommend": "mvpt.recommend",
    "run_demo": "mvpt.demo",
}

__all__ = ["MvptError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'mvpt' has no attribute {name!r}")
