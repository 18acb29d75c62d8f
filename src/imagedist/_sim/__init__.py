"""Temporary alias of :mod:`imagedist._backends.sim` while a test in flight moves over (issue 9)."""

from .._backends.sim import *  # noqa: F403
from .._backends.sim import __all__  # noqa: F401
