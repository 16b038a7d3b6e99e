"""Custom ops of the zoo: the selective scan (Triton, vectorised PyTorch, float64 oracle) and SOFT's Newton-Schulz
pseudo-inverse."""
from .pinv import newton_pinv
from .selective_scan import available_backends, selective_scan
from .reference import selective_scan_oracle

__all__ = ['available_backends', 'newton_pinv', 'selective_scan', 'selective_scan_oracle']
