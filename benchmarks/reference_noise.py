"""How exactly does "the host's fake-quant model" define what an int8 device should read?

    .venv/bin/python benchmarks/reference_noise.py [--run-dir runs/demo] [--lines 300] [--json out.json]

`toolkit deploy --verify` compares the device's int8 runtime with the exported fake-quant model run
on the host by Paddle Inference (oneDNN). That model computes in float: each quantized layer
multiplies dequantized values (integer x scale), so its sums round differently from the device's
exact int32 sums, and a last-bit difference in front of the next quantizer can move a value by a
whole quantization step. This runs the same exported models of a main job on the same real-page
lines (the judged dataset's rec eval split, one thread) with two correct float implementations,
Paddle Inference with oneDNN and Paddle's own CPU kernels without IR passes, and prints side by
side how many lines they read identically and the accuracy of each: the agreement that a device
can be expected to reach against either. A third row rewrites the fake-quant program into the
integer domain as Lite's ARM int8 kernels compute (`integer_domain`): the float ops between
quantizers still round differently. About 8 minutes for 300 lines on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _round_away(a):
    import numpy as np

    return np.sign(a) * np.floor(np.abs(a) + 0.5)  # ties away from zero: Paddle's round_type 1, Lite's FCVTAS


def integer_domain(src: Path, dst: Path) -> int:
    """Rewrite an exported fake-quant program so that every quantized layer multiplies integers:
    the activation's quantize-dequantize output times 127/s, rounded (its integer again); the weight
    replaced by its integer values (per channel, round(w * 127 / max|w_c|)); then one multiply of
    the conv / matmul output by s * max|w_c| / 127^2 per channel, as Lite's int8 kernels scale
    their int32 sums. Integer-valued float32 sums are exact below 2^24. Returns the layers done."""
    import numpy as np

    from toolkit.engine import paddle

    pd = paddle()
    pd.enable_static()
    exe, scope = pd.static.Executor(pd.CPUPlace()), pd.static.global_scope()
    prog, feeds, fetches = pd.static.load_inference_model(str(src / "inference"), exe)
    block = prog.global_block()
    done = 0
    for wop in [op for op in block.ops if op.type == "fake_channel_wise_quantize_dequantize_abs_max"]:
        w_name, wd_name, axis = wop.input("X")[0], wop.output("Out")[0], wop.attr("quant_axis")
        w = np.array(scope.find_var(w_name).get_tensor())
        sw = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis))
        shape = [1] * w.ndim
        shape[axis] = -1
        scope.find_var(w_name).get_tensor().set(_round_away(w / np.where(sw == 0, 1, sw).reshape(shape) * 127).astype("float32"), pd.CPUPlace())
        (layer,) = [op for op in block.ops if wd_name in op.input_arg_names]
        layer._rename_input(wd_name, w_name)
        made = {o: op for op in block.ops for o in op.output_arg_names}
        (act,) = [n for n in layer.input_arg_names if n in made and made[n].type.startswith("fake_quantize_dequantize")]
        s = float(np.array(scope.find_var(made[act].input("InScale")[0]).get_tensor()).reshape(-1)[0])
        scaled, ints, acc = f"{act}.int{done}.scaled", f"{act}.int{done}", f"{w_name}.acc"
        for name in (scaled, ints):
            block.create_var(name=name, dtype="float32", shape=block.var(act).shape)
        at = list(block.ops).index(layer)
        block._insert_op(at, type="scale", inputs={"X": [act]}, outputs={"Out": [scaled]}, attrs={"scale": 127.0 / s, "bias": 0.0, "bias_after_scale": True})
        block._insert_op(at + 1, type="round", inputs={"X": [scaled]}, outputs={"Out": [ints]})
        layer._rename_input(act, ints)
        out = layer.output("Output" if "Output" in layer.output_names else "Out")[0]
        block.create_var(name=acc, dtype="float32", shape=block.var(out).shape)
        layer._rename_output(out, acc)
        factor = f"{w_name}.int_scale"
        block.create_var(name=factor, dtype="float32", shape=list(sw.shape), persistable=True)
        scope.var(factor).get_tensor().set((sw.astype("float64") * s / 127.0 ** 2).astype("float32"), pd.CPUPlace())
        block._insert_op(list(block.ops).index(layer) + 1, type="elementwise_mul", inputs={"X": [acc], "Y": [factor]}, outputs={"Out": [out]},
                         attrs={"axis": 1 if "conv" in layer.type else -1})
        block._remove_op(list(block.ops).index(wop))
        done += 1
    block._sync_with_cpp()
    pd.static.save_inference_model(str(dst / "inference"), [block.var(n) for n in feeds], fetches, exe, program=prog)
    pd.disable_static()
    return done


def _compare(model_dir: Path, samples: list, cfg: dict) -> dict:
    """One model on the lines with oneDNN and with Paddle's native kernels (one thread each)."""
    from toolkit.data.images import read_image
    from toolkit.runtime_parity import decode, rec_input
    from toolkit.stages.evaluate import infer, predictor

    preds = {k: predictor(model_dir, threads=1, optimize=o) for k, o in (("oneDNN", True), ("native", False))}
    texts: dict[str, list[str]] = {k: [] for k in preds}
    for s in samples:
        x = rec_input(read_image(s.image), cfg)
        for k, p in preds.items():
            texts[k].append(decode(infer(p, x), cfg)[0])
    labels = [s.text for s in samples]
    same = [a == b for a, b in zip(texts["oneDNN"], texts["native"])]
    return {"lines": len(samples), "identical": sum(same),
            "acc": {k: round(sum(t == y for t, y in zip(v, labels)) / len(labels), 4) for k, v in texts.items()},
            "differ": [{"oneDNN": a, "native": b} for a, b, ok in zip(texts["oneDNN"], texts["native"], same) if not ok][:10]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, default=REPO / "runs" / "demo")
    ap.add_argument("--lines", type=int, default=300)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from toolkit.cli.app import datasets, sources
    from toolkit.data.datasets import judged, load_split, open_datasets
    from toolkit.rundir import RunDir

    run = RunDir(args.run_dir, create=False)
    cfg = sources(run, ["rec"])["rec"].load_config()
    ds = judged(open_datasets(datasets(run, None)), "rec")
    samples = load_split("rec", ds, "eval", cfg, skip_bad=True)[: args.lines]
    results = {}
    with tempfile.TemporaryDirectory(prefix="reference-noise-") as work:
        integer_domain(run.quant_model("rec"), Path(work))
        for model, d in (("float", run.float_model("rec")), ("fake-quant", run.quant_model("rec")), ("integer", Path(work))):
            results[model] = _compare(d, samples, cfg)
    print(f"rec on {len(samples)} lines of {ds.name} ({ds.kind}), run {args.run_dir}\n")
    print(f"{'model':<12}{'identical lines':>18}{'acc oneDNN':>14}{'acc native':>14}   (integer: the fake-quant program rewritten to integer sums)")
    for model, r in results.items():
        print(f"{model:<12}{r['identical']:>9}/{r['lines']:<8}{r['acc']['oneDNN']:>14.4f}{r['acc']['native']:>14.4f}")
    for d in results["fake-quant"]["differ"][:5]:
        print(f"  oneDNN: {d['oneDNN']!r}\n  native: {d['native']!r}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
