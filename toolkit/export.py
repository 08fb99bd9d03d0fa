"""Stage 2: export inference models (.pdmodel + .pdiparams, the form opt accepts).

The float baseline is exported from the same dygraph model QAT starts from, and the
quantized model as PaddleOCR's quant.py does it: a fresh model wrapped with QAT *without*
PACT, the trained state loaded, eval mode, `save_quantized_model` in the fake-quant format
that Paddle Lite reads.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from toolkit.errors import ToolkitError
from toolkit.models import LoadedModel, ModelSource, build_model, input_spec
from toolkit.rundir import RunDir, atomic_dir, fingerprint, stage_key


@dataclass
class ExportJob:
    task: str
    source: ModelSource


def save_float(loaded: LoadedModel, out_dir: Path) -> Path:
    """paddle.jit.save the float dygraph model into `out_dir` atomically."""
    from toolkit.engine import paddle

    pd = paddle()
    loaded.model.eval()
    static = pd.jit.to_static(loaded.model, input_spec=input_spec(loaded.task), full_graph=True)
    with atomic_dir(out_dir) as tmp:
        pd.jit.save(static, str(tmp / "inference"))
    return out_dir


def save_quantized(source: ModelSource, qat_state: Path, settings: dict, out_dir: Path) -> Path:
    """Rebuild the QAT-wrapped model (PACT off), load the trained state, save the fake-quant model."""
    from paddleslim.dygraph.quant import QAT

    from toolkit.engine import paddle
    from toolkit.quantize import qat_config
    from toolkit.models import skip_quant_layers

    pd = paddle()
    loaded = build_model(source, load_weights=False)
    skip_quant_layers(loaded.model, settings["skip_layers"])
    quanter = QAT(config=qat_config(settings, pact=False))
    quanter.quantize(loaded.model)
    state = pd.load(str(qat_state))
    own = loaded.model.state_dict()
    # PACT adds clip parameters the export model has not; everything else must match.
    missing = [k for k in own if k not in state]
    if missing:
        raise ToolkitError(f"{qat_state} does not fit the model ({len(missing)} tensors missing, e.g. {missing[0]})",
                           hint="re-run `toolkit quantize` for this run directory")
    loaded.model.set_state_dict({k: v for k, v in state.items() if k in own})
    loaded.model.eval()
    with atomic_dir(out_dir) as tmp:
        quanter.save_quantized_model(loaded.model, str(tmp / "inference"), input_spec=input_spec(source.task))
    return out_dir


def export(job: ExportJob, run: RunDir, log: Callable[[str], None] | None = None) -> dict:
    """Entry point: float baseline -> float/<task>/, quantized model -> quant/<task>/model/."""
    qdir = run.quant_dir(job.task)
    qat_state, ptq_dir = qdir / "qat_final.pdparams", qdir / "ptq"
    meta = qdir / "qat.json" if qat_state.exists() else qdir / "ptq.json"
    if not meta.exists():
        raise ToolkitError(f"{run.root}: no quantized {job.task} model to export", hint=f"run `toolkit quantize --run-dir {run.root}` first")
    info = json.loads(meta.read_text())
    inputs = [meta, qat_state if info["method"] == "qat" else ptq_dir]
    key = stage_key(source=job.source.fingerprint(), inputs=fingerprint(inputs))
    out_float, out_quant = run.float_model(job.task), run.quant_model(job.task)

    def work():
        save_float(build_model(job.source), out_float)
        if info["method"] == "qat":
            save_quantized(job.source, qat_state, info["settings"], out_quant)
        else:
            with atomic_dir(out_quant) as tmp:
                for f in ("inference.pdmodel", "inference.pdiparams"):
                    shutil.copy2(ptq_dir / f, tmp / f)
        sizes = {p.name: sum(f.stat().st_size for f in p.glob("inference.*")) for p in (out_float, out_quant)}
        return {"task": job.task, "method": info["method"], "float_dir": str(out_float), "quant_dir": str(out_quant),
                "float_bytes": sizes[out_float.name], "quant_bytes": sizes[out_quant.name]}, [out_float, out_quant]

    return run.run_stage(f"export:{job.task}", key, work, log)
