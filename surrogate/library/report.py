"""Human-readable views of a library: a contact-sheet PNG and a summary table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from surrogate.library.store import Library, atomic_write_text, int_to_id

__all__ = ["contact_sheet", "summary"]


def contact_sheet(root: Path, n: int = 48, cols: int = 8, path: Path | None = None) -> Path:
    """PNG grid of ``n`` images spread over the library, titled with family, mode and method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lib = Library(root)
    k = lib.manifest["images_per_structure"]
    total = len(lib)
    units = lib.manifest["counts"]["units"]
    picks = []
    for j, u in enumerate(np.linspace(0, units - 1, min(n, units * k)).astype(int)):
        picks.append(int(u) * k + (j % k))
    picks = sorted(set(picks))[:n] or [0]
    family = {cid: (r.family, r.material, r.zone_axis) for cid, r in lib.structures().items()}
    cids = lib.config_ids()
    rows = int(np.ceil(len(picks) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), picks):
        c = lib.conditions(i)
        fam, mat, za = family.get(int_to_id(cids[i]), ("?", "?", "?"))
        ax.imshow(lib.image(i), cmap="gray")
        dose = "clean" if c.dose is None else f"{c.dose:.0e}"
        ax.set_title(f"{mat} {za} {fam}\n{c.mode}/{c.method[:5]} {dose}", fontsize=6)
    fig.suptitle(f"{Path(root).name}: {total} images, sampling {lib.sampling} Å/px", fontsize=9)
    fig.tight_layout()
    out = Path(path or Path(root) / "contact_sheet.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def summary(root: Path, manifest: dict | None = None) -> str:
    """Markdown table of counts per family and per mode; written to ``summary.md`` and returned."""
    manifest = manifest or Library(root).manifest
    c = manifest["counts"]
    lines = [
        f"# Library {Path(root).name}",
        "",
        f"{c['images']} images of {c['structures']} structures, {manifest['image_shape'][0]}x"
        f"{manifest['image_shape'][1]} px at {manifest['canonical_sampling']} Å/px; abTEM {manifest['abtem_version']}.",
        "",
    ]
    if manifest.get("build", {}).get("elapsed"):
        b = manifest["build"]
        if b.get("new_units"):
            lines += [
                f"Build time: {b['elapsed']:.1f} s for {int(b['new_units']) * manifest['images_per_structure']} new images "
                f"({int(b['new_units']) * manifest['images_per_structure'] / b['elapsed']:.2f} images/s).",
                "",
            ]
    lines += ["| family | structures | images |", "|---|---:|---:|"]
    for fam, n in sorted(c["per_family_structures"].items()):
        lines.append(f"| {fam} | {n} | {c['per_family_images'].get(fam, 0)} |")
    lines += ["", "| mode | images |", "|---|---:|"]
    for mode, n in sorted(c["per_mode_images"].items()):
        lines.append(f"| {mode} | {n} |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(Path(root) / "summary.md", text)
    atomic_write_text(Path(root) / "summary.json", json.dumps(c, indent=1))
    return text
