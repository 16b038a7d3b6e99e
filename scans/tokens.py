"""Scans over token sequences that carry one extra token in the middle (Vim's middle class token).

A plain ``Scan`` reads an H x W map. Vision Mamba (Zhu et al. 2024, hustvl/Vim) runs its SSM over
the M = H * W patch tokens in row-major order with a class token inserted at index M // 2, so its
tokens form a sequence of length M + 1 rather than a map. ``MiddleTokenScan`` adapts any registered
scan to such sequences: each route reads the grid tokens in the order of the scan's route, with the
extra token inserted in the middle of the route (after its first M // 2 steps), and a route that is
the exact reverse of an earlier route is the exact reverse of that route's sequence, extra token
included. For ``bidirectional`` this is Vim's order exactly: route 0 is the token sequence itself and
route 1 is ``sequence.flip(-1)``, so the class token sits after ceil(M / 2) steps there.

Only scans whose routes each visit every grid token exactly once qualify (every built-in scan but
``atrous`` and ``window`` with ``pad=True``): the extra token joins every route, and padded or
partial routes would leave it nowhere to go consistently.

    >>> tokens = MiddleTokenScan('cross')
    >>> xs = tokens.flatten(x, (H, W))        # (B, C, H*W + 1) -> (B, K, C', H*W + 1)
    >>> y = tokens.merge(ys, (H, W))          # (B, K, C', H*W + 1) -> (B, C, H*W + 1), sum over routes
"""
import operator
from typing import Dict, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from kernels._dispatch import use_custom_op

from . import base
from .base import DeviceLike, Scan, _PermuteRoutePair, _PermuteRoutes, create_scan, scaled_cast

__all__ = ['MiddleTokenScan']


class _TokenPlan(NamedTuple):
    index: Tensor  # (K, M + 1) token-sequence position visited by each route step
    inverse: Tensor  # (K, M + 1) route step at which each route visits each token
    identity: bool  # K == 1 and the route is the sequence order: flatten/merge are views


class MiddleTokenScan:
    """A registered scan applied to token sequences with a middle token (see the module docstring).

    Plans are built once per (H, W) from the scan's own (cached) index plan and once per device.

    Args:
        scan: Name of a registered scan, or a ``Scan`` instance.

    Attributes:
        scan: The wrapped 2-D scan.
        num_routes: K of the wrapped scan.
        visits_per_token: m of the wrapped scan; ``merge(flatten(x), size) == m * x`` for every token.
        splits_channels: Whether route k sees only channel group k (``grouped``).
    """

    def __init__(self, scan: Union[str, Scan]) -> None:
        self.scan = create_scan(scan) if isinstance(scan, str) else scan
        if not isinstance(self.scan, Scan):
            raise TypeError(f'MiddleTokenScan: scan must be a scan name or a scans.Scan, got {type(scan).__name__}')
        self.num_routes = self.scan.num_routes
        self.visits_per_token = self.scan.visits_per_token
        self.splits_channels = self.scan.splits_channels
        self._cpu_plans: Dict[Tuple[int, int], _TokenPlan] = {}
        self._plans: Dict[Tuple[int, int, torch.device], _TokenPlan] = {}

    @staticmethod
    def middle_index(height: int, width: int) -> int:
        """Index of the extra token in the sequence of an H x W grid: (H * W) // 2, Vim's ``M // 2``."""
        return height * width // 2

    def channels_per_route(self, channels: int) -> int:
        """C', the number of channels each route carries for a C-channel sequence."""
        return self.scan.channels_per_route(channels)

    def index_plan(self, height: int, width: int, device: DeviceLike = None) -> Tensor:
        """The cached (K, H*W + 1) plan of token-sequence positions that each route visits.

        Args:
            height: H of the patch grid.
            width: W of the patch grid.
            device: Device of the returned tensor (default CPU).
        """
        return self._plan(height, width, device).index

    # Runs eagerly even inside torch.compile, whose graph then holds the plan tensors as constants.
    @torch.compiler.assume_constant_result
    def _plan(self, height: int, width: int, device: DeviceLike) -> _TokenPlan:
        dev = torch.device('cpu') if device is None else torch.device(device)
        key = (height, width, dev)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._cpu_plans.get((height, width))
            if plan is None:
                # Plans live on the CPU even when a model is built under a device context (e.g. 'meta').
                with torch.device('cpu'):
                    plan = self._cpu_plans.setdefault((height, width), self._make_plan(height, width))
            if dev.type != 'cpu':
                plan = _TokenPlan(plan.index.to(dev), plan.inverse.to(dev), plan.identity)
                plan = self._plans.setdefault((height, width, plan.index.device), plan)
            self._plans[key] = plan
        return plan

    def _make_plan(self, height: int, width: int) -> _TokenPlan:
        grid = self.scan.index_plan(height, width)  # validates the size
        num_grid = height * width
        if grid.shape[1] != num_grid or not all(
                bool((torch.bincount(route, minlength=num_grid + 1)[:num_grid] == 1).all()) for route in grid):
            raise ValueError(f'scan {self.scan.name!r} cannot carry a middle token: its routes do not each visit '
                             f'every token of a {height}x{width} grid exactly once (padded or partial routes); '
                             f'use a scan such as bidirectional, cross, snake4 or hilbert')
        middle = self.middle_index(height, width)
        # Sequence positions of the grid tokens: the middle token shifts the second half by one.
        positions = torch.where(grid >= middle, grid + 1, grid)
        routes = []
        for k in range(self.num_routes):
            twin = next((j for j in range(k) if torch.equal(grid[k], grid[j].flip(0))), None)
            if twin is not None:
                routes.append(routes[twin].flip(0))
            else:
                head, tail = positions[k, :middle], positions[k, middle:]
                routes.append(torch.cat([head, head.new_tensor([middle]), tail]))
        index = torch.stack(routes)
        steps = torch.arange(num_grid + 1)
        inverse = torch.empty_like(index).scatter_(1, index, steps.expand_as(index).contiguous())
        identity = self.num_routes == 1 and bool((index[0] == steps).all())
        return _TokenPlan(index=index, inverse=inverse, identity=identity)

    def _checked(self, t: Tensor, dims: int, size: Tuple[int, int], what: str) -> Tuple[int, int]:
        if not isinstance(size, (tuple, list)) or len(size) != 2:
            raise ValueError(f'MiddleTokenScan({self.scan.name!r}): size must be the patch grid (H, W), got {size!r}')
        # operator.index specialises symbolic sizes under torch.compile: plans are per (H, W).
        height, width = operator.index(size[0]), operator.index(size[1])
        self.scan.check_size(height, width)
        if not isinstance(t, Tensor) or t.dim() != dims or t.shape[-1] != height * width + 1:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f'MiddleTokenScan({self.scan.name!r}): expected {what} with H*W + 1 = '
                             f'{height * width + 1} tokens for a {height}x{width} grid, got {shape}')
        return height, width

    def flatten(self, x: Tensor, size: Tuple[int, int]) -> Tensor:
        """Read a token sequence along every route.

        Args:
            x: Tokens (B, C, H*W + 1): the grid tokens in row-major order, the extra token at index (H*W) // 2.
            size: (H, W) of the patch grid.

        Returns:
            Route sequences (B, K, C', H*W + 1).
        """
        height, width = self._checked(x, 3, size, 'a (B, C, L) token sequence')
        batch, channels, length = x.shape
        cpr = self.channels_per_route(channels)
        plan = self._plan(height, width, x.device)
        if plan.identity:
            return x.reshape(batch, 1, channels, length)
        src = x.reshape(batch, self.num_routes if self.splits_channels else 1, cpr, length)
        return _PermuteRoutes.apply(src, plan.index, plan.inverse, True, self.splits_channels, -1)

    def flatten_pair(self, x: Tensor, size: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """``flatten`` of the two channel halves of x, e.g. Mamba's x and z from one input projection.

        The same values and gradients as ``tuple(self.flatten(h, size) for h in x.chunk(2, 1))``; eager CUDA calls
        gather both halves in one pass and write x's gradient in one pass, in x's layout (no concatenation).

        Args:
            x: Tokens (B, 2C, H*W + 1), as for ``flatten``.
            size: (H, W) of the patch grid.

        Returns:
            Route sequences (B, K, C', H*W + 1) of the first and of the second half.
        """
        height, width = self._checked(x, 3, size, 'a (B, C, L) token sequence')
        batch, channels, length = x.shape
        if channels % 2:
            raise ValueError(f'MiddleTokenScan({self.scan.name!r}).flatten_pair: needs an even channel count to '
                             f'split in halves, got {channels} (shape {tuple(x.shape)})')
        plan = self._plan(height, width, x.device)
        if plan.identity or self.splits_channels or not base._use_triton(x) or use_custom_op():
            first, second = x.chunk(2, dim=1)
            return self.flatten(first, size), self.flatten(second, size)
        return _PermuteRoutePair.apply(x.reshape(batch, 1, channels, length), plan.index, plan.inverse)

    def merge(self, y: Tensor, size: Tuple[int, int], channels_contiguous: bool = False, scale: float = 1.0,
              out_dtype: Optional[torch.dtype] = None) -> Tensor:
        """Put route outputs back in sequence order and sum them over routes (the adjoint of ``flatten``).

        Args:
            y: Route outputs (B, K, C', H*W + 1).
            size: (H, W) of the patch grid.
            channels_contiguous: Return the sequence as the transposed view of (B, H*W + 1, C) memory, so that
                ``.transpose(1, 2)`` feeds a linear layer without a copy (CUDA; values are the same either way).
            scale: Factor on the sum (e.g. ``1 / visits_per_token`` for the mean over routes), applied in the same
                pass.
            out_dtype: dtype of the result (default y's), cast in the same pass.

        Returns:
            Token sequence (B, C, H*W + 1); channel groups are concatenated for channel-split scans.
        """
        height, width = self._checked(y, 4, size, 'route outputs (B, K, C\', L)')
        batch, num_routes, cpr, length = y.shape
        if num_routes != self.num_routes:
            raise ValueError(f'MiddleTokenScan({self.scan.name!r}).merge: expected K={self.num_routes} routes, '
                             f'got {tuple(y.shape)}')
        plan = self._plan(height, width, y.device)
        if plan.identity:
            return scaled_cast(y.reshape(batch, cpr, length), scale, out_dtype)
        out = _PermuteRoutes.apply(y, plan.index, plan.inverse, False, self.splits_channels, -1,
                                   channels_contiguous and not self.splits_channels, scale, out_dtype)
        return out.reshape(batch, -1, length)

    def __repr__(self) -> str:
        return f'MiddleTokenScan({self.scan!r})'
