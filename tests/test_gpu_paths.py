"""GPU-only logic that runs on a CPU: AMP step order and clipping, autocast dtype choice, compile guard, channels-last,
and the device check's own pieces (learnable target, planner comparison, stability verdict, recipes); the doctor's
package structure and the routes section are in tests/test_doctor.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from nnunetv2_mednext.doctor import amp as gpu
from nnunetv2_mednext.doctor import cases, check, profiles
from nnunetv2_mednext.doctor import report as rp
from nnunetv2_mednext.doctor.sections import planner as planner_section
from nnunetv2_mednext.doctor.sections import stability
from nnunetv2_mednext.nnunet.planners import mednext_planner as mp

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------------
# the AMP training step
# ----------------------------------------------------------------------------------------------------------------


class RecordingScaler:
    """Behaves like a GradScaler with a fixed scale ``s`` and records the gradient norm at each call."""

    def __init__(self, params: list[nn.Parameter], s: float = 64.0) -> None:
        self.params, self.s, self.events = params, s, []

    def _norm(self) -> float:
        return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params])))

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        self.events.append(("scale", None))
        return loss * self.s

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        for p in self.params:
            p.grad.div_(self.s)
        self.events.append(("unscale_", self._norm()))

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.events.append(("step", self._norm()))
        optimizer.step()

    def update(self) -> None:
        self.events.append(("update", None))


def _steep_problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor, float]:
    """A linear model whose gradient norm (hand-checked below) is far above nnU-Net's clip norm of 12."""
    torch.manual_seed(seed)
    net = nn.Linear(8, 1, bias=False)
    x = torch.randn(16, 8)
    y = torch.full((16, 1), 30.0)
    w = net.weight.detach().clone()
    # loss = mean((x w^T - y)^2)  ->  dL/dw = 2/n * (x w^T - y)^T x
    grad = 2 / len(x) * ((x @ w.T - y).T @ x)
    return net, x, y, float(grad.norm())


def test_train_step_unscales_before_clipping() -> None:
    net, x, y, true_norm = _steep_problem()
    assert true_norm > 24  # so clipping at 12 is active
    params = list(net.parameters())
    scaler = RecordingScaler(params)
    before = net.weight.detach().clone()
    opt = torch.optim.SGD(params, lr=1.0)
    out = gpu.train_step(net, opt, nn.functional.mse_loss, x, y, gpu.FP16, scaler, clip_norm=12.0)

    assert [e[0] for e in scaler.events] == ["scale", "unscale_", "step", "update"]
    unscaled, at_step = scaler.events[1][1], scaler.events[2][1]
    assert unscaled == pytest.approx(true_norm, rel=1e-2)  # fp16 forward; unscale_ saw the true (unscaled) gradients
    assert at_step == pytest.approx(12.0, rel=1e-4)  # the clip applied to the true gradients, before step
    assert float(out.grad_norm) == pytest.approx(unscaled, rel=1e-6)  # reported: norm before clipping
    assert float((before - net.weight.detach()).norm()) == pytest.approx(12.0, rel=1e-4)  # SGD lr 1 moved by 12


def test_train_step_with_torchs_grad_scaler_skips_overflow() -> None:
    net, x, y, true_norm = _steep_problem(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**6)
    before = net.weight.detach().clone()
    out = gpu.train_step(net, opt, nn.functional.mse_loss, x, y, gpu.FP16, scaler)
    # fp16 autocast changes the loss slightly; the update is the clipped unscaled gradient times lr
    assert float(out.grad_norm) == pytest.approx(true_norm, rel=1e-2)
    assert float((before - net.weight.detach()).norm()) == pytest.approx(0.5 * 12.0, rel=1e-3)
    assert scaler.get_scale() == 2.0**6

    # an inf loss: the scaler skips the update and halves its scale, as on a GPU
    before = net.weight.detach().clone()
    out = gpu.train_step(net, opt, lambda o, t: nn.functional.mse_loss(o, t) * float("inf"), x, y, gpu.FP16, scaler)
    assert not torch.isfinite(out.grad_norm)
    assert torch.equal(before, net.weight.detach())
    assert scaler.get_scale() == 2.0**5


def test_train_step_without_scaler_clips_and_refuses_fp16() -> None:
    net, x, y, true_norm = _steep_problem(2)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    before = net.weight.detach().clone()
    out = gpu.train_step(net, opt, nn.functional.mse_loss, x, y, gpu.FP32)
    assert float(out.grad_norm) == pytest.approx(true_norm, rel=1e-4)
    assert float((before - net.weight.detach()).norm()) == pytest.approx(12.0, rel=1e-4)
    with pytest.raises(ValueError, match="gradient scaler"):
        gpu.train_step(net, opt, nn.functional.mse_loss, x, y, gpu.FP16, None)


# ----------------------------------------------------------------------------------------------------------------
# autocast dtype
# ----------------------------------------------------------------------------------------------------------------


def test_select_amp_by_device_and_capability() -> None:
    assert gpu.select_amp("cuda", "auto", (9, 0)) is gpu.BF16  # H100/H200
    assert gpu.select_amp("cuda", "auto", (8, 0)) is gpu.BF16  # A100
    assert gpu.select_amp("cuda", "auto", (7, 5)) is gpu.FP16  # T4: no bf16 tensor cores
    assert gpu.select_amp("cuda", "fp16", (9, 0)) is gpu.FP16 and gpu.FP16.grad_scaler
    assert not gpu.BF16.grad_scaler
    with pytest.raises(gpu.UnsupportedError, match=r"capability >= 8\.0.*7\.0"):
        gpu.select_amp("cuda", "bf16", (7, 0))
    with pytest.raises(ValueError, match="capability"):
        gpu.select_amp("cuda", "auto")
    assert gpu.select_amp("cpu", "auto") is gpu.BF16
    assert gpu.select_amp("cpu", "fp32") is gpu.FP32
    with pytest.raises(gpu.UnsupportedError, match="CUDA path"):
        gpu.select_amp("cpu", "fp16")
    with pytest.raises(gpu.UnsupportedError):
        gpu.select_amp("mps", "bf16")
    with pytest.raises(ValueError, match="unknown AMP mode"):
        gpu.select_amp("cpu", "fp8")
    assert gpu.nnunet_amp("cuda") is gpu.FP16 and gpu.nnunet_amp("cpu") is gpu.FP32


def test_autocast_context_gives_the_selected_dtype() -> None:
    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for amp, dtype in ((gpu.BF16, torch.bfloat16), (gpu.FP32, torch.float32), (gpu.FP16, torch.float16)):
        with gpu.autocast("cpu", amp):
            assert lin(x).dtype == dtype
    assert gpu.make_grad_scaler(gpu.BF16, "cpu") is None
    assert isinstance(gpu.make_grad_scaler(gpu.FP16, "cpu"), torch.amp.GradScaler)


# ----------------------------------------------------------------------------------------------------------------
# compile guard
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", [None, "1", "true", "T", "0", "false", "no"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_nnunet_compile_rule_matches_nnunet(monkeypatch: pytest.MonkeyPatch, flag: str | None, device: str) -> None:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if flag is None:
        monkeypatch.delenv("nnUNet_compile", raising=False)
    else:
        monkeypatch.setenv("nnUNet_compile", flag)
    fake = SimpleNamespace(device=torch.device(device), print_to_log_file=lambda *a, **k: None)
    theirs = nnUNetTrainer._do_i_compile(fake)
    ours, why = gpu.nnunet_compiles(device, system="Linux")
    assert ours == theirs and why


def test_compile_plan() -> None:
    assert gpu.compile_plan("cuda", "try", "Linux") == (True, "inductor CUDA backend (Triton)")
    ok, why = gpu.compile_plan("cpu", "try", "Linux", cxx=None)
    assert not ok and "C++ compiler" in why
    ok, why = gpu.compile_plan("cpu", "try", "Linux", cxx="/usr/bin/g++")
    assert ok and "/usr/bin/g++" in why
    assert not gpu.compile_plan("cuda", "off", "Linux")[0]
    assert not gpu.compile_plan("cuda", "try", "Windows")[0]
    assert not gpu.compile_plan("mps", "try", "Darwin")[0]
    with pytest.raises(ValueError):
        gpu.compile_plan("cuda", "maybe")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_run_guarded_outcomes_and_kills_the_process_group(tmp_path: Path) -> None:
    ok = gpu.run_guarded([sys.executable, "-c", "print('hello')"], 60)
    assert ok.status == "ok" and ok.returncode == 0 and ok.tail == "hello"
    failed = gpu.run_guarded([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 60)
    assert failed.status == "failed" and failed.returncode == 3 and "boom" in failed.tail

    # a child that starts a grandchild (as inductor's compile workers): both die at the timeout
    code = ("import subprocess, sys, time\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "print(c.pid, flush=True)\n"
            "time.sleep(120)\n")
    log = tmp_path / "guarded.log"
    t0 = time.perf_counter()
    res = gpu.run_guarded([sys.executable, "-c", code], 3, log_path=log)
    assert res.status == "timeout" and res.returncode is None
    assert time.perf_counter() - t0 < 30
    grandchild = int(log.read_text().split()[0])
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild)


# ----------------------------------------------------------------------------------------------------------------
# channels-last, peak memory
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_keeps_outputs(dims: int) -> None:
    conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(3, 5, 3, padding=1)
    x = torch.randn(2, 3, *([6] * dims))
    ref = conv(x)
    net, xc = gpu.to_channels_last(conv, x)
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    assert net.weight.is_contiguous(memory_format=fmt) and xc.is_contiguous(memory_format=fmt)
    assert not xc.is_contiguous()
    torch.testing.assert_close(net(xc), ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="4D or 5D"):
        gpu.to_channels_last(conv, torch.randn(3, 6))


def test_peak_memory_needs_cuda() -> None:
    with pytest.raises(gpu.UnsupportedError, match="CUDA"):
        gpu.peak_memory(lambda: None, torch.device("cpu"))


# ----------------------------------------------------------------------------------------------------------------
# the device check's pieces
# ----------------------------------------------------------------------------------------------------------------


def test_learnable_batch_is_balanced_and_a_function_of_the_image() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = cases.learnable_batch(gen, 2, (32, 32, 32), 3, torch.device("cpu"))
    assert x.shape == (2, 1, 32, 32, 32) and y.shape == x.shape and y.dtype == torch.int16
    freq = torch.bincount(y.flatten().long(), minlength=3).float() / y.numel()
    assert torch.all((freq - 1 / 3).abs() < 0.05), freq
    # the label is the binned 5x5x5 local mean: recompute one voxel by hand
    local = float(x[0, 0, 8:13, 8:13, 8:13].mean()) * np.sqrt(125)
    expected = 0 if local < -0.4307 else (1 if local < 0.4307 else 2)
    assert int(y[0, 0, 10, 10, 10]) == expected


def test_synthetic_plans_build_every_network_with_matching_deep_supervision() -> None:
    profile = profiles.PROFILES["quick"]
    pm, dataset_json = cases.plans_manager(profile)
    assert pm.get_label_manager(dataset_json).num_segmentation_heads == profiles.NUM_CLASSES
    for config in ("3d_fullres", "2d"):
        cm = pm.get_configuration(config)
        for net_name in profiles.NETS:
            case = cases.build_case(pm, net_name, config, torch.device("cpu"), gpu.FP32)
            outs = case.net(case.x)
            assert [o.shape[2:] for o in outs] == [t.shape[2:] for t in case.targets]
            assert len(case.targets) == len(cm.pool_op_kernel_sizes) - 1
            assert case.checkpointing == (net_name == "mednextv1_l_k3")
            assert torch.isfinite(case.loss(outs, case.targets))


def test_recipe_optimizers_are_the_trainers() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.InstanceNorm2d(4, affine=True))
    opt, sched = cases.recipe_optimizer(cases.trainer_class("mednext_t"), net, 300)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["eps"] == 1e-4
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 1e-4]
    sched.step(3)  # warm-up: 2 % of 300 = 6 iterations
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-3 * 4 / 7)
    opt, sched = cases.recipe_optimizer(cases.trainer_class("PlainConvUNet"), net, 300)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.99 and opt.defaults["nesterov"]
    sched.step(150)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**0.9)
    opt, _ = cases.recipe_optimizer(cases.trainer_class("mednextv1_l_k3"), net, 300)
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["eps"] == 1e-4  # Roy et al.'s lr


def _stab_row(**kw: object) -> dict:
    row = {"steps": 300, "nonfinite_losses": 0, "nonfinite_grad_steps": 0, "weights_finite": True,
           "loss_first": 1.2, "loss_last": 0.4}
    row.update(kw)
    return row


def test_stability_verdicts() -> None:
    assert stability.stability_problems(_stab_row(), True) == []
    assert stability.stability_problems(_stab_row(nonfinite_grad_steps=15), True) == []  # 5 % of 300 with a scaler
    assert "non-finite gradients" in stability.stability_problems(_stab_row(nonfinite_grad_steps=16), True)[0]
    assert "non-finite gradients" in stability.stability_problems(_stab_row(nonfinite_grad_steps=1), False)[0]
    assert "non-finite losses" in stability.stability_problems(_stab_row(nonfinite_losses=1), True)[0]
    assert "weights" in stability.stability_problems(_stab_row(weights_finite=False), True)[0]
    assert "did not go down" in stability.stability_problems(_stab_row(loss_last=1.17), True)[0]
    assert "did not go down" in stability.stability_problems(_stab_row(loss_last=float("nan")), True)[-1]


def _matrix_row(net: str, proxy: int, batch: int, measured: int, ckpt: bool = False, **kw: object) -> dict:
    row = {"net": net, "config": "3d_fullres", "patch": [128, 128, 128], "batch": batch, "proxy": proxy,
           "checkpointing": ckpt, "status": "ok", "amp": "fp16", "channels_last": False, "compile": False,
           "peak_bytes": measured, "activation_bytes": measured // 2}
    row.update(kw)
    return row


def test_planner_rows_and_refit_on_cuda_numbers() -> None:
    proxy = 10_000_000
    rows = [
        _matrix_row("mednext_t", proxy, 2, int(proxy * 2 * mp.BYTES_PER_PROXY_UNIT * 1.1)),
        _matrix_row("mednextv1_s_k3", proxy, 2, int(proxy * 2 * 8.0)),
        _matrix_row("mednextv1_l_k3", proxy, 2, int(proxy * 2 * 0.5), ckpt=True),
        _matrix_row("PlainConvUNet", proxy, 2, 2 * 10**9),
        _matrix_row("mednext_t", proxy, 2, 1, amp="bf16"),  # not the planner's mode: left out
    ]
    planner = planner_section.planner_rows(rows, "cuda")
    assert [r["net"] for r in planner] == ["mednext_t", "mednextv1_s_k3", "mednextv1_l_k3", "PlainConvUNet"]
    assert planner[0]["ratio"] == pytest.approx(1.1, abs=1e-3) and planner[0]["within_tolerance"]
    assert planner[1]["ratio"] == pytest.approx(8.0 / mp.BYTES_PER_PROXY_UNIT, abs=1e-3)
    assert not planner[1]["within_tolerance"]
    # nnU-Net's model: 560e6 proxy at batch 2 fills 8 GB
    assert planner[3]["estimate_bytes"] == pytest.approx(proxy * 2 * 8e9 / (560e6 * 2))
    advice = " ".join(planner_section.refit_advice(planner, "cuda"))
    fit = (mp.BYTES_PER_PROXY_UNIT * 1.1 + 8.0) / 2  # median of the two rows without checkpointing
    assert f"median {fit:.3f}" in advice
    assert f"OVERHEAD_FACTOR = {fit / mp.BYTES_PER_PROXY_UNIT_AMP:.3f}" in advice
    report = rp.Report(planner=planner)
    assert any("mednextv1_l_k3" in a and "checkpointing" in a for a in rp.attention(report))


def test_planner_rows_on_cpu_use_the_fp32_model() -> None:
    proxy = 1_000_000
    rows = [_matrix_row("mednext_t", proxy, 1, int(proxy * 4.6), amp="fp32"),
            _matrix_row("PlainConvUNet", proxy, 1, 123, amp="fp32")]
    planner = planner_section.planner_rows(rows, "cpu")
    assert planner[0]["estimate_bytes"] == proxy * mp.BYTES_PER_PROXY_UNIT_FP32
    assert planner[0]["ratio"] == pytest.approx(4.6 / mp.BYTES_PER_PROXY_UNIT_FP32, abs=1e-3)
    assert planner[1]["estimate_bytes"] is None and "ratio" not in planner[1]
    assert "median 4.600" in " ".join(planner_section.refit_advice(planner, "cpu"))


def test_report_failures_and_markdown() -> None:
    report = rp.Report(meta={"subset": "CPU subset", "device": "cpu", "command": "x", "date": "d", "seconds": 1,
                             "budget_s": 10, "warmup": 1, "repeats": 1,
                             "nnunet_compiles": {"compiles": False, "why": "cpu"}})
    report.matrix.append(_matrix_row("mednext_t", 10, 1, 0, amp="fp32", params=10, status="fail", reason="boom"))
    report.compile.append({"net": "mednext_t", "config": "2d", "status": "fail", "reason": "no", "warn_only": True})
    report.classify.append({"net": "mednext_cls_t", "config": "32px", "batch": 4, "amp": "fp32", "status": "fail",
                            "reason": "nan"})
    report.skip("x", "because")
    assert report.failures() == ["matrix: mednext_t 3d_fullres fp32: boom", "classify: mednext_cls_t 32px fp32: nan"]
    assert any("warning only" in a for a in rp.attention(report))
    md = rp.render_markdown(report)
    assert "**Verdict: FAIL**" in md and "CPU subset" in md and "* x: because" in md
    assert "| mednext_cls_t | 32px x 4 | fp32 | - | - | - | - | - | fail: nan |" in md


def test_run_check_with_every_section_skipped_still_reports(tmp_path: Path) -> None:
    report = check.run_check(profiles.PROFILES["quick"], torch.device("cpu"), tmp_path, skip=profiles.SECTIONS,
                             log=lambda s: None)
    js, md = rp.write_report(report, tmp_path)
    assert {s["what"] for s in report.skipped} >= {"matrix", "stability", "compile", "routes", "predictor", "classify",
                                                   "nnUNetv2_train"}
    assert "Verdict: PASS" in md.read_text() and js.exists()


# ----------------------------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------------------------


def _doctor(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "doctor", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_doctor_bad_input_is_one_line(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        proc = _doctor("--device", "cuda", cwd=tmp_path)
        assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Traceback" not in proc.stderr
    proc = _doctor("--quick", "--budget-s", "0", cwd=tmp_path)
    assert proc.returncode == 2 and "--budget-s must be positive" in proc.stderr
    wrapper = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--help"],
                             capture_output=True, text=True, timeout=120)
    assert wrapper.returncode == 0 and "--quick" in wrapper.stdout and "--budget-s" in wrapper.stdout
    assert "-o OUT, --out OUT" in wrapper.stdout  # the same -o as every other subcommand


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU subset; a GPU runs the full check (docs/gpu.md)")
def test_doctor_quick_cpu_subset_end_to_end(tmp_path: Path) -> None:
    """What CI runs: the CPU subset at CI size, every network, every section that runs without CUDA."""
    t0 = time.perf_counter()
    proc = _doctor("--quick", "-o", "report", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    data = json.loads((tmp_path / "report" / "device_check.json").read_text())
    assert data["verdict"] == "pass" and data["meta"]["subset"] == "CPU subset"
    combos = {(r["net"], r["config"], r["amp"]) for r in data["matrix"] if r["status"] == "ok"}
    assert combos == {(n, c, a) for n in profiles.NETS for c in ("3d_fullres", "2d") for a in ("fp32", "bf16")}
    assert all(r["losses_finite"] and r["activation_bytes"] > 0 for r in data["matrix"])
    assert [r["net"] for r in data["stability"]] == list(profiles.NETS)
    assert all(r["status"] == "ok" and r["loss_last"] < r["loss_first"] for r in data["stability"])
    ratios = {(r["net"], r["config"]): r.get("ratio") for r in data["planner"]}
    assert ratios[("mednext_t", "2d")] and ratios[("PlainConvUNet", "2d")] is None
    assert [(r["net"], r["status"]) for r in data["compile"]] == [("mednext_t", "ok"), ("mednextv1_l_k3", "ok")]
    assert data["predictor"][0]["status"] == "ok" and data["predictor"][0]["forward_passes"] == 64
    # the classification trainer: both networks' steps (float32 on a CPU), then classify train + predict
    cls = {r["net"] + ("/train" if "classify train" in r["config"] else ""): r for r in data["classify"]}
    assert list(cls) == ["mednext_cls_t", "resnet18", "mednext_cls_t/train"]
    assert all(r["status"] == "ok" for r in cls.values())
    assert cls["resnet18"]["params"] == 11_178_051 and cls["mednext_cls_t"]["amp"] == "fp32"  # 3 channels, 3 classes
    assert cls["mednext_cls_t"]["images_per_s"] == pytest.approx(4 / cls["mednext_cls_t"]["step_s"], rel=0.01)
    assert cls["mednext_cls_t/train"]["epochs"] == 2 and cls["mednext_cls_t/train"]["predictions"] == 24
    skipped = " ".join(s["what"] for s in data["skipped"])
    assert "fp16 + GradScaler" in skipped and "DDP" in skipped and "inductor" in skipped
    md = (tmp_path / "report" / "device_check.md").read_text()
    assert "**Verdict: PASS**" in md and "CPU subset" in md and "## Skipped" in md
    # the routes: every route of mednext_t on the 3D plan next to the U-Net's, the fastest one named with its setting
    routes = {(r["net"], r["route"]): r for r in data["routes"]}
    assert {r["config"] for r in data["routes"]} == {"3d_fullres"}
    assert {route for net, route in routes if net == "mednext_t"} == {
        "default", "recompute_off", "channels_last", "compiled", "compiled_recompute_off"}
    assert {route for net, route in routes if net == "PlainConvUNet"} == {"default", "channels_last", "compiled"}
    assert all(r["status"] == "ok" and r["mem_bytes"] > 0 for r in data["routes"]), data["routes"]
    mt = routes[("mednext_t", "recompute_off")]
    assert mt["time_vs_unet"] == pytest.approx(mt["s_per_it"] / routes[("PlainConvUNet", "default")]["s_per_it"],
                                               abs=2e-3)
    assert mt["saved_bytes"] > routes[("mednext_t", "default")]["saved_bytes"]  # recompute keeps only branch inputs
    assert [b["net"] for b in data["routes_best"]] == ["mednext_t", "mednextv1_s_k3"]
    assert not any(b["choice"].startswith("compiled") for b in data["routes_best"])  # nnU-Net never compiles on CPU
    assert "## GPU routes ready to prove" in md and "**Defaults are unchanged**" in md
    assert "| mednext_t | 3d_fullres | recompute_off | `NNUNETV2_MEDNEXT_RECOMPUTE=0` |" in md
    ratio_row = next(ln for ln in md.splitlines() if ln.startswith("| mednext_cls_t | 32px x 4 |"))
    ratio = cls["mednext_cls_t"]["step_s"] / cls["resnet18"]["step_s"]
    assert ratio_row.split("|")[7].strip() == f"{ratio:.2f}"
    assert "Traceback" not in proc.stdout + proc.stderr
    print(f"doctor --quick took {time.perf_counter() - t0:.0f} s")

    again = _doctor("--quick", "--out", "report", cwd=tmp_path)  # --out, the long form of -o  # results are never overwritten silently
    assert again.returncode == 2 and "already holds a device check report" in again.stderr


def test_synthetic_topology_follows_nnunets_default_planner() -> None:
    from nnunetv2_mednext.doctor.plans import plain_unet_arch_kwargs, synthetic_topology

    t3 = synthetic_topology([128, 128, 128])  # nnU-Net: pool until the edge is 4, features capped at 320 in 3D
    assert t3["n_stages"] == 6 and t3["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert t3["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 5 and t3["conv_op"].endswith("Conv3d")
    t2 = synthetic_topology([256, 256])
    assert t2["n_stages"] == 7 and t2["features_per_stage"][-1] == 512
    kwargs, imports = plain_unet_arch_kwargs(t2)
    assert kwargs["n_conv_per_stage_decoder"] == [2] * 6 and kwargs["norm_op"].endswith("InstanceNorm2d")
    assert set(imports) == {"conv_op", "norm_op", "dropout_op", "nonlin"}
    with pytest.raises(ValueError, match="2 or 3 axes"):
        synthetic_topology([64])
