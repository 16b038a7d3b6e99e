#!/usr/bin/env bash
# Installs MMDetection 3.3.0 and MMSegmentation 1.2.2 with a locally built mmcv 2.1.0 into a virtual environment
# that already holds this project and its torch.
#
#   bash tools/install_openmmlab.sh [PYTHON]        (default: .venv/bin/python)
#
# Why a script: mmdet 3.3.0 and mmseg 1.2.2 accept only mmcv < 2.2.0 with compiled ops, and no mmcv wheel exists
# for torch >= 2.5. mmcv 2.1.0's released source does build against torch 2.14 with three changes, made here:
#   * setuptools < 70 for the build (its setup.py imports pkg_resources), put in front of the environment's own only
#     while building; the environment keeps a setuptools that torch accepts (>= 77.0.3) and that still has
#     pkg_resources (< 82), which mmengine 0.10.7 imports to resolve `mmdet::` base configs,
#   * no build isolation (an isolated build cannot import torch and silently skips the ops, leaving no mmcv._ext),
#   * -std=c++20 instead of -std=c++17 (torch 2.14's headers need C++20).
# The build takes about 30 CPU-minutes (2 cores: ~15-30 min). The wheel is cached per mmcv/torch/Python version in
# ${LINZOO_CACHE:-~/.cache/linzoo}, so later runs on the same machine install it in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute, keeping the venv's symlink
MMCV_VERSION=2.1.0

tag=$("$PY" -c 'import sys, torch; print("torch%s-py%d%d" % (torch.__version__.replace("+", "_"), *sys.version_info[:2]))')
cache="${LINZOO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/linzoo}/mmcv-$MMCV_VERSION-$tag"

"$PY" -m pip install -q "setuptools>=77.0.3,<82" wheel ninja psutil
if ! compgen -G "$cache/mmcv-$MMCV_VERSION-*.whl" >/dev/null; then
    echo "install_openmmlab: building mmcv $MMCV_VERSION for $tag (about 30 CPU-minutes; cached in $cache)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "$PY" -m pip install -q --target "$work/buildtools" "setuptools<70"
    export PYTHONPATH="$work/buildtools${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$work"
    tar -xzf "$work/mmcv-$MMCV_VERSION.tar.gz" -C "$work"
    src="$work/mmcv-$MMCV_VERSION"
    grep -q -- "-std=c++17" "$src/setup.py" || { echo "install_openmmlab: mmcv's setup.py no longer sets -std=c++17" >&2; exit 1; }
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    (cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$work/dist" .)
    mkdir -p "$cache"
    mv "$work"/dist/mmcv-*.whl "$cache/"
    unset PYTHONPATH
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$cache"/mmcv-$MMCV_VERSION-*.whl
"$PY" -m pip install -q -e '.[openmmlab]'
# Fail here, not in a test, when the ops are missing: the configs use nms, roi_align and (RetinaNet) sigmoid focal loss.
"$PY" -c "
import mmcv, mmdet, mmseg, mmcv._ext
from mmcv.ops import nms, roi_align, RoIAlign, sigmoid_focal_loss
print('install_openmmlab: mmcv', mmcv.__version__, 'with ops, mmdet', mmdet.__version__, 'mmseg', mmseg.__version__)
"
