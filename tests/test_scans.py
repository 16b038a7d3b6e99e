"""Tests of ``scans``: every registered scan on many sizes, plus exact orders of the official scans."""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from scans import MiddleTokenScan, Scan, create_scan, list_scans, register_scan
from scans import base as scans_base
from scans import paths

SIZES = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 5), (5, 3), (4, 4), (7, 7), (8, 6), (14, 14), (9, 16)]
ALL_CASES = pytest.mark.parametrize(
    ('name', 'size'), [(n, s) for n in list_scans() for s in SIZES], ids=lambda v: v if isinstance(v, str) else
    f'{v[0]}x{v[1]}')
BUILTIN = {'raster', 'bidirectional', 'cross', 'snake', 'snake4', 'diagonal', 'diagonal4', 'hilbert', 'spiral',
           'window', 'window2', 'atrous', 'grouped', 'concat'}


def _channels(scan: Scan) -> int:
    return 2 * scan.num_routes if scan.splits_channels else 3


def _int_map(scan: Scan, size, batch: int = 2, dtype=torch.float64, device='cpu') -> torch.Tensor:
    """Integer-valued map, so that sums of repeated values are exact in any float dtype."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(-8, 9, (batch, _channels(scan), *size), generator=g).to(dtype=dtype, device=device)


def _scan_for(name: str, size):
    """The scan, or None after checking that a size it declares it cannot take raises ValueError."""
    scan = create_scan(name)
    try:
        scan.check_size(*size)
    except ValueError:
        with pytest.raises(ValueError):
            scan.flatten(_int_map(scan, size))
        return None
    return scan


def _cross_reference(x: torch.Tensor) -> torch.Tensor:
    """VMamba ``cross_scan_fwd`` (torch path), written from the reference description."""
    row = x.flatten(2)
    col = x.transpose(2, 3).flatten(2)
    return torch.stack([row, col, row.flip(-1), col.flip(-1)], dim=1)


def _cross_merge_reference(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """VMamba ``cross_merge_fwd``: un-flip, pairwise add, un-transpose, add."""
    b, _, c, length = ys.shape
    y01 = ys[:, 0:2] + ys[:, 2:4].flip(-1)
    y = y01[:, 0] + y01[:, 1].view(b, c, width, height).transpose(2, 3).reshape(b, c, length)
    return y.view(b, c, height, width)


def _atrous_reference(x: torch.Tensor) -> torch.Tensor:
    """EfficientVMamba ``EfficientScan.forward`` (step 2): zero-pad right/bottom, 4 sub-lattices."""
    height, width = x.shape[-2:]
    x = F.pad(x, (0, width % 2, 0, height % 2))
    xt = x.transpose(2, 3)
    return torch.stack([x[:, :, 0::2, 0::2].flatten(2), xt[:, :, 0::2, 1::2].flatten(2),
                        x[:, :, 0::2, 1::2].flatten(2), xt[:, :, 1::2, 1::2].flatten(2)], dim=1)


def _atrous_merge_reference(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """EfficientVMamba ``EfficientMerge.forward`` (step 2): scatter to sub-lattices, crop."""
    b, _, c, _ = ys.shape
    h2, w2 = math.ceil(height / 2), math.ceil(width / 2)
    y = ys.new_zeros(b, c, 2 * h2, 2 * w2)
    y[:, :, 0::2, 0::2] = ys[:, 0].reshape(b, c, h2, w2)
    y[:, :, 1::2, 0::2] = ys[:, 1].reshape(b, c, w2, h2).transpose(2, 3)
    y[:, :, 0::2, 1::2] = ys[:, 2].reshape(b, c, h2, w2)
    y[:, :, 1::2, 1::2] = ys[:, 3].reshape(b, c, w2, h2).transpose(2, 3)
    return y[:, :, :height, :width]


# ------------------------------------------------------------------------------------------------
# properties of every registered scan on every size


def test_registry_lists_builtin_scans():
    assert list_scans() == sorted(list_scans())
    assert BUILTIN <= set(list_scans())


@ALL_CASES
def test_routes_visit_every_token_as_promised(name, size):
    scan = _scan_for(name, size)
    if scan is None:
        return
    height, width = size
    num_tokens = height * width
    plan = scan.index_plan(height, width)
    assert plan.dtype == torch.long and plan.device.type == 'cpu'
    assert plan.shape == (scan.num_routes, scan.route_length(height, width))
    assert int(plan.min()) >= 0 and int(plan.max()) <= num_tokens  # num_tokens is the padding sentinel
    for route in plan:
        real = route[route < num_tokens]
        # concat joins whole base routes into one: each joined segment visits a token at most once.
        for segment in real.view(scan.visits_per_token, -1) if name == 'concat' else [real]:
            assert segment.unique().numel() == segment.numel(), 'a route visits a token twice'
        if name != 'atrous':  # atrous keeps EfficientVMamba's in-route zero padding (tested below)
            assert bool((route[:real.numel()] < num_tokens).all()), 'padding must sit at the end of a route'
    counts = torch.bincount(plan[plan < num_tokens], minlength=num_tokens)
    # Channel-split scans visit every token once per route, each time with a different channel group.
    expected = scan.num_routes if scan.splits_channels else scan.visits_per_token
    assert counts.tolist() == [expected] * num_tokens
    channels = _channels(scan)
    assert scan.channels_per_route(channels) * (scan.num_routes if scan.splits_channels else 1) == channels


@ALL_CASES
def test_merge_of_flatten_is_visits_times_identity(name, size):
    scan = _scan_for(name, size)
    if scan is None:
        return
    x = _int_map(scan, size)
    xs = scan.flatten(x)
    batch, channels = x.shape[:2]
    assert xs.shape == (batch, scan.num_routes, scan.channels_per_route(channels), scan.route_length(*size))
    assert xs.is_contiguous()
    plan = scan.index_plan(*size)
    pads = (plan == size[0] * size[1]).view(1, scan.num_routes, 1, -1).expand_as(xs)
    assert bool((xs[pads] == 0).all()), 'padding must read zeros'
    y = scan.merge(xs, size)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(y, scan.visits_per_token * x)


@ALL_CASES
def test_channels_last_is_the_same_scan_transposed(name, size):
    scan = _scan_for(name, size)
    if scan is None:
        return
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, _channels(scan), *size, dtype=torch.float64, generator=g)
    xs = scan.flatten(x.permute(0, 2, 3, 1).contiguous(), channels_last=True)
    assert xs.is_contiguous()
    assert torch.equal(xs, scan.flatten(x).transpose(-1, -2))
    y = torch.randn(scan.flatten(x).shape, dtype=torch.float64, generator=g)
    merged = scan.merge(y.transpose(-1, -2).contiguous(), size, channels_last=True)
    assert torch.equal(merged, scan.merge(y, size).permute(0, 2, 3, 1))


@ALL_CASES
def test_scatter_routes_is_merge_per_route(name, size):
    scan = _scan_for(name, size)
    if scan is None:
        return
    x = _int_map(scan, size)
    xs = scan.flatten(x)
    plan = scan.index_plan(*size)
    tokens = torch.arange(size[0] * size[1])
    one_to_one = plan.shape[1] == tokens.numel() and all(torch.equal(route.sort().values, tokens) for route in plan)
    if not one_to_one:
        with pytest.raises(ValueError, match='exactly once'):
            scan.scatter_routes(xs, size)
        return
    maps = scan.scatter_routes(xs, size)
    assert maps.shape == xs.shape[:3] + size
    # Each route read the whole map, so each per-route map is that route's channels of x.
    expected = x.view(x.shape[0], scan.num_routes, -1, *size) if scan.splits_channels else x.unsqueeze(1)
    assert torch.equal(maps, expected.expand_as(maps))
    merged = maps.flatten(1, 2) if scan.splits_channels else maps.sum(1)
    assert torch.equal(merged, scan.merge(xs, size))


@ALL_CASES
def test_gradients_are_the_adjoint_gather_and_scatter(name, size):
    scan = _scan_for(name, size)
    if scan is None:
        return
    height, width = size
    num_tokens = height * width
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, _channels(scan), height, width, dtype=torch.float64, generator=g, requires_grad=True)
    batch, channels = x.shape[:2]
    groups = scan.num_routes if scan.splits_channels else 1
    cpr = scan.channels_per_route(channels)
    plan = scan.index_plan(height, width)
    length = plan.shape[1]

    # d/dx sum(flatten(x) * w): every route step sends its weight back to its token (index_add, not gather).
    w = torch.randn(batch, scan.num_routes, cpr, length, dtype=torch.float64, generator=g)
    (scan.flatten(x) * w).sum().backward()
    expected = torch.zeros(batch, groups, cpr, num_tokens + 1, dtype=torch.float64)
    for k in range(scan.num_routes):
        expected[:, k % groups].index_add_(-1, plan[k], w[:, k])
    expected = expected[..., :num_tokens].reshape(batch, channels, height, width)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)

    # d/dy sum(merge(y) * v): every route step reads its token's v (0 on padding).
    y = torch.randn(batch, scan.num_routes, cpr, length, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(batch, channels, height, width, dtype=torch.float64, generator=g)
    (scan.merge(y, size) * v).sum().backward()
    v_tokens = F.pad(v.reshape(batch, groups, cpr, num_tokens), (0, 1))
    expected = torch.stack([v_tokens[:, k % groups][..., plan[k]] for k in range(scan.num_routes)], dim=1)
    torch.testing.assert_close(y.grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('name', list_scans())
def test_gradcheck(name):
    scan = create_scan(name)
    size = (3, 5)
    x = torch.randn(1, _channels(scan), *size, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(scan.flatten, (x,))
    y = torch.randn(1, scan.num_routes, scan.channels_per_route(_channels(scan)), scan.route_length(*size),
                    dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: scan.merge(t, size), (y,))
    # The backward of one direction is the other direction (a custom autograd function for permutation routes).
    assert torch.autograd.gradgradcheck(scan.flatten, (x,))
    assert torch.autograd.gradgradcheck(lambda t: scan.merge(t, size), (y,))
    flatten_cl = lambda t: scan.flatten(t, channels_last=True)  # noqa: E731
    merge_cl = lambda t: scan.merge(t, size, channels_last=True)  # noqa: E731
    assert torch.autograd.gradgradcheck(flatten_cl, (x.detach().permute(0, 2, 3, 1).requires_grad_(),))
    assert torch.autograd.gradgradcheck(merge_cl, (y.detach().transpose(-1, -2).requires_grad_(),))
    if scan._plan(*size, None).inverse is not None:  # scatter_routes needs one-to-one routes
        assert torch.autograd.gradgradcheck(lambda t: scan.scatter_routes(t, size), (y,))


@pytest.mark.parametrize('name', ['raster', 'cross', 'atrous', 'grouped'])  # one per flatten/merge code path
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.int64])
def test_any_dtype(name, dtype):
    scan = create_scan(name)
    size = (5, 6)
    x = _int_map(scan, size, dtype=dtype)
    xs = scan.flatten(x)
    assert xs.dtype == dtype
    assert torch.equal(scan.merge(xs, size), scan.visits_per_token * x)


def test_non_contiguous_input():
    scan = create_scan('cross')
    x = _int_map(scan, (6, 5)).contiguous(memory_format=torch.channels_last)
    assert torch.equal(scan.flatten(x), _cross_reference(x))
    x = _int_map(scan, (5, 6)).transpose(2, 3)
    assert torch.equal(scan.flatten(x), _cross_reference(x))


# ------------------------------------------------------------------------------------------------
# exact orders


@pytest.mark.parametrize('size', SIZES)
def test_cross_matches_vmamba(size):
    scan = create_scan('cross')
    assert (scan.num_routes, scan.visits_per_token) == (4, 4)
    x = _int_map(scan, size)
    assert torch.equal(scan.flatten(x), _cross_reference(x))
    ys = torch.randn(2, 4, 3, size[0] * size[1], dtype=torch.float64)
    torch.testing.assert_close(scan.merge(ys, size), _cross_merge_reference(ys, *size), rtol=1e-12, atol=1e-12)


def test_bidirectional_matches_vim():
    scan = create_scan('bidirectional')
    x = _int_map(scan, (3, 5))
    assert torch.equal(scan.flatten(x), torch.stack([x.flatten(2), x.flatten(2).flip(-1)], dim=1))


def test_raster_is_a_view():
    scan = create_scan('raster')
    x = _int_map(scan, (4, 6))
    xs = scan.flatten(x)
    assert torch.equal(xs, x.flatten(2).unsqueeze(1)) and xs.data_ptr() == x.data_ptr()


@pytest.mark.parametrize('size', SIZES)
def test_atrous_matches_efficientvmamba(size):
    scan = create_scan('atrous')
    assert (scan.num_routes, scan.visits_per_token) == (4, 1)
    x = _int_map(scan, size)
    assert torch.equal(scan.flatten(x), _atrous_reference(x))
    ys = torch.randn(2, 4, 3, scan.route_length(*size), dtype=torch.float64)
    assert torch.equal(scan.merge(ys, size), _atrous_merge_reference(ys, *size))


def test_atrous_plan_keeps_official_padding_inside_routes():
    # 3x3, step 2: the padded map is 4x4; route 1 = phase (1, 0) column-major = rows 1, 3(pad) of columns 0, 2.
    plan = create_scan('atrous').index_plan(3, 3)
    assert plan.tolist() == [[0, 2, 6, 8], [3, 9, 5, 9], [1, 9, 7, 9], [4, 9, 9, 9]]


def test_atrous_step_3():
    scan = create_scan('atrous', step=3)
    assert (scan.num_routes, scan.route_length(7, 6)) == (9, 6)
    x = _int_map(scan, (7, 6))
    xs = scan.flatten(x)
    padded = F.pad(x, (0, 0, 0, 2))  # H 7 -> 9
    assert torch.equal(xs[:, 0], padded[:, :, 0::3, 0::3].flatten(2))
    assert torch.equal(xs[:, 4], padded[:, :, 1::3, 1::3].flatten(2))  # k=4: phase (1, 1), row-major
    assert torch.equal(xs[:, 5], padded[:, :, 2::3, 1::3].transpose(2, 3).flatten(2))  # k=5: phase (2, 1), col-major
    assert torch.equal(scan.merge(xs, (7, 6)), x)


@pytest.mark.parametrize('size', [(4, 4), (3, 5), (8, 6), (1, 7)])
def test_grouped_matches_groupmamba(size):
    scan = create_scan('grouped')
    assert (scan.num_routes, scan.visits_per_token, scan.channels_per_route(8)) == (4, 1, 2)
    x = _int_map(scan, size)
    groups = x.chunk(4, dim=1)
    expected = torch.stack([_cross_reference(g)[:, k] for k, g in enumerate(groups)], dim=1)
    assert torch.equal(scan.flatten(x), expected)
    ys = torch.randn(2, 4, 2, size[0] * size[1], dtype=torch.float64)
    merged = [_cross_merge_reference(F.pad(ys[:, k:k + 1], (0, 0, 0, 0, k, 3 - k)), *size) for k in range(4)]
    assert torch.equal(scan.merge(ys, size), torch.cat(merged, dim=1))


def test_grouped_other_base():
    scan = create_scan('grouped', base=create_scan('window', window_size=2))
    x = _int_map(scan, (4, 4))
    assert scan.num_routes == 1 and torch.equal(scan.merge(scan.flatten(x), (4, 4)), x)
    assert create_scan('grouped', base='snake4').num_routes == 4


@pytest.mark.parametrize('size', [(4, 4), (3, 5), (8, 6), (1, 7)])
def test_concat_matches_msvmamba(size):
    """MSVMamba's low-resolution sequence: [row reversed, column, column reversed] joined into one route."""
    scan = create_scan('concat', routes=(2, 1, 3))
    num_tokens = size[0] * size[1]
    assert (scan.num_routes, scan.visits_per_token, scan.route_length(*size)) == (1, 3, 3 * num_tokens)
    x = _int_map(scan, size)
    row, col = x.flatten(2), x.transpose(2, 3).flatten(2)
    assert torch.equal(scan.flatten(x)[:, 0], torch.cat([row.flip(-1), col, col.flip(-1)], dim=2))
    # Official merge: un-flip / un-transpose each segment and sum.
    ys = torch.randn(2, 1, x.shape[1], 3 * num_tokens, dtype=torch.float64)
    seg = ys[:, 0].split(num_tokens, dim=2)
    expected = (seg[0].flip(-1).view_as(x) + seg[1].view(*x.shape[:2], size[1], size[0]).transpose(2, 3)
                + seg[2].flip(-1).view(*x.shape[:2], size[1], size[0]).transpose(2, 3))
    torch.testing.assert_close(scan.merge(ys, size), expected, rtol=0, atol=1e-12)


def test_concat_defaults_and_other_base():
    scan = create_scan('concat')
    assert scan.route_length(3, 5) == 4 * 15 and scan.visits_per_token == 4
    x = _int_map(scan, (3, 5))
    assert torch.equal(scan.flatten(x), create_scan('cross').flatten(x).transpose(1, 2).reshape(2, 1, -1, 60))
    hilbert = create_scan('concat', base='hilbert', routes=(1,))
    assert torch.equal(hilbert.flatten(x), create_scan('hilbert').flatten(x)[:, 1:])


def test_window_orders():
    assert create_scan('window', window_size=2).index_plan(4, 4).tolist() == [
        [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]]
    # Edge windows are smaller: 3x5 with 2x2 windows.
    assert create_scan('window', window_size=2).index_plan(3, 5).tolist() == [
        [0, 1, 5, 6, 2, 3, 7, 8, 4, 9, 10, 11, 12, 13, 14]]
    # (height, width) windows: 2x1 windows on a 2x3 map walk the columns.
    assert create_scan('window', window_size=(2, 1)).index_plan(2, 3).tolist() == [[0, 3, 1, 4, 2, 5]]
    assert create_scan('window2', window_size=2).index_plan(2, 4).tolist() == [
        [0, 1, 4, 5, 2, 3, 6, 7], [7, 6, 3, 2, 5, 4, 1, 0]]


def _shifted_windows_reference(x: torch.Tensor, window, shift) -> torch.Tensor:
    """Swin's shifted-window partition as timm writes it: roll by -shift, pad right/bottom, cut windows."""
    (wh, ww), (sh, sw) = window, shift
    height, width = x.shape[-2:]
    x = torch.roll(x, (-sh, -sw), dims=(2, 3))
    x = F.pad(x, (0, -width % ww, 0, -height % wh))
    b, c, hp, wp = x.shape
    return x.view(b, c, hp // wh, wh, wp // ww, ww).permute(0, 1, 2, 4, 3, 5).reshape(b, c, -1)


def _shifted_windows_reverse_reference(ys: torch.Tensor, size, window, shift) -> torch.Tensor:
    """The inverse: windows back to the padded map, crop, roll by +shift."""
    (wh, ww), (sh, sw), (height, width) = window, shift, size
    hp, wp = math.ceil(height / wh) * wh, math.ceil(width / ww) * ww
    b, c, _ = ys.shape
    y = ys.view(b, c, hp // wh, wp // ww, wh, ww).permute(0, 1, 2, 4, 3, 5).reshape(b, c, hp, wp)
    return torch.roll(y[:, :, :height, :width], (sh, sw), dims=(2, 3))


@pytest.mark.parametrize(('size', 'window', 'shift', 'fitted'), [
    ((14, 14), (7, 7), (3, 3), ((7, 7), (3, 3))),
    ((9, 16), (7, 7), (3, 3), ((7, 7), (3, 3))),
    ((3, 5), (2, 2), (1, 1), ((2, 2), (1, 1))),
    ((8, 6), (3, 4), (1, 2), ((3, 4), (1, 2))),
    ((5, 5), (2, 2), (4, 0), ((2, 2), (4, 0))),
    ((1, 7), (1, 3), (0, 0), ((1, 3), (0, 0))),
    # An axis no longer than the window is one window: unshifted, and the window shrinks to the map.
    ((7, 7), (7, 7), (3, 3), ((7, 7), (0, 0))),
    ((7, 10), (7, 7), (3, 3), ((7, 7), (0, 3))),
    ((2, 9), (7, 7), (3, 3), ((2, 7), (0, 3))),
])
@pytest.mark.parametrize('pad', [True, False])
def test_window_shift_and_pad_are_roll_pad_partition(size, window, shift, fitted, pad):
    scan = create_scan('window', window_size=window, shift=shift, pad=pad)
    assert scan.fit(*size) == fitted
    window, shift = fitted
    x = _int_map(scan, size)
    xs = scan.flatten(x)
    if pad or all(s % w == 0 for s, w in zip(size, window)):
        assert xs.shape[-1] == scan.route_length(*size) == math.prod(math.ceil(s / w) * w for s, w in zip(size, window))
        torch.testing.assert_close(xs[:, 0], _shifted_windows_reference(x, window, shift), rtol=0, atol=0)
        ys = torch.randn_like(xs)
        torch.testing.assert_close(
            scan.merge(ys, size), _shifted_windows_reverse_reference(ys[:, 0], size, window, shift), rtol=0, atol=0)
    else:  # smaller edge windows over the rolled map
        rolled = torch.roll(x, (-shift[0], -shift[1]), dims=(2, 3))
        torch.testing.assert_close(xs, create_scan('window', window_size=window).flatten(rolled), rtol=0, atol=0)
    assert torch.equal(scan.merge(xs, size), x)


def test_window_options_hand_checked():
    # 3x3 rolled by (-1, -1) is [[4, 5, 3], [7, 8, 6], [1, 2, 0]], padded to 4x4 (sentinel 9), 2x2 windows.
    scan = create_scan('window', window_size=2, shift=1, pad=True)
    assert scan.index_plan(3, 3).tolist() == [[4, 5, 7, 8, 3, 9, 6, 9, 1, 2, 9, 9, 0, 9, 9, 9]]
    assert scan.route_length(3, 3) == 16 and scan.route_length(4, 4) == 16
    assert create_scan('window', window_size=2, shift=(0, 1)).index_plan(2, 3).tolist() == [[1, 2, 4, 5, 0, 3]]
    # window2 takes the same options: the shifted, padded route and its reverse.
    window2 = create_scan('window2', window_size=2, shift=1, pad=True)
    plan = window2.index_plan(3, 3)
    assert plan[0].tolist() == scan.index_plan(3, 3)[0].tolist() and plan[1].tolist() == plan[0].flip(0).tolist()
    x = _int_map(window2, (3, 3))
    assert torch.equal(window2.merge(window2.flatten(x), (3, 3)), 2 * x)


def test_path_orders():
    assert create_scan('snake').index_plan(3, 3).tolist() == [[0, 1, 2, 5, 4, 3, 6, 7, 8], [0, 3, 6, 7, 4, 1, 2, 5, 8]]
    assert create_scan('snake4').index_plan(2, 2).tolist() == [[0, 1, 3, 2], [0, 2, 3, 1], [2, 3, 1, 0], [1, 3, 2, 0]]
    assert create_scan('diagonal').index_plan(3, 3).tolist() == [[0, 1, 3, 2, 4, 6, 5, 7, 8],
                                                                  [2, 1, 5, 0, 4, 8, 3, 7, 6]]
    assert create_scan('diagonal4').index_plan(2, 3).tolist() == [
        [0, 1, 3, 2, 4, 5], [2, 1, 5, 0, 4, 3], [5, 4, 2, 3, 1, 0], [3, 4, 0, 5, 1, 2]]
    assert create_scan('spiral').index_plan(3, 4).tolist() == [[0, 1, 2, 3, 7, 11, 10, 9, 8, 4, 5, 6],
                                                                [6, 5, 4, 8, 9, 10, 11, 7, 3, 2, 1, 0]]
    assert create_scan('spiral').index_plan(4, 3)[0].tolist() == [0, 1, 2, 5, 8, 11, 10, 9, 6, 3, 4, 7]
    assert create_scan('hilbert').index_plan(2, 2).tolist() == [[0, 2, 3, 1], [1, 3, 2, 0]]


# ------------------------------------------------------------------------------------------------
# hilbert curve


@pytest.mark.parametrize('size', [(8, 8), (6, 10), (16, 4), (4, 16), (32, 32), (14, 14)])
def test_hilbert_steps_are_grid_neighbours(size):
    height, width = size
    order = paths.hilbert(height, width)
    steps = (order // width).diff().abs() + (order % width).diff().abs()
    assert bool((steps == 1).all())


def test_hilbert_permutation_and_documented_exceptions():
    for height in range(1, 17):
        for width in range(1, 17):
            order = paths.hilbert(height, width)
            assert sorted(order.tolist()) == list(range(height * width)), (height, width)
            assert int(order[0]) == 0
            dh, dw = (order // width).diff().abs(), (order % width).diff().abs()
            jumps = (dh + dw) != 1
            longer, shorter = max(height, width), min(height, width)
            expected = int(longer % 2 == 1 and shorter % 2 == 0 and shorter >= 4)
            assert int(jumps.sum()) == expected, (height, width)
            assert bool(((dh[jumps] == 1) & (dw[jumps] == 1)).all()), 'the only non-neighbour step is diagonal'


# ------------------------------------------------------------------------------------------------
# plan cache


@pytest.mark.parametrize('name', list_scans())
def test_plan_is_cached(name, monkeypatch):
    scan = create_scan(name)
    calls = []
    build = scan._build_routes
    monkeypatch.setattr(scan, '_build_routes', lambda h, w: calls.append((h, w)) or build(h, w))
    assert scan.index_plan(5, 6, 'cpu') is scan.index_plan(5, 6, torch.device('cpu'))
    assert scan.index_plan(5, 6) is scan.index_plan(5, 6, 'cpu')
    x = _int_map(scan, (5, 6))
    for _ in range(3):
        scan.merge(scan.flatten(x), (5, 6))
    assert calls == [(5, 6)]
    scan.flatten(_int_map(scan, (4, 4)))
    assert calls == [(5, 6), (4, 4)]


# ------------------------------------------------------------------------------------------------
# errors


def test_unknown_name_lists_known_scans():
    with pytest.raises(ValueError, match='unknown scan') as err:
        create_scan('zigzag-nope')
    for name in list_scans():
        assert name in str(err.value)


@pytest.mark.parametrize(('name', 'kwargs', 'error', 'match'), [
    ('cross', {'direction': 2}, TypeError, 'direction'),
    ('window', {'window_size': 0}, ValueError, 'window_size'),
    ('window', {'window_size': (2,)}, ValueError, 'window_size'),
    ('window', {'window_size': 2.5}, ValueError, 'window_size'),
    ('window', {'shift': -1}, ValueError, 'shift'),
    ('window', {'shift': (1, 2, 3)}, ValueError, 'shift'),
    ('window', {'shift': True}, ValueError, 'shift'),
    ('window', {'pad': 1}, ValueError, 'pad'),
    ('atrous', {'step': 0}, ValueError, 'step'),
    ('atrous', {'step': 2.0}, ValueError, 'step'),
    ('grouped', {'base': 'atrous'}, ValueError, 'visit every token once'),
    ('grouped', {'base': 'nope'}, ValueError, 'unknown scan'),
    ('grouped', {'base': 3}, TypeError, 'base'),
    ('concat', {'base': 'atrous'}, ValueError, 'visit every token once'),
    ('concat', {'routes': ()}, ValueError, 'routes'),
    ('concat', {'routes': (4,)}, ValueError, 'routes'),
    ('concat', {'routes': (True,)}, ValueError, 'routes'),
])
def test_bad_options(name, kwargs, error, match):
    with pytest.raises(error, match=match):
        create_scan(name, **kwargs)


@pytest.mark.parametrize('name', list_scans())
def test_bad_inputs_raise_helpful_value_errors(name):
    scan = create_scan(name)
    with pytest.raises(ValueError, match=r'expected a \(B, C, H, W\) tensor, got \(2, 12, 3\)'):
        scan.flatten(torch.zeros(2, 12, 3))
    with pytest.raises(ValueError, match='H=0'):
        scan.index_plan(0, 4)
    with pytest.raises(ValueError, match='W=-1'):
        scan.route_length(3, -1)
    with pytest.raises(ValueError, match=r'expected route outputs'):
        scan.merge(torch.zeros(2, 3, 5), (3, 5))
    ys = scan.flatten(_int_map(scan, (3, 5)))
    with pytest.raises(ValueError, match=f'K={scan.num_routes}'):
        scan.merge(ys[:, :1].expand(-1, scan.num_routes + 1, -1, -1), (3, 5))
    with pytest.raises(ValueError, match='same size that was flattened'):
        scan.merge(ys, (6, 7))
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        scan.merge(ys, 15)


def test_grouped_needs_divisible_channels():
    scan = create_scan('grouped')
    with pytest.raises(ValueError, match='C=6, not divisible by 4'):
        scan.flatten(torch.zeros(1, 6, 3, 3))


def test_register_custom_scan(monkeypatch):
    monkeypatch.setattr(scans_base, '_REGISTRY', dict(scans_base._REGISTRY))

    @register_scan('halves')
    class HalvesScan(Scan):
        """Raster, plus the first and second half of it on two routes padded at the end (K=3, m=2)."""
        num_routes, visits_per_token = 3, 2

        def _build_routes(self, height, width):
            n = height * width
            half = (n + 1) // 2
            first = torch.cat([torch.arange(half), torch.full((n - half,), n)])
            second = torch.cat([torch.arange(half, n), torch.full((half,), n)])
            return torch.stack([torch.arange(n), first, second])

    assert 'halves' in list_scans()
    scan = create_scan('halves')
    for size in [(1, 1), (3, 5), (4, 4)]:
        x = _int_map(scan, size)
        assert torch.equal(scan.merge(scan.flatten(x), size), 2 * x)
    with pytest.raises(ValueError, match='already taken'):
        register_scan('cross')(HalvesScan)
    with pytest.raises(TypeError, match='Scan subclasses'):
        register_scan('thing')(object)


# ------------------------------------------------------------------------------------------------
# torch.compile and CUDA


@pytest.mark.parametrize('name', ['cross', 'atrous'])
def test_torch_compile_fullgraph(name):
    torch._dynamo.reset()
    scan = create_scan(name)

    def roundtrip(x):
        return scan.merge(scan.flatten(x) * 2, x.shape[-2:])

    compiled = torch.compile(roundtrip, fullgraph=True, backend='aot_eager')
    for size in [(5, 7), (4, 4)]:  # a cold plan cache is built eagerly during tracing
        x = torch.randn(2, 3, *size, requires_grad=True)
        out = compiled(x)
        out.sum().backward()
        torch.testing.assert_close(out, roundtrip(x.detach()))
        torch.testing.assert_close(x.grad, torch.full_like(x, 2.0 * scan.visits_per_token))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('name', list_scans())
def test_cuda(name):
    scan = create_scan(name)
    size = (9, 14)
    x = _int_map(scan, size, dtype=torch.float32, device='cuda').requires_grad_()
    xs = scan.flatten(x)
    assert xs.is_cuda
    assert torch.equal(xs.cpu(), scan.flatten(x.detach().cpu()))
    y = scan.merge(xs, size)
    assert torch.equal(y, scan.visits_per_token * x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, float(scan.visits_per_token)))
    assert scan.index_plan(*size, 'cuda') is scan.index_plan(*size, torch.device('cuda', torch.cuda.current_device()))
    assert torch.equal(scan.index_plan(*size, 'cuda').cpu(), scan.index_plan(*size))


TRITON_DEVICE = 'cuda' if torch.cuda.is_available() else ('cpu' if os.environ.get('TRITON_INTERPRET') == '1' else None)


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or TRITON_INTERPRET=1')
@pytest.mark.parametrize('name', ['cross', 'hilbert', 'atrous', 'grouped', 'bidirectional'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_triton_route_gather_equals_torch_gather(name, channels_last, monkeypatch):
    """flatten, merge and both gradients through the Triton route gather (CUDA's path) equal torch.gather's."""
    scan = create_scan(name)
    size = (5, 7)
    g = torch.Generator().manual_seed(0)
    shape = (2, *size, 8) if channels_last else (2, 8, *size)
    x = torch.randn(shape, generator=g).to(TRITON_DEVICE).requires_grad_()
    ys_shape = scan.flatten(x.detach(), channels_last=channels_last).shape
    weight = torch.randn(ys_shape, generator=g).to(TRITON_DEVICE)
    dout = torch.randn(shape, generator=g).to(TRITON_DEVICE)
    results = []
    for use_triton in (True, False):
        monkeypatch.setattr(scans_base, '_use_triton', lambda t, use=use_triton: use)
        ys = scan.flatten(x, channels_last=channels_last)
        out = scan.merge(ys * weight, size, channels_last=channels_last)
        results.append((ys, out, torch.autograd.grad(out, x, dout)[0]))
    (ys, out, dx), (ys_ref, out_ref, dx_ref) = results
    torch.testing.assert_close(ys, ys_ref, rtol=0, atol=0)
    torch.testing.assert_close(out, out_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or TRITON_INTERPRET=1')
def test_triton_route_gather_returns_the_gradient_of_a_channels_last_map_channels_last(monkeypatch):
    """flatten's backward writes the map gradient in the map's memory format (the conv before it takes it as is)."""
    scan = create_scan('cross')
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 5, 7, generator=g).to(TRITON_DEVICE).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    dys = torch.randn(scan.flatten(x.detach()).shape, generator=g).to(TRITON_DEVICE)
    grads = []
    for use_triton in (True, False):
        monkeypatch.setattr(scans_base, '_use_triton', lambda t, use=use_triton: use)
        grads.append(torch.autograd.grad(scan.flatten(x), x, dys)[0])
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(TRITON_DEVICE is None, reason='needs CUDA or TRITON_INTERPRET=1')
@pytest.mark.parametrize('name', ['bidirectional', 'cross', 'grouped'])
def test_token_merge_channels_contiguous(name, monkeypatch):
    """MiddleTokenScan.merge(channels_contiguous=True): the same values and gradient, token-major memory (one
    channel group) so that Vim's out_proj reads ``y.transpose(1, 2)`` without a copy."""
    tokens = MiddleTokenScan(name)
    size = (3, 5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 16, generator=g).to(TRITON_DEVICE)
    ys = tokens.flatten(x, size).detach().requires_grad_()
    dout = torch.randn(2, 8, 16, generator=g).to(TRITON_DEVICE)
    results = []
    for use_triton, contiguous in ((True, True), (True, False), (False, False)):
        monkeypatch.setattr(scans_base, '_use_triton', lambda t, use=use_triton: use)
        out = tokens.merge(ys, size, channels_contiguous=contiguous)
        results.append((out, torch.autograd.grad(out, ys, dout)[0]))
    assert results[0][0].transpose(1, 2).is_contiguous() == (not tokens.splits_channels)
    for out, grad in results[1:]:
        torch.testing.assert_close(results[0][0], out, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(results[0][1], grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('use_triton', [False] + ([True] if TRITON_DEVICE is not None else []))
@pytest.mark.parametrize('name', ['bidirectional', 'cross', 'grouped'])
def test_token_merge_scaled_and_cast(name, use_triton, monkeypatch):
    """merge(scale=, out_dtype=) is ``(scale * merge(y)).to(out_dtype)`` in one pass (Vim's mean over routes and
    its cast for out_proj); the gradient reaches y in y's dtype, scaled by the same factor."""
    tokens = MiddleTokenScan(name)
    size = (3, 5)
    device = TRITON_DEVICE if use_triton else 'cpu'
    monkeypatch.setattr(scans_base, '_use_triton', lambda t: use_triton)
    g = torch.Generator().manual_seed(0)
    ys = tokens.flatten(torch.randn(2, 8, 16, generator=g).to(device), size).detach().requires_grad_()
    dout = torch.randn(2, 8, 16, generator=g).to(device, torch.bfloat16)
    out = tokens.merge(ys, size, channels_contiguous=True, scale=0.25, out_dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16
    # Within one bfloat16 step: the interpreter's float32 -> bfloat16 cast may round differently from torch's.
    torch.testing.assert_close(out, (0.25 * tokens.merge(ys.detach(), size)).to(torch.bfloat16), rtol=2 ** -7, atol=0)
    grad = torch.autograd.grad(out, ys, dout)[0]
    assert grad.dtype == torch.float32
    torch.testing.assert_close(grad, 0.25 * tokens.flatten(dout.float(), size), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('use_triton', [False] + ([True] if TRITON_DEVICE is not None else []))
@pytest.mark.parametrize('name', ['bidirectional', 'cross', 'grouped'])
@pytest.mark.parametrize('channels_contiguous', [False, True])
def test_token_flatten_pair_equals_flatten_of_the_halves(name, channels_contiguous, use_triton, monkeypatch):
    """flatten_pair (Vim's x and z in one pass) gives flatten's values of both channel halves, the same input
    gradient in the input's layout, and a zero gradient for a half whose output is unused."""
    tokens = MiddleTokenScan(name)
    size = (3, 5)
    device = TRITON_DEVICE if use_triton else 'cpu'
    monkeypatch.setattr(scans_base, '_use_triton', lambda t: use_triton)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 16, generator=g).to(device)
    if channels_contiguous:  # in_proj's (B, L, 2C) output viewed channel-first
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    x.requires_grad_()
    first, second = tokens.flatten_pair(x, size)
    ref = [tokens.flatten(h, size) for h in x.chunk(2, dim=1)]
    torch.testing.assert_close(first, ref[0], rtol=0, atol=0)
    torch.testing.assert_close(second, ref[1], rtol=0, atol=0)
    douts = [torch.randn(first.shape, generator=g).to(device) for _ in range(2)]
    grad = torch.autograd.grad((first * douts[0]).sum() + (second * douts[1]).sum(), x)[0]
    grad_ref = torch.autograd.grad((ref[0] * douts[0]).sum() + (ref[1] * douts[1]).sum(), x)[0]
    torch.testing.assert_close(grad, grad_ref, rtol=1e-6, atol=1e-6)
    if use_triton and name != 'grouped':
        assert grad.stride() == x.stride()
    grad = torch.autograd.grad((tokens.flatten_pair(x, size)[1] * douts[1]).sum(), x)[0]
    torch.testing.assert_close(grad[:, :8], torch.zeros_like(grad[:, :8]), rtol=0, atol=0)
    torch.testing.assert_close(grad[:, 8:], grad_ref[:, 8:], rtol=1e-6, atol=1e-6)


def test_token_flatten_pair_needs_an_even_channel_count():
    with pytest.raises(ValueError, match='even channel count'):
        MiddleTokenScan('bidirectional').flatten_pair(torch.zeros(1, 7, 16), (3, 5))
