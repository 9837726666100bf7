"""mvpt: recommend music for a video and video for music (MVPt, CVPR 2022).

The stable Python API; the CLI and the HTTP server call these same functions.
"""

from mvpt.errors import MvptError

__version__ = "0.1.0"

__all__ = ["MvptError", "__version__"]
