"""CPU inference time per case through nnU-Net's own predictor: MedNeXt against nnU-Net's U-Net, per backend.

For each row (a trainer on nnU-Net's plans: ``nnUNetTrainerMedNeXt_budget`` and ``nnUNetTrainerMedNeXtRefUNet_budget``,
which builds nnU-Net's own U-Net from the plans), each backend, mirroring on (nnU-Net's default) and off
(``--disable_tta``) and each thread count, one fresh process runs ``nnunetv2-mednext predict`` (that is,
nnUNetv2_predict's entry point) over the same cases in nnU-Net's sequential mode (``-npp 0 -nps 0``) and times
nnU-Net's three stages per case: preprocessing (``run_case``: read, crop, resample, normalise), sliding window
(``predict_logits_from_preprocessed_data``: the network, Gaussian weighting, mirroring) and resampling/export
(``export_prediction_from_logits``). Backends: ``nnunet`` is nnU-Net's own loop (``--backend torch`` with
``NNUNETV2_MEDNEXT_MIRROR_BATCH=1``, the default), ``torch-batched`` batches the mirrored copies (``=8``), ``onnxruntime``/``openvino`` run the
fold's ONNX export (made before timing; its time is reported apart). Threads: ``nnUNet_def_n_proc`` and
``OMP_NUM_THREADS``. Timing does not depend on accuracy: the models are trained briefly (``--budget``).

Data: ``hippocampus`` (MSD Task04, ``3d_fullres``), ``acdc`` (SSL4MIS HDF5 copy, ``2d``), or ``synthetic`` (a tiny
2D set, for the test). Writes ``OUT/bench_inference.json`` and ``OUT/bench_inference.md``::

    python benchmarks/bench_inference.py --dataset hippocampus --cases 4 --threads 1 2 --out runs/bench_inference
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = {"mednext": "nnUNetTrainerMedNeXt_budget", "unet": "nnUNetTrainerMedNeXtRefUNet_budget"}
BACKENDS = ("nnunet", "torch-batched", "onnxruntime", "openvino")
#: dataset -> (id, configuration)
DATASETS = {"hippocampus": (4, "3d_fullres"), "acdc": (27, "2d"), "synthetic": (976, "2d")}


def _shared() -> Path:
    return Path(os.environ.get("NNUNETV2_MEDNEXT_SHARED", REPO.parent / "shared"))


def prepare(args: argparse.Namespace, runner) -> tuple[str, Path]:
    """Convert, plan and briefly train what is missing; returns the dataset name and the folder of timed cases."""
    ds, config = args.dataset_id, DATASETS[args.dataset][1]
    env = runner.env()
    if not list(runner.raw.glob(f"Dataset{ds:03d}_*")):
        if args.dataset == "synthetic":
            from nnunetv2_mednext.nnunet.synthetic import make_synthetic_2d

            make_synthetic_2d(runner.raw, ds, n_train=6, n_test=max(1, args.cases), size=32)
        elif args.dataset == "hippocampus":
            subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "convert", "msd",
                            str(_shared() / "data" / "msd_hippocampus"), "--out", str(runner.raw), "--max-cases",
                            str(args.train_cases), "-q"], check=True, env=env)
        else:
            subprocess.run([sys.executable, "-m", "nnunetv2_mednext", "convert", "acdc",
                            str(_shared() / "data" / "acdc_ssl4mis_h5"), "--out", str(runner.raw), "--id", str(ds),
                            "--max-per-split", str(max(2, args.train_cases // 2)), "-q"], check=True, env=env)
    name = runner.dataset_name(ds)
    if not (runner.preprocessed / name / "nnUNetPlans.json").exists():
        runner.plan_and_preprocess(ds, (config,))
    for row in args.rows:
        fold = runner.results / name / f"{args.trainer[row]}__nnUNetPlans__{config}" / "fold_0"
        if not (fold / "checkpoint_final.pth").exists():
            runner.train(ds, config, 0, args.trainer[row], extra_env={"NNUNETV2_MEDNEXT_BUDGET": args.budget,
                                                               "NNUNETV2_MEDNEXT_FINAL_VALIDATION": "0"})
    inputs = runner.workdir / "bench_inputs"
    if not inputs.is_dir():
        test = runner.raw / name / "imagesTs"
        source = test if test.is_dir() and any(test.iterdir()) else runner.raw / name / "imagesTr"
        cases = sorted({p.name.rsplit("_", 1)[0] for p in source.iterdir()})[: args.cases]
        inputs.mkdir()
        for p in sorted(source.iterdir()):
            if p.name.rsplit("_", 1)[0] in cases:
                shutil.copy(p, inputs / p.name)
    return name, inputs


def worker(spec: dict) -> None:
    """One timed prediction (in its own process): nnU-Net's entry point with timers on its three stages."""
    from nnunetv2.inference import predict_from_raw_data as nnpred
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    from nnunetv2_mednext.cli.cmd_predict import full_parser
    from nnunetv2_mednext.nnunet.deploy.predict import run

    times: dict[str, list[float]] = {"preprocessing": [], "sliding_window": [], "export": []}

    def timed(key, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                times[key].append(time.perf_counter() - t0)
        return wrapper

    DefaultPreprocessor.run_case = timed("preprocessing", DefaultPreprocessor.run_case)
    nnpred.nnUNetPredictor.predict_logits_from_preprocessed_data = timed(
        "sliding_window", nnpred.nnUNetPredictor.predict_logits_from_preprocessed_data)
    nnpred.export_prediction_from_logits = timed("export", nnpred.export_prediction_from_logits)
    t0 = time.perf_counter()
    run(full_parser("bench").parse_args(spec["argv"]))
    wall = time.perf_counter() - t0
    n = len(times["sliding_window"])
    result = {k: sum(v) / max(1, n) for k, v in times.items() if k != "load"}
    per_case = sum(result.values())
    # start-up: imports, nnU-Net's model loading, the export check, inference sessions (once per run, not per case)
    result.update(cases=n, wall=wall, per_case=per_case, startup=wall - n * per_case)
    Path(spec["result"]).write_text(json.dumps(result))


def measure(args: argparse.Namespace, runner, name: str, inputs: Path) -> list[dict]:
    from nnunetv2_mednext.nnunet.deploy.onnx_export import export_model

    ds, config = args.dataset_id, DATASETS[args.dataset][1]
    out = []
    for row in args.rows:
        folder = runner.results / name / f"{args.trainer[row]}__nnUNetPlans__{config}"
        export_s = None
        if {"onnxruntime", "openvino"} & set(args.backends):
            t0 = time.perf_counter()
            export_model(folder, [0], log=lambda s: None)
            export_s = time.perf_counter() - t0
        for backend in args.backends:
            for tta in args.tta:
                for threads in args.threads:
                    tag = f"{row}_{backend}_{tta}_{threads}t"
                    pred = runner.workdir / "bench_pred" / tag
                    shutil.rmtree(pred, ignore_errors=True)
                    argv = ["-i", str(inputs), "-o", str(pred), "-d", str(ds), "-c", config, "-tr", args.trainer[row], "-f",
                            "0", "-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar",
                            "--backend", "torch" if backend in ("nnunet", "torch-batched") else backend]
                    if tta == "off":
                        argv.append("--disable_tta")
                    spec = {"argv": argv, "result": str(runner.workdir / "logs" / f"bench_{tag}.json")}
                    env = {"nnUNet_def_n_proc": str(threads), "OMP_NUM_THREADS": str(threads),
                           "MKL_NUM_THREADS": str(threads), "NNUNETV2_MEDNEXT_MIRROR_BATCH": "8" if backend == "torch-batched" else "1"}
                    runner.run_argv([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                                    f"bench_{tag}", extra_env=env, what=f"timed prediction {tag}")
                    res = json.loads(Path(spec["result"]).read_text())
                    if res["cases"] == 0:
                        raise SystemExit(f"error: no case was predicted from {inputs}; remove it to have it remade")
                    out.append({"row": row, "trainer": args.trainer[row], "backend": backend, "tta": tta, "threads": threads,
                                "export_s": export_s, "pred": str(pred), **res})
                    print(f"{tag}: {res['per_case']:.2f} s/case", flush=True)
    for r in out:  # masks against the same model's nnU-Net torch loop, when that backend was run
        ref = next((q for q in out if q["row"] == r["row"] and q["backend"] == "nnunet" and q["tta"] == r["tta"]), None)
        r["min_dice"] = None if ref is None else min_dice(Path(r["pred"]), Path(ref["pred"]))
    return out


def min_dice(pred: Path, ref: Path) -> float:
    """Lowest per-case Dice (mean over the foreground labels of either mask) between two folders of predicted masks."""
    import numpy as np
    import SimpleITK as sitk

    from nnunetv2_mednext.evaluation.metrics import dice

    worst = 1.0
    for f in sorted(q for q in ref.iterdir() if not q.name.endswith((".json", ".pkl", ".npz"))):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / f.name)))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
        labels = sorted(set(np.unique(a)) | set(np.unique(b)) - {0})
        scores = [dice(a == k, b == k) for k in labels]
        worst = min(worst, float(np.mean(scores)) if scores else 1.0)
    return worst


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "uptime not available"


def table(results: list[dict], meta: dict) -> str:
    lines = [f"# CPU inference: {meta['dataset']} ({meta['configuration']}), {meta['cases']} case(s)", "",
             f"Command: `{meta['command']}`", "",
             f"Machine: {meta['cpu']}, {meta['cores']} cores; load before: {meta['uptime_before']}; "
             f"after: {meta['uptime_after']}", "",
             "s/case = preprocessing + sliding window + resampling/export (nnU-Net's stages, mean per case); start-up "
             "(imports, model loading, export check, sessions) is paid once per run. Dice: lowest per-case Dice (mean over "
             "labels) against the same model's masks from nnU-Net's own torch loop, same mirroring.", "",
             "| model | backend | mirroring | threads | s/case | preprocessing | sliding window | resampling+export | "
             "start-up (s) | Dice vs nnunet |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['row']} | {r['backend']} | {r['tta']} | {r['threads']} | {r['per_case']:.2f} | "
                     f"{r['preprocessing']:.2f} | {r['sliding_window']:.2f} | {r['export']:.2f} | {r['startup']:.1f} | "
                     f"{'-' if r.get('min_dice') is None else format(r['min_dice'], '.4f')} |")
    lines += ["", *ratio_lines(results)]
    return "\n".join(lines) + "\n"


def ratio_lines(results: list[dict]) -> list[str]:
    """Per mirroring setting and thread count: MedNeXt's fastest backend against U-Net with nnU-Net's own loop."""
    lines = []
    for tta in dict.fromkeys(r["tta"] for r in results):
        for threads in dict.fromkeys(r["threads"] for r in results):
            base = [r for r in results if r["row"] == "unet" and r["backend"] == "nnunet" and r["tta"] == tta
                    and r["threads"] == threads]
            mine = [r for r in results if r["row"] == "mednext" and r["tta"] == tta and r["threads"] == threads]
            if base and mine:
                best = min(mine, key=lambda r: r["per_case"])
                lines.append(f"* mirroring {tta}, {threads} thread(s): MedNeXt with {best['backend']} "
                             f"{best['per_case']:.2f} s/case = {best['per_case'] / base[0]['per_case']:.2f} x U-Net "
                             f"with nnU-Net's torch loop ({base[0]['per_case']:.2f} s/case)")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--dataset", choices=tuple(DATASETS), default="hippocampus")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench_inference")
    p.add_argument("--cases", type=int, default=4, help="timed cases (default 4)")
    p.add_argument("--train-cases", type=int, default=20, help="cases converted for the brief training (default 20)")
    p.add_argument("--budget", default="1,10,1", help="EPOCHS,ITERS,VAL_ITERS of the brief training (default 1,10,1)")
    p.add_argument("--rows", nargs="+", choices=tuple(ROWS), default=list(ROWS))
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--tta", nargs="+", choices=("on", "off"), default=["on", "off"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--dataset-id", type=int, help="nnU-Net dataset id (default: 4 hippocampus, 27 acdc, 976 synthetic)")
    p.add_argument("--mednext-trainer", default=ROWS["mednext"], help=f"MedNeXt row's trainer (default {ROWS['mednext']})")
    p.add_argument("--unet-trainer", default=ROWS["unet"], help=f"U-Net row's trainer (default {ROWS['unet']})")
    args = p.parse_args(argv)
    args.dataset_id = args.dataset_id or DATASETS[args.dataset][0]
    args.trainer = {"mednext": args.mednext_trainer, "unet": args.unet_trainer}
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    from nnunetv2_mednext.nnunet.pipeline import NnUNetRunner

    if args.dataset != "synthetic":
        src = _shared() / "data" / {"hippocampus": "msd_hippocampus", "acdc": "acdc_ssl4mis_h5"}[args.dataset]
        if not src.is_dir():
            sys.exit(f"error: {src} not found; set NNUNETV2_MEDNEXT_SHARED to the folder that holds data/")
    runner = NnUNetRunner(args.out)
    name, inputs = prepare(args, runner)
    before = _uptime()
    results = measure(args, runner, name, inputs)
    given = list(argv if argv is not None else sys.argv[1:])
    shown = [("OUT" if i and given[i - 1] == "--out" else a) for i, a in enumerate(given)]
    meta = {"dataset": args.dataset, "configuration": DATASETS[args.dataset][1], "cases": args.cases,
            "command": "python benchmarks/bench_inference.py " + " ".join(shlex.quote(a) for a in shown),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "uptime_before": before,
            "uptime_after": _uptime()}
    (args.out / "bench_inference.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (args.out / "bench_inference.md").write_text(table(results, meta))
    print(table(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
