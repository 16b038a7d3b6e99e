"""Tests of ``scans.tokens.MiddleTokenScan``: registered scans over token sequences with a middle (class) token."""
import pytest
import torch

from scans import MiddleTokenScan, create_scan, list_scans

SIZES = [(1, 1), (1, 6), (3, 5), (4, 4), (5, 3), (7, 7)]


def _every_route_visits_every_token_once(name: str) -> bool:
    scan = create_scan(name)
    return scan.visits_per_token == (1 if scan.splits_channels else scan.num_routes)


# Scans whose routes each visit every grid token once: the ones that can carry a middle token
# (not atrous, whose routes are sub-lattices, nor concat, whose single route visits tokens repeatedly).
FULL_SCANS = [n for n in list_scans() if _every_route_visits_every_token_once(n)]


def _tokens(scan: MiddleTokenScan, size, batch: int = 2, dtype=torch.float64) -> torch.Tensor:
    """Integer-valued (B, C, H*W + 1) sequence, so that sums of repeated values are exact."""
    channels = 2 * scan.num_routes if scan.splits_channels else 3
    g = torch.Generator().manual_seed(0)
    return torch.randint(-8, 9, (batch, channels, size[0] * size[1] + 1), generator=g).to(dtype)


def _vim_sequence(patches: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """The official Vim token sequence: row-major patches (B, C, M) with the class token (B, C, 1) at M // 2."""
    middle = patches.shape[-1] // 2
    return torch.cat([patches[..., :middle], cls, patches[..., middle:]], dim=-1)


@pytest.mark.parametrize('size', SIZES + [(2, 3), (27, 27)])
def test_bidirectional_is_vims_forward_and_flipped_sequence(size):
    """Vim runs route 0 over the sequence and route 1 over ``sequence.flip(-1)``, class token included."""
    tokens = MiddleTokenScan('bidirectional')
    g = torch.Generator().manual_seed(1)
    seq = _vim_sequence(torch.randn(2, 3, size[0] * size[1], generator=g), torch.randn(2, 3, 1, generator=g))
    assert tokens.middle_index(*size) == size[0] * size[1] // 2
    assert torch.equal(tokens.flatten(seq, size), torch.stack([seq, seq.flip(-1)], dim=1))
    ys = torch.randn(2, 2, 3, seq.shape[-1], generator=g)
    torch.testing.assert_close(tokens.merge(ys, size), ys[:, 0] + ys[:, 1].flip(-1), rtol=0, atol=0)


@pytest.mark.parametrize('name', FULL_SCANS)
@pytest.mark.parametrize('size', SIZES)
def test_routes_are_the_scan_routes_with_the_middle_token(name, size):
    tokens = MiddleTokenScan(name)
    height, width = size
    num_grid, middle = height * width, height * width // 2
    grid = tokens.scan.index_plan(height, width)
    plan = tokens.index_plan(height, width)
    assert plan.shape == (tokens.num_routes, num_grid + 1)
    for k, route in enumerate(plan):
        assert torch.equal(route.sort().values, torch.arange(num_grid + 1))
        position = int((route == middle).nonzero())
        reversed_route = any(torch.equal(grid[k], grid[j].flip(0)) for j in range(k))
        assert position == (num_grid - middle if reversed_route else middle)
        # Without the middle token, route k visits the grid tokens in the scan's order.
        grid_tokens = torch.cat([route[:position], route[position + 1:]])
        assert torch.equal(torch.where(grid_tokens > middle, grid_tokens - 1, grid_tokens), grid[k])


@pytest.mark.parametrize('name', FULL_SCANS)
def test_merge_of_flatten_is_visits_times_identity(name):
    tokens = MiddleTokenScan(name)
    for size in [(3, 5), (4, 4)]:
        x = _tokens(tokens, size)
        xs = tokens.flatten(x, size)
        assert xs.shape == (2, tokens.num_routes, tokens.channels_per_route(x.shape[1]), x.shape[-1])
        assert torch.equal(tokens.merge(xs, size), tokens.visits_per_token * x)


@pytest.mark.parametrize('name', ['raster', 'cross', 'grouped'])  # view, gather + sum, gather + concat
def test_gradcheck(name):
    tokens = MiddleTokenScan(name)
    size = (3, 4)
    x = _tokens(tokens, size, batch=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: tokens.flatten(t, size), (x,))
    y = tokens.flatten(x.detach(), size).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: tokens.merge(t, size), (y,))


def test_raster_is_a_view():
    tokens = MiddleTokenScan('raster')
    x = _tokens(tokens, (4, 6))
    xs = tokens.flatten(x, (4, 6))
    assert xs.data_ptr() == x.data_ptr() and xs.shape == (2, 1, 3, 25)


def test_padded_or_partial_routes_cannot_carry_a_middle_token():
    for name in ('atrous', 'concat'):
        with pytest.raises(ValueError, match=f"scan '{name}' cannot carry a middle token"):
            MiddleTokenScan(name).flatten(torch.zeros(1, 4, 17), (4, 4))


def test_bad_inputs_raise_helpful_value_errors():
    tokens = MiddleTokenScan(create_scan('cross'))
    with pytest.raises(ValueError, match=r'17 tokens for a 4x4 grid, got \(1, 4, 16\)'):
        tokens.flatten(torch.zeros(1, 4, 16), (4, 4))
    with pytest.raises(ValueError, match=r'route outputs'):
        tokens.merge(torch.zeros(1, 4, 17), (4, 4))
    with pytest.raises(ValueError, match='K=4'):
        tokens.merge(torch.zeros(1, 2, 4, 17), (4, 4))
    with pytest.raises(ValueError, match=r'patch grid \(H, W\)'):
        tokens.flatten(torch.zeros(1, 4, 17), 16)
    with pytest.raises(ValueError, match='H=0'):
        tokens.index_plan(0, 4)
    with pytest.raises(ValueError, match='unknown scan'):
        MiddleTokenScan('nope')
    with pytest.raises(TypeError, match='scan name or a scans.Scan'):
        MiddleTokenScan(3)


def test_plan_is_cached():
    tokens = MiddleTokenScan('hilbert')
    assert tokens.index_plan(5, 6) is tokens.index_plan(5, 6, 'cpu')
    x = _tokens(tokens, (5, 6))
    assert tokens._plan(5, 6, x.device) is tokens._plan(5, 6, torch.device('cpu'))


def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    tokens = MiddleTokenScan('cross')

    def roundtrip(x, size):
        return tokens.merge(tokens.flatten(x, size) * 2, size)

    compiled = torch.compile(roundtrip, fullgraph=True, backend='aot_eager')
    for size in [(3, 5), (4, 4)]:  # a cold plan cache is built eagerly during tracing
        x = torch.randn(2, 3, size[0] * size[1] + 1, requires_grad=True)
        out = compiled(x, size)
        out.sum().backward()
        torch.testing.assert_close(out, roundtrip(x.detach(), size))
        torch.testing.assert_close(x.grad, torch.full_like(x, 2.0 * tokens.visits_per_token))
