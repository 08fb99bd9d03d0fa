"""report.html: the run at a glance, one static file that opens from disk (no server, no
network: charts are inline SVG from matplotlib, example images are inline JPEG).

Reads only what the stages wrote into the run directory: report.json, eval/metrics.json,
quant/<task>/{qat.json,train_log.jsonl}, analyze/<task>/sensitivity.json. Every string that
comes from data (file names, labels, recognised text, layer names) is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from toolkit.rundir import RunDir, atomic_write_bytes, read_json

MAX_EXAMPLES = 6


def _json(path: Path):
    return read_json(path) if path.exists() else None


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _figure(w: float = 7.5, h: float = 3.2, ncols: int | None = None):
    """One axes, or with `ncols` a 1 x ncols grid of axes (always 2-D)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 9})
    if ncols is None:
        return plt.subplots(figsize=(w, h))
    return plt.subplots(1, ncols, figsize=(w, h), squeeze=False)


def _jpeg(img: np.ndarray, max_side: int = 480) -> str:
    import cv2

    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1:
        img = cv2.resize(img, (int(w * s), int(h * s)))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def _table(head: list[str], rows: list[list], cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Markup) else html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


class Markup(str):
    """Already-escaped HTML for a table cell."""


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _num(x, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def metrics_section(report: dict) -> str:
    """Every eval set of every task: float, fake-quant, drop; the judged set in bold; the x86 float
    .nb check; the device columns when a deploy verified there."""
    from toolkit.tasks import get_task

    rows = []
    for task, m in (report.get("metrics") or {}).items():
        if "sets" not in m and "float" not in m:
            continue
        key = get_task(task).metric
        x86 = m.get("x86_nb_check") or {}
        device = m.get("device") or {}
        device_text = ("stand-in runner (nothing compared)" if device.get("standin") else
                       f"{device['device']}: {get_task(task).device_summary(device)}" if device else "-")
        for name, s in (m.get("sets") or {m.get("judged", "eval"): m}).items():
            judged = name == m.get("judged")
            drop = _num(s.get("drop_points"))
            rows.append([task, Markup(f"<b>{html.escape(name)}</b> (judged)" if judged else html.escape(name)), s.get("kind", "-"),
                         key, _pct(s["float"].get(key)), _pct(s["quant"].get(key)), Markup(f"<b>{drop}</b>" if judged else drop),
                         (f"{x86['max_abs_diff']:.1e} ({'ok' if x86.get('ok') else 'DIFFERS'})" if x86 else "not run") if judged else "",
                         device_text if judged else "",
                         s.get("disagreements", "-")])
    for target, devices in (report.get("deploy") or {}).items():
        for dev, d in devices.items():
            smoke, bench = d.get("smoke") or {}, d.get("benchmark") or {}
            total = (bench.get("timings_ms") or smoke.get("timings_ms") or {}).get("total")
            rows.append([f"{target} on {dev}", "on device", "", "", "-", "-", "-", d.get("status", "-"),
                         "stand-in runner" if (smoke or bench).get("standin") else f"{total:.1f} ms" if total else "no run", ""])
    return ("<h2>Accuracy: float vs quantized</h2><p>Float and fake-quant inference with Paddle Inference on every eval set "
            "(the quantized model computes with exactly the int8 weights and activations Paddle Lite's ARM int8 kernels use); "
            "the verdict is the judged set's drop. The x86 float <code>.nb</code> is compared with Paddle Inference output; "
            "the device column compares the bundle's runner on a device with the host fake-quant model.</p>"
            + _table(["model", "eval set", "data", "metric", "float", "quantized", "drop (points)", "x86 float .nb vs Paddle Inference",
                      "device vs host", "disagreements"], rows, "metrics"))


def sizes_section(report: dict) -> str:
    rows, labels, fl, q8 = [], [], [], []
    for target, entry in (report.get("targets") or {}).items():
        for task in ("det", "rec"):
            e = entry.get(task)
            if not e:
                continue
            rows.append([target, task, f"{e['float_nb_bytes'] / 1e6:.2f}", f"{e['int8_nb_bytes'] / 1e6:.2f}", f"{100 * e['size_ratio']:.1f}%",
                         e["int8_ops"], e["lite_version"]])
            labels.append(f"{target}\n{task}")
            fl.append(e["float_nb_bytes"] / 1e6)
            q8.append(e["int8_nb_bytes"] / 1e6)
    if not rows:
        return ""
    fig, ax = _figure(max(4.0, 1.1 * len(labels) + 2), 3.0)
    x = np.arange(len(labels))
    ax.bar(x - 0.2, fl, 0.4, label="float .nb", color="#9aa7b8")
    ax.bar(x + 0.2, q8, 0.4, label="int8 .nb", color="#2f6fb3")
    ax.set_xticks(x, labels)
    ax.set_ylabel("MB")
    ax.legend()
    ax.set_title(".nb size per target")
    return ("<h2>Model size per target</h2>" + f'<div class="chart" id="chart-sizes">{_svg(fig)}</div>'
            + _table(["target", "model", "float MB", "int8 MB", "int8/float", "int8 kernels", "Lite"], rows))


def _search_drops(search: dict, hist: list[dict]) -> list[float | None]:
    """The drop of each recorded search step: measured, or the bound of a check stopped early."""
    out = []
    for h in hist:
        if h.get("drop_points") is not None:
            out.append(h["drop_points"])
        elif h.get("metric") is not None:
            out.append(100 * (search["float_metric"] - h["metric"]))
        elif h.get("at_most") is not None:
            out.append(100 * (search["float_metric"] - h["at_most"]))
        else:
            out.append(None)
    return out


def sensitivity_section(run: RunDir, tasks: list[str]) -> str:
    """Per-layer harm bars (kept-float layers highlighted) and the search's drop per step, for
    whatever shape the search took (met at once, met after QAT, layers added, not run)."""
    out = []
    for task in tasks:
        info_path = run.quant_info(task, "qat")
        qat = _json(info_path) if info_path.exists() else {}
        search = (qat or {}).get("search")
        analysis = _json(run.sensitivity(task)) if run.sensitivity(task).exists() else None
        ranking = (search or {}).get("ranking") or (analysis or {}).get("ranking") or []
        parts = [f"<h3>{html.escape(task)}</h3>"]
        kept = set((search or {}).get("float_layers") or [])
        if ranking:
            top = ranking[:30]
            harm = [r.get("harm_per_kb", r.get("error", 0.0)) for r in top]
            fig, ax = _figure(7.5, max(2.5, 0.18 * len(top) + 0.8))
            y = np.arange(len(top))[::-1]
            ax.barh(y, harm, color=["#d0542c" if r["layer"] in kept else "#2f6fb3" for r in top])
            ax.set_yticks(y, [r["layer"] for r in top], fontsize=7)
            ax.set_xlabel("output error per kB kept float, with only this layer quantized")
            ax.set_title(f"{task}: {len(ranking)} layers, top {len(top)} (orange: kept float)")
            parts.append(f'<div class="chart" id="chart-sensitivity-{html.escape(task)}">{_svg(fig)}</div>')
        if search:
            before, after = search.get("history_before_training") or [], search.get("history_after_training") or []
            hist = before + after
            drops = _search_drops(search, hist)
            if hist:
                fig, ax = _figure(7.5, 2.6)
                n1 = len(before)
                xs = list(range(len(hist)))
                ax.plot([x for x in xs[:n1] if drops[x] is not None], [d for d in drops[:n1] if d is not None], "o-",
                        label="calibrated, before QAT")
                ax.plot([x for x in xs[n1:] if drops[x] is not None], [d for d in drops[n1:] if d is not None], "s-", label="after QAT")
                ax.axhline(search["budget_points"], color="#d0542c", ls="--", label=f"budget {search['budget_points']}")
                if search.get("pre_training_target_points") is not None:
                    ax.axhline(search["pre_training_target_points"], color="#999", ls=":", label=f"target before QAT {search['pre_training_target_points']:.1f}")
                ax.set_yscale("symlog", linthresh=1.0)
                ax.set_xticks(xs, [str(h.get("float_layers", 0)) for h in hist])
                ax.set_xlabel("layers kept float")
                ax.set_ylabel("drop (points)")
                ax.legend()
                ax.set_title(f"{task}: float fallback search on {search.get('search_samples', '?')} held-out samples")
                parts.append(f'<div class="chart" id="chart-search-{html.escape(task)}">{_svg(fig)}</div>')
            naive = search.get("naive") or {}
            naive_txt = (_num(100 * (search["float_metric"] - naive["metric"])) if naive.get("metric") is not None
                         else f"more than {_num(search.get('pre_training_target_points'), '{:.1f}')} (certain after {naive.get('samples', '?')} samples)"
                         if naive else "not measured (no search before training)")
            why = {r["layer"]: r for r in ranking}
            layers = [f"{html.escape(n)} ({why[n]['weights']} weights, harm {why[n].get('harm_per_kb', 0):.3g}/kB)" if n in why else html.escape(n)
                      for n in search.get("float_layers") or []]
            parts.append(_table(["every layer quantized: drop", "layers kept float (why)", "extra .nb bytes", "after QAT: drop (search set)", "budget met"],
                                [[naive_txt, Markup("<br>".join(layers) or "none"), f"{(search.get('float_extra_bytes') or 0) / 1e3:.1f} kB",
                                  _num(search.get("final_drop_points")), "yes" if search.get("met") else "no"]]))
        elif qat:
            parts.append("<p>Search off: every layer not skipped by hand is quantized.</p>")
        if len(parts) > 1:
            out.append("".join(parts))
    return ("<h2>Per-layer sensitivity and the float fallback</h2><p>Each quantizable layer quantized alone; bars show how far "
            "the output moves from float per kB that keeping it float costs. The search keeps the highest-ranked layers float, "
            "one by one, until the drop is within budget.</p>" + "".join(out)) if out else ""


def loss_section(run: RunDir, tasks: list[str]) -> str:
    curves = {}
    for task in tasks:
        p = run.train_log(task)
        if p.exists():
            rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            if rows:
                curves[task] = ([r["step"] for r in rows], [r["loss"] for r in rows])
    if not curves:
        return ""
    fig, axes = _figure(3.8 * len(curves), 2.6, ncols=len(curves))
    for ax, (task, (x, y)) in zip(axes[0], curves.items()):
        ax.plot(x, y, color="#2f6fb3")
        ax.set_title(f"QAT loss, {task}")
        ax.set_xlabel("step")
    return f'<h2>QAT training loss</h2><div class="chart" id="chart-loss">{_svg(fig)}</div>'


def examples_section(run: RunDir) -> str:
    """Where float and quantized disagree, per eval set: the image with both outputs."""
    import cv2

    metrics = _json(run.metrics_path()) if run.metrics_path().exists() else {}
    cards = []
    for task, m in (metrics or {}).items():
        for name, s in (m.get("sets") or {}).items():
            for d in sorted(s.get("disagreements", []), key=lambda d: (d.get("order", 0), d["image"]))[:MAX_EXAMPLES]:
                img = cv2.imread(d["image"])
                if img is None:
                    continue
                for boxes, color in (((d.get("boxes") or {}).get("float", []), (60, 160, 60)), ((d.get("boxes") or {}).get("quant", []), (40, 80, 220))):
                    cv2.polylines(img, [np.asarray(b, dtype=np.int32) for b in boxes], True, color, 2)
                cards.append(f'<figure><img src="{_jpeg(img)}" alt="{html.escape(task)} example"><figcaption>'
                             f'{html.escape(task)} · {html.escape(name)} · {html.escape(Path(d["image"]).name)}<br>'
                             f'label <code>{html.escape(str(d.get("label", "")))}</code><br>'
                             f'<span style="color:#3ca03c">float</span> <code>{html.escape(str(d.get("float", "")))}</code><br>'
                             f'<span style="color:#dc5028">int8</span> <code class="bad">{html.escape(str(d.get("quant", "")))}</code></figcaption></figure>')
    if not cards:
        return "<h2>Where float and int8 disagree</h2><p>No disagreements on the eval sets.</p>"
    return f'<h2>Where float and int8 disagree</h2><div class="examples">{"".join(cards)}</div>'


CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#1d2330}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #d8dde6;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d8dde6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f8}.ok{color:#207a3c}.bad{color:#c0392b}.status{padding:2px 8px;border-radius:4px;color:#fff}
.status.ok{background:#207a3c}.status.failed{background:#c0392b}.examples{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;border:1px solid #d8dde6;padding:6px;max-width:500px}figure img{max-width:100%;display:block}
.chart svg{max-width:100%;height:auto}code{background:#f2f4f8;padding:0 3px}"""


def render(run: RunDir, report: dict) -> str:
    tasks = [t for t in ("det", "rec") if t in (report.get("metrics") or {}) or t in (report.get("quantization") or {})]
    status = str(report.get("status", "ok"))
    err = report.get("error")
    head = (f'<h1>PP-OCR quantization report <span class="status {html.escape(status)}">{html.escape(status)}</span></h1>'
            f'<p>Run <code>{html.escape(str(report.get("run_dir", run.root)))}</code>'
            + (f' · command <code>{html.escape(str(report["command"]))}</code>' if report.get("command") else "") + "</p>"
            + (f'<p class="bad">error: {html.escape(str(err.get("message")))}<br>hint: {html.escape(str(err.get("hint") or ""))}</p>' if err else "")
            + "<p>" + ", ".join(f"{html.escape(str(k))} {html.escape(str(v))}" for k, v in (report.get("versions") or {}).items()) + "</p>")
    body = head + metrics_section(report) + sizes_section(report) + sensitivity_section(run, tasks) + loss_section(run, tasks) + examples_section(run)
    return f'<!doctype html><html><head><meta charset="utf-8"><title>PP-OCR quantization report</title><style>{CSS}</style></head><body>{body}</body></html>\n'


def write_html(run: RunDir, report: dict) -> Path:
    path = run.html_path()
    atomic_write_bytes(path, render(run, report).encode())
    return path
