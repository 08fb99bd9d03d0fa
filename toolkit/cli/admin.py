"""Everything around the pipeline: targets, the model zoo, datasets, the converter set-up, the
Docker images and `toolkit doctor`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from toolkit.cli.app import JSON, TARGETS, UI, app, done_with_problems, emit, table, targets

targets_app = typer.Typer(no_args_is_help=True, help="Deployment targets (targets/*.yaml).")
models_app = typer.Typer(no_args_is_help=True, help="Built-in models.")
data_app = typer.Typer(no_args_is_help=True, help="Datasets: synthesise, build from real documents, check.")
images_app = typer.Typer(no_args_is_help=True, help="Docker images: trainer, converter, runtime (docker/).")
for sub, name in ((targets_app, "targets"), (models_app, "models"), (data_app, "data"), (images_app, "images")):
    app.add_typer(sub, name=name)


@targets_app.command("list")
def targets_list(as_json: bool = JSON):
    """List the targets defined in targets/."""
    rows = [{"name": t.name, "os": t.os, "arch": t.arch, "abi": t.abi, "lite": t.lite.version, "transport": t.transport.kind,
             "device_dir": t.transport.device_dir} for t in targets(None, all_targets=True)]
    emit(rows, as_json, table([(r["name"], r["os"], r["arch"], r["abi"], f"lite {r['lite']}", f"{r['transport']}:{r['device_dir']}") for r in rows]))


@targets_app.command("show")
def targets_show(name: str, as_json: bool = JSON):
    """Show every field of one target."""
    emit(targets([name])[0].model_dump(), as_json)


@models_app.command("list")
def models_list(as_json: bool = JSON):
    """List the built-in models (real PP-OCRv4 mobile weights, no download)."""
    from toolkit.models.sources import zoo_table

    rows = zoo_table()
    emit(rows, as_json, "\n".join(f"{r['name']:<26} {r['task']}  {r['bytes'] / 1e6:5.1f} MB  {r['description']}" for r in rows))


@data_app.command("synth")
def data_synth(out: Path = typer.Option(Path("data/synth"), "--out", help="Output folder."),
               det_train: int = typer.Option(40, min=0), det_eval: int = typer.Option(100, min=0),
               rec_train: int = typer.Option(800, min=0), rec_eval: int = typer.Option(500, min=0),
               seed: int = typer.Option(0, min=0), as_json: bool = JSON):
    """Render a det set and a rec set of realistic text images with PaddleOCR labels (same seed, same bytes)."""
    from toolkit.data.synth import synth_dataset

    ui = UI(as_json)
    summary = synth_dataset(out, det_train, det_eval, rec_train, rec_eval, seed=seed, progress=ui.progress("synth"))
    emit(summary, as_json, f"wrote {out}: {summary['counts']}")


@data_app.command("real")
def data_real(out: Path = typer.Option(Path("data/real"), "--out", help="Output folder."), as_json: bool = JSON):
    """Build the real-document set: pages of pinned PDF manuals (Debian documentation packages), line
    boxes and text from the PDF text layer; det and rec, train and eval splits by page."""
    from toolkit.data.realpages import build_real_pages
    from toolkit.runners.envs import toolkit_home

    ui = UI(as_json)
    summary = build_real_pages(out, toolkit_home() / "downloads", progress=ui.progress("real pages"))
    emit(summary, as_json, f"wrote {out}: {summary['counts']}")


@data_app.command("check")
def data_check(data: Path = typer.Option(..., "--data", help="A dataset folder."), as_json: bool = JSON):
    """Check a dataset: every label line and every image (decoded), all problems listed with file:line."""
    from toolkit.data.datasets import check
    from toolkit.models.sources import resolve_source

    rows = check(data, {t: resolve_source(t, None).load_config() for t in ("det", "rec")})
    problems = [p for r in rows.values() for p in r["problems"]]
    human = [f"{k}: {v['usable']}/{v['lines']} usable" for k, v in rows.items()] + [f"  {p}" for p in problems[:50]]
    if len(problems) > 50:
        human.append(f"  ... and {len(problems) - 50} more (--json lists all)")
    emit(rows, as_json, "\n".join(human))
    if problems:
        done_with_problems(f"{data}: {len(problems)} problem(s) ({'in the JSON document' if as_json else 'listed above'})",
                           "fix or remove those lines; training can skip them with --skip-bad-labels")


@app.command()
def setup(target: Optional[List[str]] = TARGETS, as_json: bool = JSON):
    """Create the converter environment(s) (Paddle Lite's Python) the targets need."""
    from toolkit.runners.envs import ensure_converter

    ui = UI(as_json)
    done: dict[str, str] = {}
    for t in targets(target, all_targets=not target):
        if t.lite.version not in done:
            done[t.lite.version] = str(ensure_converter(t, ui.log))
    emit(done, as_json, "\n".join(f"converter for Paddle Lite {v}: {p}" for v, p in done.items()))


@images_app.command("build")
def images_build(target: Optional[List[str]] = TARGETS, all_targets: bool = typer.Option(False, "--all-targets"),
                 kind: Optional[List[str]] = typer.Option(None, "--kind", help="trainer, converter, runtime; repeat (default trainer and converter)."),
                 gpu: bool = typer.Option(False, "--gpu", help="Also the GPU trainer (paddlepaddle-gpu, CUDA)."),
                 base_image: Optional[str] = typer.Option(None, "--base-image", help="A local Debian bookworm image; default: made with debootstrap."),
                 pip_index_url: str = typer.Option("https://pypi.org/simple", "--pip-index-url"),
                 pip_extra_index_url: str = typer.Option("", "--pip-extra-index-url"),
                 wheelhouse: bool = typer.Option(True, "--wheelhouse/--no-wheelhouse", help="Pre-download wheels with the host's pip (else the image's pip uses the index)."),
                 ca_cert: Optional[List[Path]] = typer.Option(None, "--ca-cert", help="Extra CA certificates (PEM) trusted in the images, e.g. a TLS-intercepting proxy's."),
                 apt_mirror: str = typer.Option("http://deb.debian.org/debian", "--apt-mirror"),
                 python37_sha256: Optional[str] = typer.Option(None, "--python37-sha256", help="Build CPython 3.7 from python.org's source (when no local 3.7)."),
                 lite_source: Optional[Path] = typer.Option(None, "--lite-source", help="A local Paddle Lite git clone (checkout or bare) that has the "
                                                            "target's pinned tag; runtime images are built from it. Without it the image clones "
                                                            "runtime.source.repository (needs internet). A tag at another commit is refused."),
                 runtime_sha256: Optional[List[str]] = typer.Option(None, "--runtime-sha256", help="TARGET=SHA256 of the Paddle Lite archive (runtime.kind: archive) when the target pins none."),
                 ndk_sha256: Optional[str] = typer.Option(None, "--ndk-sha256", help="sha256 of the Android NDK zip, overriding the target's pin."),
                 force: bool = typer.Option(False, "--force", help="Rebuild even when the tag exists."), as_json: bool = JSON):
    """Build the images (tagged by a hash of their inputs: unchanged images are not rebuilt)."""
    from toolkit.runners.images import BuildOptions, build_images, pin_runtime

    ui = UI(as_json)
    shas = dict(pin_runtime(item) for item in runtime_sha256 or [])
    opts = BuildOptions(base_image=base_image, pip_index_url=pip_index_url, pip_extra_index_url=pip_extra_index_url, wheelhouse=wheelhouse,
                        ca_certs=list(ca_cert or []), apt_mirror=apt_mirror, python37_sha256=python37_sha256, runtime_sha256=shas,
                        ndk_sha256=ndk_sha256, lite_source=lite_source, force=force)
    res = build_images(targets(target, all_targets), list(kind or ["trainer", "converter"]), opts,
                       trainer_variants=["cpu", "gpu"] if gpu else ["cpu"], log=ui.log)
    emit(res, as_json, "\n".join(f"{r['tag']:<44} {'built in %.0fs' % r['seconds'] if r['built'] else 'up to date (no build)'}" for r in res))


@app.command()
def doctor(target: Optional[List[str]] = TARGETS, as_json: bool = JSON):
    """Engine, GPUs, adb, interpreters, converter environments, images: what is there and the fix for what is not.
    Every target file is checked; a broken one is a row, not the end of the report."""
    from toolkit.runners.doctor import checks_for, render

    rows = checks_for(target)
    emit(rows, as_json, render(rows))
