"""The selective state-space (S6) core shared by every SSM family of the zoo.

``SelectiveSSM`` owns the Mamba parameters of K scan routes and runs ``kernels.selective_scan`` over
the route sequences that a scan from ``scans`` produced. Everything around it (projections into and
out of the inner width, depthwise convolutions, gates, norms, the scan geometry) belongs to the family:

    scan = create_scan('cross')
    ssm = SelectiveSSM(scan.channels_per_route(d_inner), d_state=16, dt_rank=math.ceil(dim / 16),
                       num_routes=scan.num_routes)
    ys = ssm(scan.flatten(x))                   # (B, K, C', L) -> (B, K, C', L), float32
    y = scan.merge(ys, (H, W))

How the later families map onto it:

* VMamba / EfficientVMamba / MHS-VM: one core with K = ``scan.num_routes`` per-route parameter groups
  (cross, atrous, snake4 ...), one kernel call for all routes (B/C grouped per route).
* GroupMamba: the ``grouped`` scan gives each route its own channel group, so ``d_inner`` is the
  group width (C' = C / K); the parameters of the four official single-direction SS2D modules stack
  into the K groups.
* MSVMamba: two parameter groups used by two calls with different sequence lengths: pass the route
  sequences of one branch and ``route_offset`` to select its group.
* Vim: K = 2 (forward, backward) with the gate ``z`` applied inside the kernel (``forward(xs, z)``);
  ``shared_proj=True`` gives the variant that shares x_proj/dt_proj between directions.
* Spatial-Mamba: ``forward_states`` returns every hidden state and the C projections; the family fuses
  the states and applies ``C`` and the skip ``Ds`` itself.

Parameter layout (identical to the official VMamba SS2D, so checkpoints convert by renaming):
``x_proj_weight (K', R + 2N, C')``, ``dt_projs_weight (K', C', R)``, ``dt_projs_bias (K', C')`` with
K' = K (or 1 when shared), ``A_logs (K * C', N)``, ``Ds (K * C')``.
"""
import math
from typing import Optional, Set, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from kernels import a_from_log, project_routes, projected_selective_scan, selective_scan

__all__ = ['SelectiveSSM', 'ssm_no_weight_decay']

_HALF = (torch.float16, torch.bfloat16)


class SelectiveSSM(nn.Module):
    """Selective SSM (Mamba S6) parameters of K scan routes, and the scan over route sequences.

    For route k and channel d: ``delta = softplus(W_dt (W_x u)[:R] + b_dt)``, ``B, C = (W_x u)[R:]``,
    ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t`` and ``y_t = <C_t, h_t> + D u_t``, with B and C shared
    by the channels of a route (one kernel call, grouped B/C).

    Initialisation is Mamba's (``mamba_ssm`` ``Mamba.__init__``, copied by every VMamba-family repository):
    x_proj like ``nn.Linear`` (uniform ±C'^-0.5), dt weight uniform ±``dt_scale``·R^-0.5, dt bias the
    inverse softplus of a log-uniform sample in [dt_min, dt_max] floored at ``dt_init_floor``,
    ``A_log = log(1..N)`` (S4D-real), ``D = 1``.

    Weight decay: ``A_logs``, ``Ds`` and ``dt_projs_bias`` should not be decayed (Mamba marks them
    ``_no_weight_decay``). The official Swin-derived trainers of VMamba, MSVMamba and GroupMamba ignore that
    mark, so they decay ``A_logs`` and ``dt_projs_bias`` (2-D tensors whose names do not end in ``.bias``) by
    accident, and Vim decays ``A_log``. This zoo follows the intended behaviour: models list all three in
    ``no_weight_decay()`` (see ``ssm_no_weight_decay``), so timm's optimizer factory exempts them.

    Numerics: ``A``, ``D`` and the dt bias always enter the kernel in float32, the kernel computes in float32 whatever
    the dtype of the route inputs, and the output is at least float32 (VMamba v2's fix for fp16 overflow; Vim, whose
    official scan returns the input dtype, turns that off with ``float32_output=False``). The
    official vanilla VMamba, EfficientVMamba, MSVMamba and GroupMamba cast the route inputs to float32 before their
    scan; here half-precision inputs go to the kernel as they are, which gives the same outputs and gradients
    (the casts are exact and the kernel converts on load; ``tests/test_ssm.py`` demands bitwise equality on the
    PyTorch backend and on CUDA) without the float32 copies that the backward would keep.

    Args:
        d_inner: Channels per route (C' of the scan: ``scan.channels_per_route(width)``).
        d_state: State size N per channel.
        dt_rank: Rank R of the dt projection (Mamba's "auto" is ``ceil(d_model / 16)``, from the block width).
        num_routes: K, the number of routes (parameter groups); usually ``scan.num_routes``.
        shared_proj: One x_proj/dt_proj (and dt bias) shared by all routes instead of one per route;
            ``A_logs`` and ``Ds`` stay per route.
        dt_min: Lower end of the initial dt range.
        dt_max: Upper end of the initial dt range.
        dt_init_floor: Floor of the initial dt.
        dt_scale: Scale of the dt weight initialisation range.
        float32_output: Return float32 for half-precision route inputs (VMamba v2's fix for fp16 overflow);
            False returns the inputs' dtype, like mamba_ssm's scan (and so the official Vim).
    """
    no_weight_decay_names = ('A_logs', 'Ds', 'dt_projs_bias')

    def __init__(
            self,
            d_inner: int,
            d_state: int,
            dt_rank: int,
            num_routes: int = 1,
            shared_proj: bool = False,
            dt_min: float = 1e-3,
            dt_max: float = 0.1,
            dt_init_floor: float = 1e-4,
            dt_scale: float = 1.0,
            float32_output: bool = True,
    ):
        super().__init__()
        for name, value in (('d_inner', d_inner), ('d_state', d_state), ('dt_rank', dt_rank),
                            ('num_routes', num_routes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'SelectiveSSM: {name} must be an int >= 1, got {value!r}')
        if not 0 < dt_min <= dt_max:
            raise ValueError(f'SelectiveSSM: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}')
        self.d_inner = d_inner
        self.d_state = d_state
        self.dt_rank = dt_rank
        self.num_routes = num_routes
        self.shared_proj = shared_proj
        self.dt_min = dt_min
        self.dt_max = dt_max
        self.dt_init_floor = dt_init_floor
        self.dt_scale = dt_scale
        self.float32_output = float32_output

        num_proj = 1 if shared_proj else num_routes
        self.x_proj_weight = nn.Parameter(torch.empty(num_proj, dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(num_proj, d_inner, dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(num_proj, d_inner))
        self.A_logs = nn.Parameter(torch.empty(num_routes * d_inner, d_state))
        self.Ds = nn.Parameter(torch.empty(num_routes * d_inner))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Re)apply the Mamba initialisation to every route."""
        # The official code builds K nn.Linear(C', R + 2N) and stacks their default-initialised weights.
        bound = self.d_inner ** -0.5
        nn.init.uniform_(self.x_proj_weight, -bound, bound)
        dt_std = self.dt_scale * self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_projs_weight, -dt_std, dt_std)
        log_min, log_max = math.log(self.dt_min), math.log(self.dt_max)
        u = torch.rand(self.dt_projs_bias.shape, device=self.dt_projs_bias.device)
        dt = torch.exp(u * (log_max - log_min) + log_min).clamp(min=self.dt_init_floor)
        # softplus(dt + log(1 - exp(-dt))) == dt: the bias starts the step sizes in [dt_min, dt_max].
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        states = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_logs.device)
        self.A_logs.copy_(torch.log(states).expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def _parameters_for(self, xs: Tensor, route_offset: int) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The parameters of the routes in ``xs``: (x_proj weight, dt_proj weight, A_log, D, delta_bias)."""
        if xs.dim() != 4:
            raise ValueError(f'SelectiveSSM expects route sequences (B, K, C\', L), got shape {tuple(xs.shape)}')
        batch, routes, channels, length = xs.shape
        if channels != self.d_inner:
            raise ValueError(f'SelectiveSSM was built for C\'={self.d_inner} channels per route, got {channels} '
                             f'(input shape {tuple(xs.shape)})')
        if route_offset < 0 or route_offset + routes > self.num_routes:
            raise ValueError(f'SelectiveSSM has {self.num_routes} route groups; routes [{route_offset}, '
                             f'{route_offset + routes}) requested by route_offset={route_offset} and K={routes}')
        x_proj_weight, dt_projs_weight, dt_projs_bias = self.x_proj_weight, self.dt_projs_weight, self.dt_projs_bias
        A_logs, Ds = self.A_logs, self.Ds
        # Slice only for a subset of the route groups (MSVMamba's branches): a slice's backward zero-fills and copies
        # a full-size gradient, for nothing when every group is used.
        if route_offset != 0 or routes != self.num_routes:
            chans = slice(route_offset * channels, (route_offset + routes) * channels)
            A_logs, Ds = A_logs[chans], Ds[chans]
            if not self.shared_proj:
                group = slice(route_offset, route_offset + routes)
                x_proj_weight, dt_projs_weight, dt_projs_bias = (
                    x_proj_weight[group], dt_projs_weight[group], dt_projs_bias[group])
        if self.shared_proj:
            dt_projs_bias = dt_projs_bias.expand(routes, channels)
        return x_proj_weight, dt_projs_weight, A_logs, Ds.float(), dt_projs_bias.reshape(-1).float()

    def forward(self, xs: Tensor, z: Optional[Tensor] = None, route_offset: int = 0) -> Tensor:
        """Scan the route sequences.

        Args:
            xs: Route sequences (B, K, C', L), e.g. ``scan.flatten(x)``; K may be fewer than ``num_routes``.
            z: Optional gate (B, K, C', L): the output is multiplied by ``silu(z)`` inside the kernel (Vim).
            route_offset: Parameter group of the first route in ``xs`` (MSVMamba runs its branches separately).

        Returns:
            Outputs (B, K, C', L), float32 (float64 for float64 inputs).
        """
        x_proj_weight, dt_proj_weight, A_log, D, delta_bias = self._parameters_for(xs, route_offset)
        batch, routes, channels, length = xs.shape
        if z is not None:
            if z.shape != xs.shape:
                raise ValueError(f'SelectiveSSM: gate z must have the shape of xs {tuple(xs.shape)}, '
                                 f'got {tuple(z.shape)}')
            z = z.reshape(batch, routes * channels, length)
        out_dtype = torch.float32 if self.float32_output and xs.dtype in _HALF else None
        # The x_proj / dt_proj GEMMs and the scan in one autograd node (kernels.projected_selective_scan).
        y = projected_selective_scan(
            xs, x_proj_weight, dt_proj_weight, A_log, D, z=z, delta_bias=delta_bias, out_dtype=out_dtype)
        return y.view(xs.shape)

    def forward_states(self, xs: Tensor, route_offset: int = 0) -> Tuple[Tensor, Tensor]:
        """All hidden states and the C projections, without the ``<C, h>`` readout or the ``D`` skip.

        Spatial-Mamba fuses the states spatially and then computes ``(h * C).sum(N) + D * u`` itself
        (``Ds`` holds D, route-major).

        Args:
            xs: Route sequences (B, K, C', L).
            route_offset: Parameter group of the first route in ``xs``.

        Returns:
            Hidden states (B, K, C', N, L), float32 (float64 for float64 inputs), and C (B, K, N, L).
        """
        x_proj_weight, dt_proj_weight, A_log, _, delta_bias = self._parameters_for(xs, route_offset)
        batch, routes, channels, length = xs.shape
        x_dbl, delta = project_routes(xs, x_proj_weight, dt_proj_weight, self.dt_rank)
        _, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        out_dtype = torch.float32 if xs.dtype in _HALF else None
        h = selective_scan(
            xs.reshape(batch, routes * channels, length), delta.reshape(batch, routes * channels, length),
            a_from_log(A_log), Bs, delta_bias=delta_bias, delta_softplus=True, out_dtype=out_dtype,
            return_hidden_states=True)
        return h.view(batch, routes, channels, self.d_state, length), Cs

    def extra_repr(self) -> str:
        return (f'd_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, '
                f'num_routes={self.num_routes}, shared_proj={self.shared_proj}, float32_output={self.float32_output}')


def ssm_no_weight_decay(model: nn.Module) -> Set[str]:
    """Full names of the ``A_logs``, ``Ds`` and ``dt_projs_bias`` of every ``SelectiveSSM`` in ``model``.

    For a model's ``no_weight_decay()``; see ``SelectiveSSM`` for why they are exempt.
    """
    return {
        f'{name}.{param}' if name else param
        for name, module in model.named_modules() if isinstance(module, SelectiveSSM)
        for param in SelectiveSSM.no_weight_decay_names
    }
