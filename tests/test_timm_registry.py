"""The MedNeXt classifiers in timm's registry: registered on package import (either import order), without making
``import nnunetv2_mednext`` import timm or torch; models built through timm equal ours."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import nnunetv2_mednext
from nnunetv2_mednext.networks import create_model, list_models


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_package_import_then_timm_registers_without_importing_timm_early():
    out = _python("""
        import sys
        import nnunetv2_mednext
        print("early", "timm" in sys.modules, "torch" in sys.modules)
        import timm, torch
        print("listed", ",".join(timm.list_models("mednext*")))
        m = timm.create_model("mednext_cls_t", num_classes=3, in_chans=1)
        print("shape", tuple(m(torch.randn(2, 1, 64, 64)).shape), m.stem[0].in_channels)
    """)
    assert "early False False" in out
    assert f"listed {','.join(list_models('mednext*', task='classification'))}" in out
    assert "shape (2, 3) 1" in out


def test_timm_first_then_package_import_registers():
    out = _python("""
        from timm.models import create_model, list_models
        assert not list_models("mednext*")
        import nnunetv2_mednext
        print(list_models("mednext*"), create_model("mednext_cls_b", in_chans=3, num_classes=5).head.out_features)
    """)
    assert "['mednext_cls_b', 'mednext_cls_s', 'mednext_cls_t'] 5" in out


def test_timm_model_equals_ours_and_carries_a_config():
    import timm

    assert nnunetv2_mednext.__version__
    torch.manual_seed(0)
    ours = create_model("mednext_cls_t", in_chans=1, num_classes=3, drop_path_rate=0.0)
    torch.manual_seed(0)
    theirs = timm.create_model("mednext_cls_t", in_chans=1, num_classes=3, drop_path_rate=0.0)
    assert type(theirs) is type(ours)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert theirs.pretrained_cfg["architecture"] == "mednext_cls_t"
    assert theirs.pretrained_cfg["first_conv"] == "stem.0" and theirs.pretrained_cfg["classifier"] == "head"
    assert timm.create_model("mednext_cls_s").head.out_features == 1000  # timm's default, as for its own models
    small = timm.create_model("mednext_cls_t", num_classes=2, dims=[8, 16, 24, 32], depths=[1, 1, 1, 1])
    assert small.num_features == 32 and small(torch.randn(2, 3, 32, 32)).shape == (2, 2)
    with pytest.raises(RuntimeError, match="no pretrained weights"):
        timm.create_model("mednext_cls_t", pretrained=True)


def test_failed_registration_is_a_warning(monkeypatch: pytest.MonkeyPatch):
    from nnunetv2_mednext import _timm_hook

    monkeypatch.setattr(_timm_hook, "REGISTRATION_MODULE", "nnunetv2_mednext.networks.no_such_module")
    with pytest.warns(UserWarning, match="not registered in timm"):
        assert _timm_hook.register() is False
