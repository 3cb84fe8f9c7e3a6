"""``python -m fastconv bench``: fastconv's C++ core against PyTorch and the NumPy reference.

Fair by construction: every library runs on the same thread count (set and
then verified), PyTorch at full fp32 precision, with the same TF-style "same"
padding; every output is checked for agreement before anything is timed; each
figure is the median of repeats after warm-up, shown with its spread, the
repeats taken in rounds in which the libraries and thread counts take turns
(so that a slow spell of the machine does not favour one of them). This is
a measuring tool, never a test: nothing here asserts a speed.
"""

from .cli import add_arguments, run

__all__ = ["add_arguments", "run"]
