"""Draw the registered scan orders: on a real photo with the context a selective scan gives, or step by step.

``--style photo`` (default), one column per scan. Top row: the path of route 0 over a coarse token grid
(colour = visiting step). Bottom row: the photo after an exponential-decay selective scan (N = 1, A = -1,
constant step) runs along every route of the scan and the routes are merged back: each pixel shows the
context the scan order gives it. The photo is matplotlib's bundled sample ``grace_hopper.jpg``, so nothing
is downloaded.

``--style steps``, one row per scan and one panel per route: a small grid whose cells carry the step at
which the route visits them, joined by arrows coloured along the route (a jump between non-neighbouring
tokens is dashed).

    python -m tools.visualize_scans --out scan_orders.png
    python -m tools.visualize_scans --style steps --scans cross,hilbert,spiral --grid 6 --out routes.png
"""
import argparse
import logging
import time
from typing import List, Optional

import matplotlib

matplotlib.use('Agg')
import matplotlib.cbook as cbook  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import scans  # noqa: E402
from kernels import selective_scan  # noqa: E402
from tools.common import CliError, parse_csv_list, run_cli  # noqa: E402


def load_photo(size: int) -> torch.Tensor:
    """The bundled sample photo as a (1, 3, size, size) float tensor in [0, 1]."""
    with cbook.get_sample_data('grace_hopper.jpg') as f:
        img = Image.open(f).convert('RGB').resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def scan_context(scan: scans.Scan, image: torch.Tensor, step: float) -> torch.Tensor:
    """Run h_t = exp(-step) h_{t-1} + step * x_t along every route and merge the routes back."""
    height, width = image.shape[-2:]
    if scan.splits_channels:  # route k reads channel group k: give every group the whole photo
        image = image.repeat(1, scan.num_routes, 1, 1)
    xs = scan.flatten(image)  # (1, K, C', L)
    batch, routes, chans, length = xs.shape
    u = xs.reshape(batch, routes * chans, length)
    ones = torch.ones(batch, routes, 1, length)
    y = selective_scan(u, torch.full_like(u, step), -torch.ones(routes * chans, 1), ones, ones)
    merged = scan.merge(y.view(batch, routes, chans, length), (height, width)) / scan.visits_per_token
    if scan.splits_channels:
        merged = merged.view(batch, routes, -1, height, width).mean(1)
    return merged


def route_cells(scan: scans.Scan, grid: int, route: int) -> np.ndarray:
    """(steps, 2) row/column of the tokens route ``route`` visits on a grid x grid map, padding dropped."""
    index = scan.index_plan(grid, grid)[route]
    index = index[index < grid * grid].numpy()
    return np.stack([index // grid, index % grid], axis=1)


def draw_steps(names: List[str], grid: int, out: str) -> None:
    """One row per scan, one panel per route: numbered visiting steps joined by arrows."""
    created = [scans.create_scan(name) for name in names]
    cols = max(scan.num_routes for scan in created)
    fig, axes = plt.subplots(len(names), cols, figsize=(2.4 * cols, 2.5 * len(names)), squeeze=False)
    cmap = plt.get_cmap('viridis')
    for row, (name, scan) in enumerate(zip(names, created)):
        for route in range(cols):
            ax = axes[row, route]
            ax.set_axis_off()
            if route >= scan.num_routes:
                continue
            cells = route_cells(scan, grid, route)
            steps = len(cells)
            ax.set_xlim(-0.5, grid - 0.5)
            ax.set_ylim(grid - 0.5, -0.5)
            ax.set_aspect('equal')
            for k in range(grid + 1):
                ax.plot([k - 0.5, k - 0.5], [-0.5, grid - 0.5], color='0.85', linewidth=0.5)
                ax.plot([-0.5, grid - 0.5], [k - 0.5, k - 0.5], color='0.85', linewidth=0.5)
            for t in range(steps - 1):
                (r0, c0), (r1, c1) = cells[t], cells[t + 1]
                jump = abs(int(r1) - int(r0)) + abs(int(c1) - int(c0)) > 1
                ax.annotate('', xy=(c1, r1), xytext=(c0, r0), arrowprops=dict(
                    arrowstyle='->', color=cmap(t / max(steps - 1, 1)), linewidth=0.7 if jump else 1.2,
                    linestyle='--' if jump else '-', alpha=0.55 if jump else 0.9, shrinkA=4, shrinkB=4))
            for t, (r, c) in enumerate(cells):
                ax.text(c, r, str(t), ha='center', va='center', fontsize=max(4, 9 - grid // 3),
                        color=cmap(t / max(steps - 1, 1)), fontweight='bold')
            label = f'{name} (K={scan.num_routes})' if route == 0 else f'route {route}'
            ax.set_title(label if route else f'{label}, route 0', fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='scan_orders.png', help='PNG file to write')
    parser.add_argument('--scans', default='', help='comma-separated scan names (default: every registered scan)')
    parser.add_argument('--style', default='photo', choices=['photo', 'steps'],
                        help='photo: route 0 and the scanned context on a photo; steps: every route, numbered')
    parser.add_argument('--grid', type=int, default=None,
                        help='token grid drawn for the routes (default: 12 for photo, 8 for steps)')
    parser.add_argument('--size', type=int, default=128, help='photo size for the scanned context')
    parser.add_argument('--step', type=float, default=0.15, help='SSM step size (larger = shorter memory)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    available = scans.list_scans()
    names = parse_csv_list(args.scans) or available
    unknown = [n for n in names if n not in available]
    if unknown:
        raise CliError(f'unknown scan(s) {", ".join(unknown)}; registered: {", ".join(available)}')
    grid = args.grid or (12 if args.style == 'photo' else 8)
    if grid < 2:
        raise CliError(f'--grid must be >= 2, got {grid}')
    if args.style == 'steps':
        draw_steps(names, grid, args.out)
        print(f'wrote {args.out}')
        return
    args.grid = grid

    photo = load_photo(args.size)
    fig, axes = plt.subplots(2, len(names), figsize=(2.2 * len(names), 4.6), squeeze=False)
    for col, name in enumerate(names):
        scan = scans.create_scan(name)
        route = scan.index_plan(args.grid, args.grid)[0]
        route = route[route < args.grid * args.grid]  # drop padding
        rows, cols = (route // args.grid).numpy(), (route % args.grid).numpy()
        ax = axes[0, col]
        ax.imshow(photo[0].permute(1, 2, 0).numpy(), extent=(-0.5, args.grid - 0.5, args.grid - 0.5, -0.5))
        ax.plot(cols, rows, color='white', linewidth=0.8, alpha=0.7)
        ax.scatter(cols, rows, c=np.arange(len(route)), cmap='viridis', s=9, zorder=3)
        ax.set_title(f'{name} (K={scan.num_routes})', fontsize=9)
        start = time.perf_counter()
        context = scan_context(scan, photo, args.step)
        elapsed = time.perf_counter() - start
        axes[1, col].imshow(context[0].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[1, col].set_title(f'{1e3 * elapsed:.0f} ms', fontsize=8)
        print(f'{name:14s} K={scan.num_routes}  route length {scan.route_length(args.size, args.size):6d}  '
              f'scan+merge {1e3 * elapsed:7.1f} ms')
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    run_cli(main)
