"""mvpt: recommend music for a video and video for music (MVPt, CVPR 2022).

The stable Python API; the CLI and the HTTP server call these same functions::

    import mvpt
    mvpt.extract(["videos/"], "store")                 # media -> feature store
    mvpt.train("store", "runs/mvpt", model="mvpt")     # -> run folder (checkpoints)
    run = mvpt.load_run("runs/mvpt")                   # the trained model, its K and encoders
    mvpt.evaluate(run, "store", level="track")         # -> metrics dict
    mvpt.index(run, ["music/"], "library")             # -> searchable music index
    mvpt.recommend("library", "my_video.mp4", top=10)  # -> ranked tracks with offsets

Heavy modules (torch, faiss) load on first use. Several API names are also module names
(``mvpt.extract``, ``mvpt.train``, ``mvpt.index``, ``mvpt.recommend``): the package attribute is
always the function, however often it is used and whichever modules were imported before; the
modules stay importable by their full names (``from mvpt.index import open_index``, or
``importlib.import_module("mvpt.index")``; ``import mvpt.index as m`` gives the function).
"""

import sys
import types
from importlib import import_module

from mvpt.errors import MvptError

__version__ = "0.1.0"

# API name -> (module, attribute)
_API = {
    "extract": ("mvpt.extract", "extract"),
    "train": ("mvpt.train", "train"),
    "evaluate": ("mvpt.eval", "evaluate"),
    "index": ("mvpt.index", "build_index"),
    "build_index": ("mvpt.index", "build_index"),
    "open_index": ("mvpt.index", "open_index"),
    "recommend": ("mvpt.recommend", "recommend"),
    "load_run": ("mvpt.run", "load_run"),
    "Run": ("mvpt.run", "Run"),
    "FeatureStore": ("mvpt.store", "FeatureStore"),
    "run_demo": ("mvpt.demo", "run_demo"),
}

__all__ = ["MvptError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        module, attribute = _API[name]
        value = getattr(import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mvpt' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))


class _Package(types.ModuleType):
    """The package's module type: importing a submodule that shares an API name (``mvpt.index``)
    does not replace the API function on the package, as Python's import system would."""

    def __setattr__(self, name, value):
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
