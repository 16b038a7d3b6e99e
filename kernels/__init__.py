"""Custom ops of the zoo: the selective scan (Triton, vectorised PyTorch, float64 oracle)."""
from .selective_scan import available_backends, selective_scan
from .reference import selective_scan_oracle

__all__ = ['available_backends', 'selective_scan', 'selective_scan_oracle']
