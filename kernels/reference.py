"""Float64 sequential oracle of the selective scan (tests only).

Written from the recurrence in the Mamba paper (Gu & Dao, 2023, Alg. 2) with mamba_ssm's conventions:
simplified ZOH discretisation (``a = exp(delta * A)``, ``b = delta * B * u``), grouped B/C of shape
(batch, G, N, L) where channel d uses group ``d // (D / G)``, softplus threshold 20. It loops over time
steps on purpose: it is slow, obviously correct, and differentiable by autograd, which gives every
gradient the kernels must reproduce.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ['selective_scan_oracle']


def selective_scan_oracle(
        u: torch.Tensor,
        delta: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        C: Optional[torch.Tensor] = None,
        D: Optional[torch.Tensor] = None,
        z: Optional[torch.Tensor] = None,
        delta_bias: Optional[torch.Tensor] = None,
        delta_softplus: bool = False,
        return_last_state: bool = False,
        return_hidden_states: bool = False,
) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Reference selective scan computed in float64, one time step at a time.

    Returns the output cast to ``u.dtype`` (or the hidden states (batch, D, N, L) when
    ``return_hidden_states``), plus the last state (batch, D, N) when ``return_last_state``.
    """
    dtype_in = u.dtype
    u, delta, A = u.double(), delta.double(), A.double()
    batch, dim, length = u.shape
    if B.dim() == 3:
        B = B.unsqueeze(1)
    groups = B.shape[1]
    B = B.double().repeat_interleave(dim // groups, dim=1)  # (batch, D, N, L)
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(batch, dim, A.shape[1])
    states = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[..., t]
        states.append(h)
    hs = torch.stack(states, dim=-1)  # (batch, D, N, L)
    if return_hidden_states:
        out = hs.to(dtype_in)
    else:
        if C.dim() == 3:
            C = C.unsqueeze(1)
        C = C.double().repeat_interleave(dim // C.shape[1], dim=1)
        y = (hs * C).sum(2)
        if D is not None:
            y = y + D.double()[:, None] * u
        if z is not None:
            y = y * F.silu(z.double())
        out = y.to(dtype_in)
    if return_last_state:
        return out, h.to(dtype_in)
    return out
