"""Temporary alias (issue 9): see :mod:`imagedist._backends.sim.scenario`."""

from .._backends.sim.scenario import _sparse_fixed_vhd

__all__ = ["_sparse_fixed_vhd"]
