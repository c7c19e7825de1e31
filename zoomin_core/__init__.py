"""zoomin_core: the ZoomIn method (scan, then zoom in), engine-agnostic.

No Ray, no object-storage code here: usable from a notebook.

    from zoomin_core import load_backend, run_chain, ImageInput
    rows = run_chain(load_backend("compact"), [ImageInput("a.jpg", open("a.jpg", "rb").read())])
"""
from .backends import available as available_backends, load_backend
from .records import ImageInput, ResultRow
from .stages import ExamineConfig, examine, run_chain

__all__ = ["available_backends", "load_backend", "ImageInput", "ResultRow", "ExamineConfig",
           "examine", "run_chain"]
__version__ = "0.1.0"
