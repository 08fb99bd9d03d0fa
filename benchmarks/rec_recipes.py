"""Where rec's int8 accuracy goes, recipe by recipe, on real document pages and synthetic lines.

    .venv/bin/python benchmarks/rec_recipes.py [--work runs/recipes] [--steps 200] [--json out.json]
                                               [--hold-out PACKAGE] [--recipe NAME ...]

Every recipe starts from the shipped PP-OCRv4 rec weights, trains (or not) for the same steps
with the same batches, and is measured with Paddle Inference on the same eval lines: the real-page
eval split (`toolkit data real`, every other line) and 300 lines of the synthetic eval split;
exact-line accuracy, the same ignoring spaces, character error rate. Recipes:

  float                 the shipped model
  abs-max ranges        every layer int8, PaddleSlim's moving-average abs-max activation ranges, no training
  calibrated            every layer int8, MSE activation ranges from the float network, no training
  fine-tune only        the float model trained with CTC on real + synthetic labels (no fake quant): drift
  QAT, CTC, synthetic   calibrated, then QAT with CTC on synthetic labels only
  QAT, distillation     calibrated, then QAT with KL distillation to the float model's per-step distributions
  QAT, CTC + distill    both terms
  QAT, CTC (default)    calibrated, then QAT with CTC on real + synthetic labels: what `toolkit quantize` does

`--hold-out PACKAGE` (e.g. nauty-doc) asks how a recipe does on a document it never saw: no line
of that manual is trained on, and its "real" figure is on every line of it (train and eval splits),
the way a user's own pages are new to the shipped recipe. `--recipe NAME` (repeat) runs only those.

About 30 minutes on 2 cores at 40 steps; each recipe's model is evaluated in a fresh process.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RECIPES = {  # name: (fake quant, activation ranges, train steps?, CTC weight, KL weight, data)
    "float": None,
    "abs-max ranges": (True, "moving_average", False, 1.0, 0.0, ("real", "synth")),
    "calibrated": (True, "mse", False, 1.0, 0.0, ("real", "synth")),
    "fine-tune only": (False, None, True, 1.0, 0.0, ("real", "synth")),
    "QAT, CTC, synthetic": (True, "mse", True, 1.0, 0.0, ("synth",)),
    "QAT, distillation": (True, "mse", True, 0.0, 1.0, ("real", "synth")),
    "QAT, CTC + distill": (True, "mse", True, 1.0, 1.0, ("real", "synth")),
    "QAT, CTC (default)": (True, "mse", True, 1.0, 0.0, ("real", "synth")),
}


def data(work: Path) -> dict[str, Path]:
    from toolkit.data.realpages import build_real_pages
    from toolkit.data.synth import synth_dataset
    from toolkit.runners.envs import toolkit_home

    synth_dataset(work / "synth", det_train=0, det_eval=0, rec_train=800, rec_eval=500, seed=0)
    build_real_pages(work / "real", toolkit_home() / "downloads")
    return {"real": work / "real", "synth": work / "synth"}


def document(sample) -> str:
    """The Debian package a real-page line comes from (images/<package>_p<page>_<line>.jpg)."""
    return Path(sample.image).name.rsplit("_p", 1)[0]


def train(name: str, recipe: tuple, dirs: dict, out: Path, steps: int, hold_out: str | None = None) -> None:
    """Build, (calibrate,) (train,) export one recipe's model into `out`."""
    from toolkit.data.datasets import load_split, open_dataset
    from toolkit.engine import paddle
    from toolkit.jobs import QuantOptions
    from toolkit.models.build import build_model
    from toolkit.models.sources import resolve_source
    from toolkit.stages.export import prepare_for_lite
    from toolkit.stages.quantize.ops import calibrate, freeze_norms, wrap_qat
    from toolkit.stages.quantize.search import CALIB_STEP0
    from toolkit.stages.quantize.settings import settings_for
    from toolkit.stages.quantize.train import learning_rate
    from toolkit.tasks import get_task

    pd = paddle()
    task, src = get_task("rec"), resolve_source("rec", None)
    loaded = build_model(src)
    model, cfg = loaded.model, loaded.config
    quant, ranges, trains, ctc, kl, sets = recipe
    s = settings_for("rec", cfg, src.config, QuantOptions()).model_copy(update={"steps": steps, "label_weight": ctc, "distill_weight": kl})
    teacher = copy.deepcopy(model) if kl else None
    if teacher is not None:
        teacher.eval()
    samples = [x for d in sets for x in load_split("rec", open_dataset(dirs[d]), "train", cfg, False) if d != "real" or document(x) != hold_out]
    batches = task.training_batches(samples, cfg, s, 0)
    quanter = None
    if quant:
        quanter, _ = wrap_qat(model, s, False)
        calibrate(model, [batches(CALIB_STEP0 + i)["image"] for i in range(s.calib_batches)], ranges)
    if trains:
        freeze_norms(model)
        opt = pd.optimizer.Adam(learning_rate=s.learning_rate, parameters=[p for p in model.parameters() if not p.stop_gradient])
        loss_fn = task.loss(cfg, s, teacher)
        for step in range(steps):
            opt.set_lr(learning_rate(s, step))
            b = {k: pd.to_tensor(v) for k, v in batches(step).items()}
            loss_fn(model(b["image"]), b).backward()
            opt.step()
            opt.clear_grad()
    model.eval()
    spec = task.input_spec(cfg)
    if quanter is not None:
        quanter.save_quantized_model(model, str(out / "inference"), input_spec=spec)
    else:
        pd.jit.save(pd.jit.to_static(model, input_spec=spec, full_graph=True), str(out / "inference"))
    prepare_for_lite(out)


def evaluate(model_dir: Path, dirs: dict, hold_out: str | None = None) -> dict:
    from toolkit.data.datasets import load_split, open_dataset
    from toolkit.models.sources import resolve_source
    from toolkit.stages.evaluate import infer, predictor
    from toolkit.tasks import get_task

    task, cfg = get_task("rec"), resolve_source("rec", None).load_config()
    pred = predictor(model_dir)
    out = {}
    for name, cut in (("real", slice(None, None, 2)), ("synth", slice(0, 300))):
        if name == "real" and hold_out:  # every line of the held-out manual; loading a split decodes all its images
            samples = [x for split in ("train", "eval") for x in load_split("rec", open_dataset(dirs[name]), split, cfg, False)
                       if document(x) == hold_out]
            if not samples:
                raise SystemExit(f"--hold-out {hold_out}: no real-page line comes from that package")
        else:
            samples = load_split("rec", open_dataset(dirs[name]), "eval", cfg, False)[cut]
        outs, _ = task.run(lambda x: infer(pred, x), samples, cfg)
        sc = task.score(outs, samples, cfg)
        out[name] = {k: sc[k] for k in ("acc", "acc_ignore_space", "cer", "lines")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "recipes")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--hold-out", metavar="PACKAGE", help="train on no line of this manual and measure on all of its lines")
    ap.add_argument("--recipe", action="append", choices=list(RECIPES), help="run only this recipe (repeat)")
    ap.add_argument("--one", help=argparse.SUPPRESS)   # internal: train and evaluate one recipe in this process
    args = ap.parse_args()
    dirs = data(args.work / "data")
    if args.one:
        out = args.work / "models" / args.one.replace(" ", "_").replace(",", "").replace("+", "and").replace("(", "").replace(")", "")
        if RECIPES[args.one] is not None:
            out.mkdir(parents=True, exist_ok=True)
            train(args.one, RECIPES[args.one], dirs, out, args.steps, args.hold_out)
        else:
            from toolkit.models.sources import resolve_source

            out = resolve_source("rec", None).inference_dir
        print(json.dumps(evaluate(out, dirs, args.hold_out)))
        return
    results = {}
    for name in ["float"] + [r for r in RECIPES if r != "float" and r in (args.recipe or RECIPES)]:
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--steps", str(args.steps), "--one", name]
                           + (["--hold-out", args.hold_out] if args.hold_out else []), capture_output=True, text=True, check=True)
        results[name] = {**json.loads(r.stdout.strip().splitlines()[-1]), "seconds": round(time.monotonic() - t0)}
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    real, synth = results["float"]["real"], results["float"]["synth"]
    seen = f"every line of {args.hold_out}, a manual no recipe trained on" if args.hold_out else "real document pages"
    print(f"\nrec exact-line accuracy ({args.steps} steps; real: {real['lines']} lines, {seen}; synthetic: {synth['lines']} lines)\n")
    print(f"{'recipe':<24}{'real':>8}{'drop':>7}{'no spaces':>11}{'CER':>8}{'synth':>9}{'drop':>7}")
    for name, r in results.items():
        a, b = r["real"], r["synth"]
        print(f"{name:<24}{a['acc']:>8.3f}{100 * (real['acc'] - a['acc']):>7.1f}{a['acc_ignore_space']:>11.3f}{a['cer']:>8.4f}"
              f"{b['acc']:>9.3f}{100 * (synth['acc'] - b['acc']):>7.1f}")


if __name__ == "__main__":
    main()
