"""fastconv: a hand-written 2-D convolution layer, forward and backward.

C++ kernels (OpenMP, pybind11) behind a validating Python API, with a pure
NumPy implementation beside them as the readable reference.
"""

from importlib.metadata import PackageNotFoundError, version

from . import reference
from ._threads import get_num_threads, set_num_threads, threads
from .functional import ConvGradients, conv2d, conv2d_backward
from .layer import Conv2D

try:
    __version__ = version("fastconv")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "Conv2D",
    "ConvGradients",
    "conv2d",
    "conv2d_backward",
    "get_num_threads",
    "reference",
    "set_num_threads",
    "threads",
    "__version__",
]
