"""2-D <-> 1-D scan orders: a registry of named, invertible orderings of feature-map tokens.

    >>> scan = create_scan('cross')
    >>> xs = scan.flatten(x)                # (B, C, H, W) -> (B, K, C', L)
    >>> y = scan.merge(ys, size=(H, W))     # (B, K, C', L) -> (B, C, H, W), sum over routes

See ``scans.base`` for the contract (index plans, padding) and ``scans.builtin`` for the table of scans;
``scans.tokens.MiddleTokenScan`` applies any of them to token sequences with a middle class token (Vim).
"""
from .base import Scan, create_scan, list_scans, register_scan
from . import builtin  # noqa: F401  (registers the built-in scans)
from .tokens import MiddleTokenScan

__all__ = ['MiddleTokenScan', 'Scan', 'create_scan', 'list_scans', 'register_scan']
