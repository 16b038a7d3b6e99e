"""The registered scan orders of the zoo (importing ``scans`` registers them).

| name            | K  | visits_per_token | routes                                                        |
|-----------------|----|------------------|---------------------------------------------------------------|
| `raster`        | 1  | 1                | row-major                                                     |
| `bidirectional` | 2  | 2                | row-major, reversed (Vim)                                     |
| `cross`         | 4  | 4                | row, column, row reversed, column reversed (VMamba SS2D)       |
| `snake`         | 2  | 2                | row boustrophedon, column boustrophedon                       |
| `snake4`        | 4  | 4                | `snake` + both reversed                                       |
| `diagonal`      | 2  | 2                | anti-diagonals, main diagonals                                |
| `diagonal4`     | 4  | 4                | `diagonal` + both reversed                                    |
| `hilbert`       | 2  | 2                | generalized Hilbert curve, reversed                           |
| `spiral`        | 2  | 2                | clockwise spiral inwards, reversed                            |
| `window`        | 1  | 1                | window by window (`window_size`, default 7; `shift`, `pad`: Swin) |
| `window2`       | 2  | 2                | `window` + reversed                                           |
| `atrous`        | s*s| 1                | step x step sub-lattices (EfficientVMamba ES2D, `step`=2)     |
| `grouped`       | K  | 1                | route k of a base scan (default `cross`) on channel group k (GroupMamba) |
| `concat`        | 1  | len(`routes`)    | chosen routes of a base scan (default `cross`) joined into one (MSVMamba) |

Variants with reversals are separate names (not options) so that a backbone picks any of them
with a plain ``scan='snake4'`` string.
"""
import math
from typing import Callable, ClassVar, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from . import paths
from .base import Scan, create_scan, register_scan

__all__ = [
    'RasterScan', 'BidirectionalScan', 'CrossScan', 'SnakeScan', 'Snake4Scan', 'DiagonalScan', 'Diagonal4Scan',
    'HilbertScan', 'SpiralScan', 'WindowScan', 'Window2Scan', 'AtrousScan', 'GroupedScan', 'ConcatScan',
]

PathFn = Callable[[int, int], Tensor]


def _positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'scan {owner!r}: {name} must be an int >= 1, got {value!r}')
    return value


def _int_pair(owner: str, name: str, value: object, minimum: int) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in pair)):
        raise ValueError(f'scan {owner!r}: {name} must be an int >= {minimum} or a pair (height, width) of them, '
                         f'got {value!r}')
    return tuple(pair)


class _PathScan(Scan):
    """Routes = base paths over all tokens, then (if ``reverse``) each base path reversed, in that order."""
    path_fns: ClassVar[Tuple[PathFn, ...]] = ()
    reverse: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.path_fns:
            cls.num_routes = cls.visits_per_token = len(cls.path_fns) * (2 if cls.reverse else 1)

    def _base_paths(self, height: int, width: int) -> List[Tensor]:
        return [path(height, width) for path in self.path_fns]

    def _build_routes(self, height: int, width: int) -> Tensor:
        routes = self._base_paths(height, width)
        if self.reverse:
            routes += [route.flip(0) for route in routes]
        return torch.stack(routes)


@register_scan('raster')
class RasterScan(_PathScan):
    """One row-major route (h * W + w), the plain ``x.flatten(2)`` of Mamba-on-images.

    Used alone by Spatial-Mamba (EdwardChasel/Spatial-Mamba) and MSVMamba's full-resolution branch
    (YuHengsss/MSVMamba). ``flatten``/``merge`` are zero-copy views.
    """
    path_fns = (paths.row_major,)


@register_scan('bidirectional')
class BidirectionalScan(_PathScan):
    """Vim (Zhu et al. 2024, hustvl/Vim): the row-major patch sequence forward and backward (flipped)."""
    path_fns = (paths.row_major,)
    reverse = True


@register_scan('cross')
class CrossScan(_PathScan):
    """VMamba SS2D cross scan (Liu et al. 2024, MzeroMiko/VMamba ``cross_scan_fwd``), the VMamba default.

    Routes in the official order (weight-compatible): 0 row-major ``x.flatten(2)``, 1 column-major
    ``x.transpose(2, 3).flatten(2)``, 2 route 0 reversed, 3 route 1 reversed. Merge is the plain sum
    of the four un-permuted outputs, like ``cross_merge_fwd``.
    """
    path_fns = (paths.row_major, paths.column_major)
    reverse = True


@register_scan('snake')
class SnakeScan(_PathScan):
    """Boustrophedon (zigzag) scans: 0 over rows (even rows left to right, odd ones back), 1 the same over columns.

    Consecutive tokens are always grid neighbours. This is the "C" head pattern of MHS-VM (PixDeep/MHS-VM).
    """
    path_fns = (paths.row_snake, paths.column_snake)


@register_scan('snake4')
class Snake4Scan(_PathScan):
    """``snake`` followed by both routes reversed (K=4), the way MHS-VM feeds each pattern to its SSM."""
    path_fns = (paths.row_snake, paths.column_snake)
    reverse = True


@register_scan('diagonal')
class DiagonalScan(_PathScan):
    """Diagonal scans, one per diagonal family.

    Route 0 visits the anti-diagonals h + w = 0, 1, ... (tokens sorted by h + w, then h), route 1 is
    its mirror image (w -> W-1-w): the lines h - w = const from the top-right corner. Unlike MHS-VM's
    "X" head, lines are not traversed in alternating (zigzag) directions.
    """
    path_fns = (paths.anti_diagonals, paths.main_diagonals)


@register_scan('diagonal4')
class Diagonal4Scan(_PathScan):
    """``diagonal`` followed by both routes reversed (K=4)."""
    path_fns = (paths.anti_diagonals, paths.main_diagonals)
    reverse = True


@register_scan('hilbert')
class HilbertScan(_PathScan):
    """Generalized Hilbert curve ("gilbert", J. Cervený) for any H x W, and its reverse.

    Starts at the top-left corner along the longer side. Consecutive tokens are 4-neighbours, except
    for exactly one diagonal step when the longer side is odd and the shorter one even and >= 4.
    """
    path_fns = (paths.hilbert,)
    reverse = True


@register_scan('spiral')
class SpiralScan(_PathScan):
    """Clockwise spiral from the top-left corner inwards (right, down, left, up, next ring), and its reverse.

    MHS-VM's "S" head pairs the spiral with its vertical mirror instead of its reverse.
    """
    path_fns = (paths.spiral,)
    reverse = True


@register_scan('window')
class WindowScan(_PathScan):
    """Local window scan: windows in raster order, raster order inside each window (cf. LocalMamba's local scans).

    By default, windows at the right/bottom edge are simply smaller when the size is not a multiple of
    the window, so any H, W works and no token is padded.

    Two options make it the token layout of (shifted) window attention (Swin). ``shift`` rolls the map
    cyclically first (the route reads ``torch.roll(x, (-shift_h, -shift_w))``), so the windows of the
    route are Swin's shifted windows, and ``merge`` rolls back. ``pad`` pads the rolled map at the
    right/bottom to multiples of the window (roll, then pad, like timm's Swin), so every window is full
    and a (B, 1, C, L) route reshapes to one group of ``window_h * window_w`` tokens per window. The
    padding (sentinel H * W) sits inside the route, in the edge windows, where ``flatten`` reads zeros
    and ``merge`` drops it; a causal recurrence would see those zeros mid-route, so ``pad`` is meant for
    attention.

    Along an axis no longer than the window there is a single window, so (Swin's rule, in the official
    code and timm) that axis is never shifted (there is no neighbouring window to connect), and with
    ``pad`` its window shrinks to the map instead of padding the map up to the window. ``fit`` returns the
    window (wh, ww) and shift in effect for a size; with ``pad``, L = ceil(H / wh) * wh * ceil(W / ww) * ww.

    Args:
        window_size: Window height and width (int) or (height, width).
        shift: Cyclic shift, int or (height, width), each >= 0; Swin uses window_size // 2.
        pad: Pad to full windows (see above).
    """
    num_routes = visits_per_token = 1

    def __init__(
            self,
            window_size: Union[int, Tuple[int, int]] = 7,
            shift: Union[int, Tuple[int, int]] = 0,
            pad: bool = False,
    ) -> None:
        super().__init__()
        self.window_size = _int_pair(self.name, 'window_size', window_size, minimum=1)
        self.shift = _int_pair(self.name, 'shift', shift, minimum=0)
        if not isinstance(pad, bool):
            raise ValueError(f'scan {self.name!r}: pad must be a bool, got {pad!r}')
        self.pad = pad

    def fit(self, height: int, width: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """The (window, shift) in effect on an (height, width) map, each as (height, width).

        Per axis: the window is ``min(window_size, length)`` and the shift is 0 unless the map is longer than
        the window.
        """
        self.check_size(height, width)
        sizes = (height, width)
        window = tuple(min(win, length) for win, length in zip(self.window_size, sizes))
        shift = tuple(s if length > win else 0 for s, length, win in zip(self.shift, sizes, self.window_size))
        return window, shift

    def route_length(self, height: int, width: int) -> int:
        if not self.pad:
            self.check_size(height, width)
            return height * width
        (wh, ww), _ = self.fit(height, width)
        return math.ceil(height / wh) * wh * math.ceil(width / ww) * ww

    def _base_paths(self, height: int, width: int) -> List[Tensor]:
        window, shift = self.fit(height, width)
        return [paths.windows(height, width, window, shift, self.pad)]

    def extra_repr(self) -> str:
        return f'window_size={self.window_size}, shift={self.shift}, pad={self.pad}'


@register_scan('window2')
class Window2Scan(WindowScan):
    """``window`` and its reverse (K=2)."""
    num_routes = visits_per_token = 2
    reverse = True


@register_scan('atrous')
class AtrousScan(Scan):
    """EfficientVMamba ES2D atrous scan (Pei et al. 2024, TerryPei/EfficientVMamba ``EfficientScan``).

    The map is split into its step x step polyphase sub-lattices ``x[..., i::step, j::step]``; each
    is scanned once by its own route and merged back by scattering (visits_per_token 1). Route k
    covers phase (i, j) = (k % step, k // step), row-major for even k and column-major for odd k, so
    for step 2 (the only step the official code supports) the order is exactly the official one:
    0 = (0, 0) row-major, 1 = (1, 0) column-major, 2 = (0, 1) row-major, 3 = (1, 1) column-major.

    Sizes that are not multiples of ``step`` follow the official code exactly: the map is zero-padded
    right/bottom to multiples of ``step``, so L = ceil(H/step) * ceil(W/step) for every route and a
    padded cell sits where the padded map puts it, which for column-major routes (bottom padding)
    and row-major routes (right padding) is inside the route, not at its end. That matters for
    weight compatibility: zero inputs still decay the SSM state (delta = softplus(dt_bias) > 0), so
    moving the pads to the end would change the outputs of real tokens. In the index plan these
    cells hold the sentinel H * W: ``flatten`` reads 0 there and ``merge`` drops them, like the
    official crop.

    Args:
        step: Sub-sampling step s; K = s * s routes.
    """
    visits_per_token = 1

    def __init__(self, step: int = 2) -> None:
        super().__init__()
        self.step = _positive_int(self.name, 'step', step)
        self.num_routes = self.step * self.step

    def route_length(self, height: int, width: int) -> int:
        self.check_size(height, width)
        return math.ceil(height / self.step) * math.ceil(width / self.step)

    def _build_routes(self, height: int, width: int) -> Tensor:
        s = self.step
        return torch.stack([
            paths.sublattice(height, width, s, (k % s, k // s), column_first=bool(k % 2)) for k in range(s * s)])

    def extra_repr(self) -> str:
        return f'step={self.step}'


@register_scan('grouped')
class GroupedScan(Scan):
    """GroupMamba channel-grouped scan (Shaker et al. 2024, Amshaker/GroupMamba ``GroupMambaLayer``).

    Channels are split into K contiguous groups (``x.chunk(K, dim=1)``); route k of the base scan
    reads channel group k only, so ``flatten`` returns (B, K, C/K, L) and ``merge`` un-permutes each
    group and concatenates them back (each channel of each token once: visits_per_token 1). With the
    default base ``cross``, group g scans row, column, row reversed, column reversed, GroupMamba's
    order. The base must visit every token once per route (any K-route scan without padding).

    Args:
        base: Name of the base scan, or a scan instance (e.g. ``create_scan('window', window_size=4)``).
    """
    splits_channels = True
    visits_per_token = 1

    def __init__(self, base: Union[str, Scan] = 'cross') -> None:
        super().__init__()
        self.base = create_scan(base) if isinstance(base, str) else base
        if not isinstance(self.base, Scan):
            raise TypeError(f'scan {self.name!r}: base must be a scan name or a Scan, got {type(base).__name__}')
        if self.base.splits_channels or self.base.visits_per_token != self.base.num_routes:
            raise ValueError(f'scan {self.name!r}: base {self.base.name!r} must have routes that each visit every '
                             f'token once (visits_per_token == num_routes); it has K={self.base.num_routes}, '
                             f'visits_per_token={self.base.visits_per_token}; use e.g. cross, snake4, hilbert')
        self.num_routes = self.base.num_routes

    def check_size(self, height: int, width: int) -> None:
        self.base.check_size(height, width)

    def route_length(self, height: int, width: int) -> int:
        return self.base.route_length(height, width)

    def channels_per_route(self, channels: int) -> int:
        if channels % self.num_routes:
            raise ValueError(f'scan {self.name!r} splits channels into K={self.num_routes} groups (one per route of '
                             f'{self.base.name!r}), but got C={channels}, not divisible by {self.num_routes}; use a '
                             f'channel count that is a multiple of {self.num_routes}')
        return channels // self.num_routes

    def _build_routes(self, height: int, width: int) -> Tensor:
        return self.base.index_plan(height, width)

    def extra_repr(self) -> str:
        return f'base={self.base.name!r}'


@register_scan('concat')
class ConcatScan(Scan):
    """Routes of a base scan joined end to end into ONE route (MSVMamba's low-resolution branch).

    MSVMamba (Shi et al. 2024, YuHengsss/MSVMamba ``SS2D.forward``, ``ms_split=[1, 3]``) scans its stride-2 map
    along ``cross`` routes 2, 1, 3 (row-major reversed, column-major, column-major reversed) concatenated into a
    single sequence of length 3 * H * W, so one recurrence runs through all three and its state carries over from
    the end of one route into the start of the next; ``create_scan('concat', routes=(2, 1, 3))`` is that scan.
    ``merge`` sums the visits of every token (visits_per_token = number of joined routes), like the official
    un-flip / un-transpose and sum of the three segments.

    Args:
        base: Name of the base scan, or a scan instance; its routes must each visit every token once.
        routes: Indices of the base routes to join, in order (default: all of them, in their order).
    """
    num_routes = 1

    def __init__(self, base: Union[str, Scan] = 'cross', routes: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        self.base = create_scan(base) if isinstance(base, str) else base
        if not isinstance(self.base, Scan):
            raise TypeError(f'scan {self.name!r}: base must be a scan name or a Scan, got {type(base).__name__}')
        if self.base.splits_channels or self.base.visits_per_token != self.base.num_routes:
            raise ValueError(f'scan {self.name!r}: base {self.base.name!r} must have routes that each visit every '
                             f'token once (visits_per_token == num_routes); it has K={self.base.num_routes}, '
                             f'visits_per_token={self.base.visits_per_token}; use e.g. cross, snake4, hilbert')
        num_base = self.base.num_routes
        routes = tuple(range(num_base)) if routes is None else tuple(routes)
        if not routes or any(isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < num_base for r in routes):
            raise ValueError(f'scan {self.name!r}: routes must be a non-empty sequence of route indices of '
                             f'{self.base.name!r} in [0, {num_base}), got {routes!r}')
        self.routes = routes
        self.visits_per_token = len(routes)

    def check_size(self, height: int, width: int) -> None:
        self.base.check_size(height, width)

    def route_length(self, height: int, width: int) -> int:
        return len(self.routes) * self.base.route_length(height, width)

    def _build_routes(self, height: int, width: int) -> Tensor:
        return self.base.index_plan(height, width)[list(self.routes)].reshape(1, -1)

    def extra_repr(self) -> str:
        return f'base={self.base.name!r}, routes={self.routes}'
