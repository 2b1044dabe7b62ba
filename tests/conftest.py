"""Test-session settings and helpers shared by several test modules.

One intra-op thread everywhere (subprocess trainings included): nnU-Net's ``-device cpu`` uses every core, and on a
shared 2-core machine OpenMP spin-waiting slows CPU runs down by an order of magnitude. The MedNeXt trainers honour
``OMP_NUM_THREADS`` (``trainers/threads.py``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

#: threads per test process and per subprocess it starts (NNUNETV2_MEDNEXT_TEST_THREADS overrides; default 1)
TEST_THREADS = os.environ.get("NNUNETV2_MEDNEXT_TEST_THREADS", "1")
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = TEST_THREADS  # pinned, not defaulted: an exported 8 would oversubscribe a 2-core machine
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def _pin_torch_threads() -> None:
    import torch

    torch.set_num_threads(int(TEST_THREADS))

#: one wording for every skip that needs the project's shared data folder
SHARED = Path(os.environ.get("NNUNETV2_MEDNEXT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def shared_data(name: str) -> Path:
    """``$NNUNETV2_MEDNEXT_SHARED/data/<name>`` (a real dataset; docs/datasets.md says where each comes from)."""
    return SHARED / "data" / name


def requires_shared_data(name: str) -> pytest.MarkDecorator:
    """Skip, with the one wording used everywhere, when the real dataset ``name`` is absent."""
    path = shared_data(name)
    return pytest.mark.skipif(not path.is_dir(), reason=f"real data not present: {path} (set NNUNETV2_MEDNEXT_SHARED "
                                                       "to the folder that holds data/)")


def _can_confine() -> str | None:
    """``None`` when private mount namespaces work here (root + util-linux unshare), else why not."""
    try:
        proc = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare not usable: {e}"
    return None if proc.returncode == 0 else f"unshare -m refused: {proc.stderr.strip()[:200]}"


@pytest.fixture(scope="session")
def confined() -> Callable[..., subprocess.CompletedProcess]:
    """Run a command in a private mount namespace where ``folder`` is read-only (``mode="ro"``) or a tiny tmpfs
    (``mode="full"``, ``size`` bytes: a disk that fills up). Root ignores permission bits, so this is how a test
    meets a read-only or full disk; the mounts vanish with the command. Prints ``ls -a folder`` after it."""
    reason = _can_confine()
    if reason:
        pytest.skip(reason)

    def run(cmd: Sequence[str], folder: Path, mode: str = "ro", size: int = 65536, env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
        folder.mkdir(parents=True, exist_ok=True)
        q = shlex.quote(str(folder))
        if mode == "ro":
            setup = f"mount --bind {q} {q} && mount -o remount,ro,bind {q}"
        else:
            setup = f"mount -t tmpfs -o size={int(size)} tmpfs {q}"
        script = f'{setup} && "$@"; rc=$?; echo "LS: $(ls -A {q} | tr "\\n" " ")"; exit $rc'
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *map(str, cmd)], capture_output=True,
                              text=True, env=env, timeout=timeout)

    return run


def autograd_nodes(t: torch.Tensor) -> set[str]:
    """Class names of every autograd node behind ``t`` (which fused or recompute nodes a forward ran)."""
    seen, names, stack = set(), set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        stack.extend(f for f, _ in fn.next_functions)
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the end-to-end (``slow``) tests first: with ``-n 2`` (README's command) the long runs then overlap with
    each other and the many short tests fill the gaps, instead of one worker finishing alone on a long tail."""
    def rank(item: pytest.Item) -> int:  # real-data runs are the longest of the slow ones
        if item.get_closest_marker("slow") is None:
            return 2
        return 0 if item.get_closest_marker("shared_data") is not None else 1

    items.sort(key=rank)  # stable: file order within each group
