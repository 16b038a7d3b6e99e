"""Draw every registered scan order on a real photo, and what a selective scan along it sees.

Top row of each panel: the path of route 0 over a coarse token grid (colour = visiting step).
Bottom row: the photo after an exponential-decay selective scan (N = 1, A = -1, constant step) runs
along every route of the scan and the routes are merged back: each pixel shows the context the scan
order gives it. The photo is matplotlib's bundled sample ``grace_hopper.jpg``, so nothing is downloaded.

    python -m tools.visualize_scans --out scan_orders.png
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


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='scan_orders.png', help='PNG file to write')
    parser.add_argument('--grid', type=int, default=12, help='token grid drawn for the route paths')
    parser.add_argument('--size', type=int, default=128, help='photo size for the scanned context')
    parser.add_argument('--step', type=float, default=0.15, help='SSM step size (larger = shorter memory)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')

    photo = load_photo(args.size)
    names = scans.list_scans()
    fig, axes = plt.subplots(2, len(names), figsize=(2.2 * len(names), 4.6))
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
    main()
