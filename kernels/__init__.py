"""Custom ops of the zoo: the selective scan (Triton, vectorised PyTorch, float64 oracle), the channel LayerNorm
of 2-D maps and RMSNorm of tokens, the scans' route gather and Mamba's causal depthwise conv1d (Triton on CUDA),
SOFT's Newton-Schulz pseudo-inverse and Monarch Mixer's block-diagonal / order-2 Monarch products."""
from ._dispatch import autocast_dtype, autocast_off
from .monarch import blockdiag_matmul, blockdiag_to_dense, monarch_matmul, monarch_to_dense
from .pinv import newton_pinv
from .causal_conv1d import causal_conv1d
from .layer_norm import layer_norm_2d, rms_norm
from .selective_scan import a_from_log, available_backends, project_routes, projected_selective_scan, selective_scan
from .reference import selective_scan_oracle

__all__ = [
    'a_from_log', 'autocast_dtype', 'autocast_off', 'available_backends', 'blockdiag_matmul', 'blockdiag_to_dense',
    'causal_conv1d', 'layer_norm_2d', 'monarch_matmul', 'monarch_to_dense', 'newton_pinv', 'project_routes',
    'projected_selective_scan', 'rms_norm', 'selective_scan', 'selective_scan_oracle',
]
