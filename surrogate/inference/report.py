"""Write what inference found: ``candidates.json``, CIF + extxyz per candidate, overlay and window-map
PNGs, and a self-contained HTML report (images inlined) that a person can check by eye."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.inference.pipeline import InferenceResult
from surrogate.io.files import atomic_open, atomic_write_text
from surrogate.library import Library

__all__ = ["write_report", "lattice_warning", "boundary_line", "classes_line", "log_wandb", "overlay_points"]

COLUMN_COLOURS = {"Cd": "#ff7f0e", "Te": "#1f77b4", "Si": "#2ca02c", "Ge": "#9467bd", "Se": "#d62728", "Cl": "#e377c2"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _save_png(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def overlay_points(columns, sampling: float) -> list[dict]:
    """Columns (:class:`surrogate.inference.columns.Columns`, window frame in Å) as the overlay draws
    them: ``row``, ``col`` [px] and ``symbol``."""
    species = columns.species or [None] * len(columns)
    return [{"row": y / sampling, "col": x / sampling, "symbol": sp or "?"} for (x, y), sp in zip(columns.xy, species)]


def overlay_figure(
    window: np.ndarray, simulation: np.ndarray, columns: list[dict], title: str, measured: np.ndarray | None = None
):
    """experiment | simulation | difference, with the candidate's projected columns on the experiment
    (dots, coloured by species) and the columns measured on it (``measured``: (row, col) px, open circles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def norm(x):
        x = np.asarray(x, np.float64)
        return (x - x.mean()) / (x.std() or 1.0)

    e, s = norm(window), norm(simulation)
    fig, ax = plt.subplots(1, 3, figsize=(11, 4))
    ax[0].imshow(e, cmap="gray")
    if measured is not None and len(measured):
        ax[0].scatter(
            measured[:, 1],
            measured[:, 0],
            s=28,
            facecolors="none",
            edgecolors="#00e5ff",
            linewidths=0.6,
            label="measured",
        )
    for sym in sorted({c["symbol"] for c in columns}):
        pts = np.array([[c["col"], c["row"]] for c in columns if c["symbol"] == sym])
        ax[0].scatter(pts[:, 0], pts[:, 1], s=6, c=COLUMN_COLOURS.get(sym, "#ffff00"), label=sym, alpha=0.8)
    if columns or (measured is not None and len(measured)):
        ax[0].legend(loc="upper right", fontsize=7, markerscale=2)
    ax[0].set_title("experiment + model columns")
    ax[1].imshow(s, cmap="gray")
    ax[1].set_title("simulation (fitted)")
    lim = float(np.abs(e - s).max())
    ax[2].imshow(e - s, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax[2].set_title("difference")
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return fig


def window_map_figure(result: InferenceResult, families: dict[str, str]):
    """The resampled image with each window's best-matching family (where in the image each kind sits)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fams = sorted({families.get(c, "?") for c in result.window_best})
    cmap = plt.get_cmap("tab10")
    colour = {f: cmap(i % 10) for i, f in enumerate(fams)}
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(result.image, cmap="gray")
    h, w = result.windows[0].image.shape
    for win, cid in zip(result.windows, result.window_best):
        f = families.get(cid, "?")
        cy, cx = win.row + h / 2, win.col + w / 2
        ax.add_patch(Rectangle((cx - w / 4, cy - h / 4), w / 2, h / 2, fill=True, alpha=0.25, color=colour[f], lw=0))
    for f in fams:
        ax.plot([], [], "s", color=colour[f], label=f)
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title("best-matching family per window")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def lattice_warning(record: dict) -> str:
    """One-line explanation of a failed lattice-spacing check (``InferenceResult.lattice``)."""
    from surrogate.inference.lattice import describe

    sig, top = record["signature"], record.get("top_signature")
    text = (
        f"LATTICE MISMATCH: the image's lattice ({describe(sig)}) matches no "
        f"candidate's within {100 * record['tolerance']:.0f} %"
    )
    if top:
        text += (
            f"; the top candidate's is {describe(top)}, which would fit with the pixel "
            f"size x {record['pixel_size_factor']:.3f} (shape mismatch {100 * record['shape_mismatch']:.1f} %). "
            "Check the pixel size, the material (retrieval.elements) and the zone axis; the library may not hold it"
        )
    return text


def _candidate_record(c) -> dict[str, Any]:
    ref = c.refinement.record() if hasattr(c.refinement, "record") else dict(c.refinement)
    ref.pop("image", None)
    return {
        "rank": c.rank,
        "config_id": c.config_id,
        "family": c.family,
        "formula": c.formula,
        "distance": round(float(c.distance), 5),
        "energy_per_atom": c.energy,
        "energy_above": c.energy_above,
        "score": round(float(c.score), 5),
        "pareto": c.pareto,
        "votes": c.votes,
        "window": c.window,
        "library_entry": c.entry,
        "lattice_mismatch": c.lattice_mismatch,
        "gb_energy_mJ_m2": c.gb_energy,
        "gb_energy_above_mJ_m2": c.gb_energy_above,
        "source": c.source,
        "fom": ref.get("fom"),
        "column_fraction": (ref.get("columns") or {}).get("column_fraction"),
        "refinement": ref or None,
    }


def write_report(result: InferenceResult, out_dir: str | Path) -> dict[str, Path]:
    """Write every output file into ``out_dir``; returns their paths by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.io import write

    from surrogate.inference.refine import atom_columns, widen_boundary
    from surrogate.simulate.conditions import ImagingConditions

    out = Path(out_dir)
    (out / "structures").mkdir(parents=True, exist_ok=True)
    library = Library(result.info["library"])
    if result.built:
        from surrogate.inference.propose import WithBuilt

        library = WithBuilt(library, result.built)  # type: ignore[assignment]
    files: dict[str, Path] = {}
    records = [_candidate_record(c) for c in result.candidates]
    known = library.structures()
    for rec in records:  # the class labels, so that a reader needs no structures.db (built candidates have none)
        sr = known.get(rec["config_id"])
        rec["labels"] = sr.labels.to_dict() if sr is not None else None
    summary = {
        "image": result.micrograph.path,
        "pixel_size": result.micrograph.sampling,
        "image_metadata": result.micrograph.metadata,
        **result.info,
        "out_of_library": result.out_of_library,
        "threshold": result.threshold,
        "lattice": result.lattice,
        "boundary": result.boundary,
        "classes": result.classes,
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "candidates": records,
    }
    files["candidates"] = out / "candidates.json"
    # candidates.json is written last: present means this report is complete (every file is atomic,
    # and a killed rewrite into the same directory leaves no stale candidates.json beside new files)
    files["candidates"].unlink(missing_ok=True)

    families = {c.config_id: c.family for c in result.candidates}
    for cid in set(result.window_best) - set(families):
        families[cid] = "?"
    families.update({cid: r.family or "?" for cid, r in library.structures().items()})
    fig = window_map_figure(result, families)
    files["window_map"] = out / "window_map.png"
    _save_png(files["window_map"], _png(fig))
    plt.close(fig)

    blocks = []
    for c in result.candidates:
        atoms = library.atoms(c.config_id)
        stem = f"rank{c.rank:02d}_{c.config_id}"
        for fmt, mode in (("cif", "wb"), ("extxyz", "w")):  # ASE's CIF writer writes bytes
            with atomic_open(out / "structures" / f"{stem}.{fmt}", mode) as fh:
                write(fh, atoms, format=fmt)
        if c.refinement.get("image") is None:
            continue
        r = c.refinement
        cond = ImagingConditions.from_dict(r["conditions"])
        shape = result.windows[c.window].image.shape
        model, measured = getattr(r, "model_columns", None), getattr(r, "measured_columns", None)
        if model is not None:  # the columns of the structure the final image shows (per-grain fit included)
            cols = overlay_points(model, cond.sampling)
        else:
            shown = widen_boundary(atoms, r["margin"] * max(shape) * cond.sampling)  # the structure refine imaged
            cols = atom_columns(
                shown,
                cond,
                shape,
                r["margin"],
                r["rotation_deg"],
                r["scale"],
                tuple(r["shift_px"]),
                r["shear"],
                r["stretch"],
            )
        fitted = getattr(r, "atoms", None)
        if fitted is not None and (r.get("grains") or {}).get("used"):
            for fmt, mode in (("cif", "wb"), ("extxyz", "w")):
                with atomic_open(out / "structures" / f"{stem}_fitted.{fmt}", mode) as fh:
                    write(fh, fitted, format=fmt)
        if measured is not None and "measured_columns" not in files:
            files["measured_columns"] = measured.to_csv(out / "columns.csv")
            measured.to_json(out / "columns.json")
        colrec = r.get("columns") or {}
        title = (
            f"rank {c.rank} · {c.family} · {c.config_id} · distance {c.distance:.3f} · "
            f"FOM {r['fom_before']:.3f} → {r['fom']:.3f} (SSIM {r['ssim']:.3f})"
        )
        if colrec:
            title += (
                f"\ncolumns matched {100 * colrec['column_fraction']:.0f} % (RMS {colrec['column_rms'] or 0:.2f} Å)"
            )
        pts = None if measured is None else measured.xy[:, ::-1] / cond.sampling
        fig = overlay_figure(result.windows[c.window].image, r["image"], cols, title, pts)
        png = _png(fig)
        plt.close(fig)
        files[f"overlay_{c.rank}"] = out / f"overlay_rank{c.rank:02d}.png"
        _save_png(files[f"overlay_{c.rank}"], png)
        blocks.append((c, png))
    files["report"] = out / "report.html"
    atomic_write_text(files["report"], _html(summary, records, blocks, _png_of(files["window_map"])))
    atomic_write_text(files["candidates"], json.dumps(summary, indent=1, default=float))
    return files


def _png_of(path: Path) -> bytes:
    return path.read_bytes()


def _img_tag(png: bytes, width: int = 900) -> str:
    return f'<img width="{width}" src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def boundary_line(record: dict) -> str:
    """One line on the grain / misorientation check (``InferenceResult.boundary``), for the console
    and the report; empty when the check did not run."""
    if not record:
        return ""
    if record.get("skipped"):
        return f"grains: {record['skipped']}"
    line = f"grains: {record['description']}"
    m = record.get("measured") or {}
    if m.get("n_grains") == 2:
        line += (
            f"; {record['consistent']} candidate(s) agree within {record['tolerance']:g}°"
            if record.get("in_library")
            else f"; NO LIBRARY BOUNDARY within {record['tolerance']:g}° (out of library at the boundary level)"
        )
        if record.get("built"):
            names = ", ".join(f"{b['name']} {b['config_id']}" for b in record["built"])
            line += f"; built and ranked first: {names}"
    if (record.get("defects") or {}).get("description"):
        line += "; " + record["defects"]["description"]
    return line


def classes_line(classes: dict) -> str:
    """``CdTe [110] · twin · Σ3(111)`` with each level's vote share, for the console."""
    if not classes:
        return ""
    top = [
        (classes[level][0]["class"], classes[level][0]["p"])
        for level in ("material_zone", "family", "boundary")
        if classes.get(level)
    ]
    return "structure: " + " · ".join(f"{name} ({100 * p:.0f} %)" for name, p in top if name != "none")


def _classes_html(classes: dict) -> str:
    if not classes:
        return ""
    esc = html.escape
    names = {
        "material_zone": "material, zone axis",
        "family": "family",
        "boundary": "boundary",
        "defect_kind": "defect",
    }
    rows = []
    for level, title in names.items():
        if not classes.get(level):
            continue
        top, rest = classes[level][0], classes[level][1:4]
        others = ", ".join(f"{c['class']} {100 * c['p']:.0f} %" for c in rest)
        rows.append(
            f"<tr><td>{title}</td><td><b>{esc(top['class'])}</b></td><td>{100 * top['p']:.0f} %</td>"
            f"<td>{esc(others)}</td></tr>"
        )
    return (
        "<h2>Which structure</h2><p>Votes of the candidates whose lattice fits, weighted by "
        "exp(−distance / T); the share of the top class is the level's confidence.</p>"
        "<table><tr><th>level</th><th>class</th><th>share</th><th>next</th></tr>" + "".join(rows) + "</table>"
    )


def _html(summary: dict, records: list[dict], blocks: list, window_map: bytes) -> str:
    esc = html.escape
    flag = (
        (
            '<p style="color:#b00"><b>Out of library:</b> the best distance is beyond the calibrated threshold '
            f"({summary['threshold']:.3f}); treat every candidate as a guess.</p>"
        )
        if summary["out_of_library"]
        else ""
    )
    lattice = summary.get("lattice") or {}
    if lattice.get("mismatch"):
        flag += f'<p style="color:#b00"><b>{esc(lattice_warning(lattice))}.</b></p>'
    elif lattice.get("signature"):
        from surrogate.inference.lattice import describe

        sig = lattice["signature"]
        flag += (
            f"<p>Lattice check: the image's lattice is {esc(describe(sig))} at the "
            f"given pixel size; {lattice['consistent']} of {len(records)} candidates match it within "
            f"{100 * lattice['tolerance']:.0f} % and come first.</p>"
        )
    elif lattice.get("skipped"):
        flag += f"<p>Lattice check skipped: {esc(lattice['skipped'])}.</p>"
    if summary.get("boundary"):
        flag += f"<p>Grain check: {esc(boundary_line(summary['boundary'])[len('grains: ') :])}.</p>"
    flag += _classes_html(summary.get("classes") or {})
    head = [
        "rank",
        "config_id",
        "family",
        "formula",
        "distance",
        "E/atom [eV]",
        "ΔE [eV/atom]",
        "γ_GB [mJ/m²]",
        "score",
        "Pareto",
        "lattice Δ",
        "FOM",
        "columns",
        "votes",
    ]
    rows = []
    for r in records:
        e = "" if r["energy_per_atom"] is None else f"{r['energy_per_atom']:.4f}"
        de = "" if r["energy_above"] is None else f"{r['energy_above']:.4f}"
        fom = "" if r["fom"] is None else f"{r['fom']:.3f}"
        lat = "" if r.get("lattice_mismatch") is None else f"{100 * r['lattice_mismatch']:.1f} %"
        gb = "" if r.get("gb_energy_mJ_m2") is None else f"{r['gb_energy_mJ_m2']:.0f}"
        cells = [
            r["rank"],
            r["config_id"],
            r["family"],
            r["formula"],
            f"{r['distance']:.4f}",
            e,
            de,
            gb,
            f"{r['score']:.4f}",
            "★" if r["pareto"] else "",
            lat,
            fom,
            "" if r.get("column_fraction") is None else f"{100 * r['column_fraction']:.0f} %",
            r["votes"],
        ]
        rows.append("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in cells) + "</tr>")
    table = "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
    fits = "".join(
        f"<h3>rank {c.rank}: {esc(c.family)} {esc(c.config_id)}</h3>{_img_tag(png)}"
        f"<pre>{esc(json.dumps(_candidate_record(c)['refinement'], indent=1, default=float))}</pre>"
        for c, png in blocks
    )
    meta = {
        k: summary[k]
        for k in (
            "image",
            "pixel_size",
            "library",
            "library_hash",
            "method",
            "checkpoint",
            "energy_model",
            "energies",
            "n_windows",
            "timings_s",
        )
    }
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>surrogate: {esc(Path(summary["image"]).name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;font-size:13px}}pre{{font-size:11px;background:#f6f6f6}}</style></head><body>
<h1>Configurations behind {esc(Path(summary["image"]).name)}</h1>{flag}
<p>Ranked by image distance + an energy term: for boundaries with a boundary energy γ_GB (excess over bulk per
boundary area), boundary weight × γ_GB above the lowest boundary candidate of any kind; otherwise energy weight × energy
per atom above the lowest candidate of the same kind and elements (★ = on the distance/energy Pareto front); candidates whose lattice spacings match the image's (lattice Δ, relative
spacing error, at the given pixel size) come first. FOM = 0.1 × shift [px, |Δrow| + |Δcol|] + (1 − SSIM of zero-mean images), before → after refinement;
ingrained's scaling of the same (each image scaled to [0, 1], its <code>score_ssim</code>) is <code>fom_ingrained</code> in candidates.json.
columns = fraction of the atom columns measured on the window (open circles in the overlays; columns.csv) that the
fitted structure's projected columns (dots) explain within the refinement's column tolerance.</p>
{table}<h2>Where each family matches</h2>{_img_tag(window_map, 500)}<h2>Refined candidates</h2>{fits}
<h2>Run</h2><pre>{esc(json.dumps(meta, indent=1, default=str))}</pre></body></html>"""


def log_wandb(result: InferenceResult, files: dict[str, Path]) -> None:
    """Log the candidate table and the figures to a wandb run (offline unless WANDB_MODE says otherwise)."""
    import os

    try:
        import wandb
    except ImportError:
        from surrogate.errors import ConfigError

        raise ConfigError("wandb=true but wandb is not installed: pip install wandb, or leave wandb=false") from None
    os.environ.setdefault("WANDB_MODE", "offline")
    run = wandb.init(
        project="surrogate-infer", config={**result.info, "lattice": result.lattice}, dir=str(files["report"].parent)
    )
    records = [_candidate_record(c) for c in result.candidates]
    cols: list[str | int] = [
        "rank",
        "config_id",
        "family",
        "distance",
        "energy_above",
        "score",
        "pareto",
        "lattice_mismatch",
        "fom",
    ]
    run.log(
        {
            "candidates": wandb.Table(columns=cols, data=[[r[str(c)] for c in cols] for r in records]),
            **{k: wandb.Image(str(v)) for k, v in files.items() if v.suffix == ".png"},
        }
    )
    run.finish()
