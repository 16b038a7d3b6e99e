"""OpenMMLab is optional: only heads/ imports it, and says how to install it when it is missing."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter where importing any OpenMMLab package fails, as in an environment without them.
_WITHOUT_OPENMMLAB = '''
import importlib.abc, sys

class NoOpenMMLab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmcv', 'mmengine', 'mmdet', 'mmseg', 'mmpretrain'):
            raise ModuleNotFoundError(f'No module named {name!r}')
        return None

sys.meta_path.insert(0, NoOpenMMLab())
'''


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', _WITHOUT_OPENMMLAB + code], cwd=ROOT, capture_output=True, text=True)


def test_core_packages_work_without_openmmlab():
    result = _run('''
import torch, timm
import backbones, scans, kernels
import tools.train, tools.validate, tools.benchmark, tools.flops
model = timm.create_model('test_vmamba', features_only=True)
print([tuple(f.shape) for f in model(torch.randn(1, 3, 64, 64))])
''')
    assert result.returncode == 0, result.stderr
    assert '(1, 16, 16, 16)' in result.stdout


def test_heads_without_openmmlab_says_how_to_install_it():
    result = _run('import heads')
    assert result.returncode != 0
    assert 'bash tools/install_openmmlab.sh' in result.stderr


def test_openmmlab_commands_without_openmmlab_say_how_to_install_it():
    result = _run('''
from tools import mm_flops, mm_test, mm_train
from tools.common import run_cli
run_cli(mm_train.main, ['configs/detection/vmamba/mask-rcnn_vmamba-t-s1l8_fpn_1x_coco.py'])
''')
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith('error: heads needs MMDetection')
    assert 'bash tools/install_openmmlab.sh' in result.stderr
