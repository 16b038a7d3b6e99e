"""kernels._launch.CachedLauncher: repeated Triton launches skip Triton's Python binding, never its specialisation."""
import pytest
import torch
import triton
import triton.language as tl

from kernels import route_gather as route_gather_module
from kernels._launch import CachedLauncher


def test_pointer_parameters_must_come_first():
    @triton.jit
    def kernel(n, x_ptr, BLOCK: tl.constexpr):
        pass

    with pytest.raises(ValueError, match='pointer parameters of kernel must come first'):
        CachedLauncher(kernel)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_repeated_launches_tell_dtypes_alignments_and_scalars_apart():
    """Launches that Triton compiles differently (pointer dtype, 16-byte alignment, scalar values and constexprs)
    get their own entries, and every launch, first or repeated, gives torch.gather's result."""
    launcher = route_gather_module._route_gather_launch
    launcher.table.clear()
    g = torch.Generator().manual_seed(0)
    index = torch.stack([torch.randperm(15, generator=g) for _ in range(2)]).cuda()
    buffer = torch.randn(2 * 8 * 15 + 1, generator=g).cuda()
    for dtype in (torch.float32, torch.bfloat16):
        for offset in (0, 1):  # offset 1: a source pointer that is not 16-byte aligned
            src = buffer.to(dtype)[offset:offset + 2 * 8 * 15].view(2, 1, 8, 15)
            want = torch.gather(src.expand(2, 2, 8, 15), 3, index.view(1, 2, 1, 15).expand(2, 2, 8, 15))
            for scale in (1.0, 0.5, 0.5):
                got = route_gather_module.route_gather(src, index, False, False, scale=scale)
                torch.testing.assert_close(got, (want.float() * scale).to(dtype), rtol=0, atol=0)
    # dtype x alignment x (unscaled, scaled), the third launch of each a hit.
    assert len(launcher.table) == 8


def test_accept_refuses_a_compiled_kernel_before_it_runs(monkeypatch):
    """With ``accept``, a miss compiles without running (Triton's warmup), runs only what ``accept`` takes, and
    remembers the verdict: later calls with the same key neither compile nor run a refused kernel."""
    from kernels import _launch

    class Compiled:
        def __init__(self, log):
            self.log = log

        def __getitem__(self, grid):
            return lambda *args: self.log.append('compiled launch')

    class Kernel:
        arg_names = ['x_ptr', 'n', 'OK']
        __name__ = 'kernel'

        def __init__(self):
            self.log = []

        def warmup(self, *args, grid, **meta):
            self.log.append('warmup')
            return Compiled(self.log)

        def __getitem__(self, grid):
            return lambda *args, **meta: self.log.append('launch')

    monkeypatch.setattr(_launch, 'driver', type('Driver', (), {'active': type('Active', (), {
        'get_current_device': staticmethod(lambda: 0)})}))
    kernel = Kernel()
    launcher = CachedLauncher(kernel)
    launcher.enabled = True
    x = torch.zeros(4)

    def accept_if(ok):
        def accept(compiled):
            assert isinstance(compiled, Compiled)
            kernel.log.append('accept')
            return ok
        return accept

    for ok in (False, True):
        for _ in range(2):
            assert launcher.launch((1,), (x, 4), {'OK': ok}, accept=accept_if(ok)) is ok
    assert kernel.log == ['warmup', 'accept', 'warmup', 'accept', 'launch', 'compiled launch']
