"""Route builders: token orders of an H x W grid as 1-D int64 tensors of indices ``h * W + w``.

Called once per feature-map size when a scan builds its index plan, never per forward pass, so
plain Python loops are acceptable here.
"""
import math
from typing import List, Tuple

import torch
from torch import Tensor

__all__ = [
    'row_major', 'column_major', 'row_snake', 'column_snake', 'anti_diagonals', 'main_diagonals', 'spiral', 'hilbert',
    'windows', 'sublattice',
]


def _grid(height: int, width: int) -> Tensor:
    return torch.arange(height * width).view(height, width)


def row_major(height: int, width: int) -> Tensor:
    """Raster order: rows top to bottom, each left to right."""
    return torch.arange(height * width)


def column_major(height: int, width: int) -> Tensor:
    """Columns left to right, each top to bottom (the transposed map flattened): step w*H + h visits h*W + w."""
    return _grid(height, width).t().reshape(-1)


def row_snake(height: int, width: int) -> Tensor:
    """Boustrophedon over rows: even rows left to right, odd rows right to left."""
    grid = _grid(height, width).clone()
    grid[1::2] = grid[1::2].flip(1)
    return grid.reshape(-1)


def column_snake(height: int, width: int) -> Tensor:
    """Boustrophedon over columns: even columns top to bottom, odd columns bottom to top."""
    grid = _grid(height, width).t().clone()
    grid[1::2] = grid[1::2].flip(1)
    return grid.reshape(-1)


def anti_diagonals(height: int, width: int) -> Tensor:
    """Anti-diagonals h + w = 0, 1, ... in turn, each from its top cell (smallest h) down-left."""
    h = torch.arange(height).view(-1, 1)
    w = torch.arange(width).view(1, -1)
    return torch.argsort(((h + w) * height + h).reshape(-1))  # key unique per token: sorts by (h + w, h)


def main_diagonals(height: int, width: int) -> Tensor:
    """``anti_diagonals`` mirrored (w -> W-1-w): lines h - w = const from the top-right corner, each down-right."""
    h = torch.arange(height).view(-1, 1)
    w = torch.arange(width).view(1, -1)
    return torch.argsort(((h + width - 1 - w) * height + h).reshape(-1))


def spiral(height: int, width: int) -> Tensor:
    """Clockwise spiral from the top-left corner inwards: right, down, left, up, then the next ring."""
    order: List[int] = []
    top, bottom, left, right = 0, height - 1, 0, width - 1
    while top <= bottom and left <= right:
        order.extend(top * width + w for w in range(left, right + 1))
        order.extend(h * width + right for h in range(top + 1, bottom + 1))
        if top < bottom:
            order.extend(bottom * width + w for w in range(right - 1, left - 1, -1))
        if left < right:
            order.extend(h * width + left for h in range(bottom - 1, top, -1))
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return torch.tensor(order, dtype=torch.long)


def _sign(v: int) -> int:
    return (v > 0) - (v < 0)


def _half(v: int) -> int:
    """v / 2 rounded toward zero (floor division would make negative halves one longer)."""
    return -((-v) // 2) if v < 0 else v // 2


def hilbert(height: int, width: int) -> Tensor:
    """Generalized Hilbert ("gilbert") curve for any rectangle, from the top-left corner.

    Recursive construction (J. Cervený's generalization of the Hilbert curve to arbitrary
    rectangles): a block is described by a corner and two axis vectors, the major axis ``a``
    (the longer side) and the minor axis ``b``. A block one cell thick is walked straight. A block
    much longer than wide (2|a| > 3|b|) is cut across ``a`` into two halves walked in turn.
    Otherwise it is cut into the Hilbert "U": the lower half of ``b`` walked with swapped axes,
    the remaining full-length strip along ``a``, and the lower half walked back with negated axes.
    Half lengths are nudged to be even where possible, which keeps consecutive cells 4-neighbours,
    except when the longer side is odd and the shorter side even and >= 4: the curve then runs from
    one corner of the longer side to the other, which by checkerboard colouring no 4-connected path
    can do, and it takes exactly one diagonal step.
    """
    order: List[int] = []
    # Explicit stack of (x, y, ax, ay, bx, by) blocks, last pushed = next walked, to avoid recursion.
    stack: List[Tuple[int, int, int, int, int, int]] = (
        [(0, 0, width, 0, 0, height)] if width >= height else [(0, 0, 0, height, width, 0)])
    while stack:
        x, y, ax, ay, bx, by = stack.pop()
        length, thickness = abs(ax + ay), abs(bx + by)
        dax, day, dbx, dby = _sign(ax), _sign(ay), _sign(bx), _sign(by)
        if thickness == 1 or length == 1:
            steps, dx, dy = (length, dax, day) if thickness == 1 else (thickness, dbx, dby)
            for i in range(steps):
                order.append((y + i * dy) * width + x + i * dx)
            continue
        ax2, ay2, bx2, by2 = _half(ax), _half(ay), _half(bx), _half(by)
        if 2 * length > 3 * thickness:
            if abs(ax2 + ay2) % 2 and length > 2:
                ax2, ay2 = ax2 + dax, ay2 + day
            blocks = [(x, y, ax2, ay2, bx, by), (x + ax2, y + ay2, ax - ax2, ay - ay2, bx, by)]
        else:
            if abs(bx2 + by2) % 2 and thickness > 2:
                bx2, by2 = bx2 + dbx, by2 + dby
            blocks = [
                (x, y, bx2, by2, ax2, ay2),
                (x + bx2, y + by2, ax, ay, bx - bx2, by - by2),
                (x + (ax - dax) + (bx2 - dbx), y + (ay - day) + (by2 - dby), -bx2, -by2, -(ax - ax2), -(ay - ay2)),
            ]
        stack.extend(reversed(blocks))
    return torch.tensor(order, dtype=torch.long)


def windows(
        height: int,
        width: int,
        window: Tuple[int, int],
        shift: Tuple[int, int] = (0, 0),
        pad: bool = False,
) -> Tensor:
    """Window by window (windows in raster order), raster order inside each, over the map rolled by ``-shift``.

    Step i reads what ``torch.roll(x, (-shift[0], -shift[1]), dims=(H, W))`` holds at the i-th position of
    the window order: Swin's cyclic shift, for which the shifted windows of a map are the plain windows of
    the rolled map. Without ``pad`` the windows at the right/bottom edge are smaller; with ``pad`` the
    rolled map is padded at the right/bottom to multiples of the window (after the roll, like timm's
    Swin), every window is full, and the steps on the padding get the sentinel ``height * width``.
    """
    wh, ww = window
    frame_h = math.ceil(height / wh) * wh if pad else height
    frame_w = math.ceil(width / ww) * ww if pad else width
    h = torch.arange(frame_h).view(-1, 1)
    w = torch.arange(frame_w).view(1, -1)
    window_id = (h // wh) * math.ceil(frame_w / ww) + w // ww
    key = window_id * (wh * ww) + (h % wh) * ww + w % ww  # unique per position of the (padded) rolled map
    order = torch.argsort(key.reshape(-1))
    h, w = order // frame_w, order % frame_w
    token = ((h + shift[0]) % height) * width + (w + shift[1]) % width
    return torch.where((h < height) & (w < width), token, height * width)


def sublattice(height: int, width: int, step: int, phase: Tuple[int, int], column_first: bool) -> Tensor:
    """Tokens (phase[0] + step*r, phase[1] + step*c) of the map zero-padded right/bottom to multiples of ``step``.

    Returns ceil(H/step) * ceil(W/step) indices in row-major (or column-major) order over (r, c);
    cells of the padding get the sentinel ``height * width``, wherever they fall in the order.
    """
    rows = phase[0] + step * torch.arange(math.ceil(height / step))
    cols = phase[1] + step * torch.arange(math.ceil(width / step))
    grid = rows.view(-1, 1) * width + cols.view(1, -1)
    grid = grid.masked_fill((rows.view(-1, 1) >= height) | (cols.view(1, -1) >= width), height * width)
    return (grid.t() if column_first else grid).reshape(-1)
