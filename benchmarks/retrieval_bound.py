"""Ideal-observer bound on retrieval top-1: how often *can* a query's configuration be told apart?

The retrieval benchmark asks for top-1 >= 0.95 at doses >= 10^3 e/Å². Many library configurations
differ by one point defect in a 20 Å thick slab: a vacancy or an antisite changes one column by a
few per cent. Whether any method can tell them apart under counting noise is a property of the
library and the dose, not of the retriever. This script measures it.

For every in-library query of ``benchmarks/retrieval.py`` (same cache, same queries) the ideal
observer is told everything but the configuration: the query's imaging conditions, its rotation,
its magnification and its dose. It renders every configuration of the query's group (same material
and zone axis: the bulk slab, its point-defect variants and its boundaries; these are the
near-identical ones) noise-free under exactly those conditions, applies the same rotation and
magnification, and picks the configuration of maximum Poisson likelihood of the query's counts.
With a uniform prior that is the Bayes-optimal decision, so its top-1 bounds that of every
retriever, the CNN included; restricting it to the group only makes the bound looser (fewer
alternatives). The CNN is scored on the same restricted choice (its nearest gallery image among the
group's configurations) for a like-for-like row.

Usage: ``python benchmarks/retrieval_bound.py [--checkpoint checkpoints/embedding_demo.pt] [--quick]``
(run ``benchmarks/retrieval.py`` with the same ``--quick`` first, or the queries are rendered here);
writes ``benchmarks/results/retrieval_bound.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from common import auroc
from retrieval import DOSES, make_queries, query_sources  # the same queries as the retrieval benchmark


def poisson_loglik(counts: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """``sum k log(lam) - lam`` over pixels (the ``log k!`` term is the same for every hypothesis).

    ``counts`` ``(H, W)`` and ``expected`` ``(C, H, W)``, both in electrons per pixel."""
    lam = np.clip(expected, 1e-9, None)
    return (counts[None] * np.log(lam) - lam).reshape(len(lam), -1).sum(axis=1)


def ideal_observer(lib, meta: list[dict], queries: np.ndarray, progress: bool = True) -> list[dict]:
    """Per query: the group's configurations, their log-likelihoods and whether the truth wins."""
    from surrogate.augment import rotate_scale
    from surrogate.library.build import _settings
    from surrogate.library.store import int_to_id
    from surrogate.simulate import render

    sim = lib.manifest["config"]["simulate"]
    settings = _settings(sim)
    shape, sampling = tuple(lib.manifest["image_shape"]), lib.sampling
    groups = lib.groups()
    family = {int(cid, 16): r.family for cid, r in lib.structures().items()}
    cids = lib.config_ids()
    members: dict[str, list[int]] = {}
    for c, g in groups.items():
        members.setdefault(g, []).append(c)
    atoms_cache: dict[int, object] = {}
    out = []
    sources = sorted({q["source"] for q in meta})
    t = time.perf_counter()
    for n, src in enumerate(sources):
        cond = lib.conditions(int(src))
        truth = int(cids[src])
        cands = sorted(members[groups[truth]])
        clean = []
        for c in cands:
            if c not in atoms_cache:
                atoms_cache[c] = lib.atoms(int_to_id(c))
            clean.append(render(atoms_cache[c], [cond], shape, settings, noise=False)[0])
        clean = np.stack(clean)
        own = clean[cands.index(truth)]
        err = float(np.abs(own - lib.image(int(src))).max() / max(float(np.abs(own).max()), 1e-12))
        electrons = None
        for qi in [i for i, q in enumerate(meta) if q["source"] == src]:
            q = meta[qi]
            electrons = q["dose"] * sampling**2
            lam = rotate_scale(clean, np.full(len(cands), q["rotation"]), np.full(len(cands), q["scale"]))
            ll = poisson_loglik(queries[qi] * electrons, lam * electrons)
            best = np.flatnonzero(ll == ll.max())
            won = (cands.index(truth) in best) / len(best)  # ties: a fair guess among the tied
            # how far apart the hypotheses are at this dose: log-likelihood margin of the truth over the best other
            others = np.delete(ll, cands.index(truth))
            out.append(
                {
                    "query": qi,
                    "group": groups[truth],
                    "n_candidates": len(cands),
                    "top1": float(won),
                    "margin": float(ll[cands.index(truth)] - others.max()) if len(others) else float("inf"),
                    "mode": q["mode"],
                    "dose": q["dose"],
                    "family": family[truth],
                    "render_error": err,
                }
            )
        if progress:
            print(
                f"  source {n + 1}/{len(sources)} ({groups[truth]}, {cond.mode}, {len(cands)} candidates, "
                f"re-render error {err:.1e}) {time.perf_counter() - t:.0f} s",
                flush=True,
            )
    return out


class CNNGallery:
    """The embedder and the embedded gallery (train + validation conditions, as in
    ``benchmarks/retrieval.py``), built once and shared by both CNN evaluations."""

    def __init__(self, lib, checkpoint: str):
        from surrogate.embedding import load_embedder
        from surrogate.library import split_indices

        self.emb = load_embedder(checkpoint, library=lib)
        self.index = np.setdiff1d(np.arange(len(lib)), split_indices(lib, "test", "condition"))
        self.cfg = lib.config_ids()[self.index]
        self.z = self.emb.embed(np.asarray(lib.group["images"][:], dtype=np.float32)[self.index])


def cnn_within_group(lib, meta, queries, g: CNNGallery) -> np.ndarray:
    """CNN top-1 when it, too, only chooses among the query's group (nearest gallery image)."""
    cfg = g.cfg
    groups = lib.groups()
    d = 1 - g.emb.embed(queries) @ g.z.T
    gcfg = np.array([groups[int(c)] for c in cfg])
    hit = np.zeros(len(meta))
    for i, q in enumerate(meta):
        truth = int(q["config_id"], 16)
        sel = gcfg == groups[truth]
        hit[i] = cfg[sel][np.argmin(d[i, sel])] == truth
    return hit


def cnn_refine(
    lib, g: CNNGallery, images: np.ndarray, meta: list[dict], k: int, log: Path, mode: str = "shared"
) -> list[dict]:
    """The inference pipeline's two stages on each query: the CNN's ``k`` nearest configurations (full
    gallery), refined against the query by the shipped refinement stage
    (``surrogate.inference.refine.refine_candidates``: pose, blur, scan distortion, defocus, under the
    conditions of the configuration's nearest gallery image) and ranked by the figure of merit.
    ``mode="each"`` fits every candidate separately; ``"shared"`` is ``refine.shared_pose``: the
    first of each group (same material and zone axis) is fitted and its siblings scored at its pose.
    One JSON line per query in ``log``, so an interrupted run resumes."""
    from surrogate.inference.preprocess import Window
    from surrogate.inference.rank import Candidate
    from surrogate.inference.refine import refine_candidates
    from surrogate.inference.settings import RefineSettings
    from surrogate.library.store import int_to_id

    done = {}
    if log.is_file():
        for line in log.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["key"]] = r
    todo = [i for i, q in enumerate(meta) if q["key"] not in done]
    if todo:
        settings = RefineSettings(top=k, shared_pose=mode == "shared")
        gallery, cfg, zg = g.index, g.cfg, g.z
        classes = np.unique(cfg)
        t = time.perf_counter()
        for n, i in enumerate(todo):
            d = 1 - g.emb.embed(images[i : i + 1])[0] @ zg.T
            best = {int(c): int(np.argmin(np.where(cfg == c, d, np.inf))) for c in classes}
            shortlist = sorted(best, key=lambda c: d[best[c]])[:k]
            cands = [
                Candidate(
                    config_id=int_to_id(c), distance=float(d[best[c]]), window=0, entry=int(gallery[best[c]]), rank=r
                )
                for r, c in enumerate(shortlist, 1)
            ]
            refine_candidates(lib, [Window(images[i], 0, 0)], cands, settings, progress=False)
            rows = [
                {
                    "config_id": c.config_id,
                    "distance": c.distance,
                    "fom": float(c.refinement["fom"]),
                    "ssim": float(c.refinement["ssim"]),
                    "residual": float(c.refinement["residual"]),
                }
                for c in cands
            ]
            row = {
                "key": meta[i]["key"],
                "set": meta[i]["set"],
                "dose": meta[i]["dose"],
                "config_id": meta[i]["config_id"],
                "candidates": rows,
            }
            with open(log, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            done[row["key"]] = row
            print(
                f"  refine {n + 1}/{len(todo)} ({row['set']}, {row['dose']:.0e}): best FOM "
                f"{min(c['fom'] for c in rows):.3f} {time.perf_counter() - t:.0f} s",
                flush=True,
            )
    return [done[q["key"]] for q in meta]


def refine_table(rows: list[dict], ideal: dict[str, float]) -> dict:
    """Top-1 of CNN alone and CNN + refine on the in-library rows, with the ideal bound on the same
    queries; out-of-library AUROC of the best FOM and of the CNN distance, matched by dose."""
    inside = [r for r in rows if r["set"] == "in"]
    fom_best = np.array([min(c["fom"] for c in r["candidates"]) for r in rows])
    res_best = np.array([min(c.get("residual", np.nan) for c in r["candidates"]) for r in rows])
    dist_best = np.array([min(c["distance"] for c in r["candidates"]) for r in rows])

    def hit(key):
        return np.array(
            [min(r["candidates"], key=lambda c: c.get(key, np.inf))["config_id"] == r["config_id"] for r in inside],
            float,
        )

    hits = {
        "cnn": np.array([r["candidates"][0]["config_id"] == r["config_id"] for r in inside], float),
        "cnn_refine": hit("fom"),
        "cnn_refine_residual": hit("residual"),
    }
    shortlist = np.array([any(c["config_id"] == r["config_id"] for c in r["candidates"]) for r in inside], float)
    ideal_hits = np.array([ideal[r["key"]] for r in inside])
    out = {
        "n": len(inside),
        **{k: float(v.mean()) for k, v in hits.items()},
        "shortlist_recall": float(shortlist.mean()),
        "ideal": float(ideal_hits.mean()),
        "by_dose": {},
    }
    dose = np.array([r["dose"] for r in inside])
    for d in sorted(set(dose)):
        m = dose == d
        out["by_dose"][f"{d:.0e}"] = {
            "n": int(m.sum()),
            **{k: float(v[m].mean()) for k, v in hits.items()},
            "ideal": float(ideal_hits[m].mean()),
        }
    sets = np.array([r["set"] for r in rows])
    doses = np.array([r["dose"] for r in rows])
    out["auroc"] = {}
    for s in sorted(set(sets) - {"in"}):
        for name, score in (("fom", fom_best), ("residual", res_best), ("cnn_distance", dist_best)):
            vals = [
                auroc(score[(sets == "in") & (doses == d)], score[(sets == s) & (doses == d)])
                for d in sorted(set(doses))
                if ((sets == s) & (doses == d)).any()
            ]
            out["auroc"].setdefault(s, {})[name] = float(np.mean(vals)) if vals else float("nan")
    return out


def table(rows: list[dict], cnn: np.ndarray | None) -> dict:
    dose = np.array([r["dose"] for r in rows])
    mode = np.array([r["mode"] for r in rows])
    fam = np.array([r["family"] for r in rows])
    top1 = np.array([r["top1"] for r in rows])
    idx = np.array([r["query"] for r in rows])
    c = cnn[idx] if cnn is not None else None

    def cell(mask):
        d = {"n": int(mask.sum())}
        if mask.any():
            d["ideal"] = float(top1[mask].mean())
            if c is not None:
                d["cnn"] = float(c[mask].mean())
        return d

    # identifiable: the data favour the truth over every other configuration of its group by >= 20:1
    ident = np.array([r["margin"] for r in rows]) >= np.log(20.0)
    res = {
        "all": cell(np.ones(len(rows), bool)),
        "dose_ge_1e3": cell(dose >= 1e3),
        "identifiable": cell(ident),
        "identifiable_dose_ge_1e3": cell(ident & (dose >= 1e3)),
    }
    res["by_dose"] = {f"{d:.0e}": cell(dose == d) for d in DOSES}
    res["by_mode"] = {m: cell(mode == m) for m in sorted(set(mode))}
    res["by_family"] = {f: cell(fam == f) for f in sorted(set(fam))}
    res["by_family_dose_ge_1e3"] = {f: cell((fam == f) & (dose >= 1e3)) for f in sorted(set(fam))}
    return res


def markdown(res: dict) -> str:
    t = res["table"]

    def fmt(d):
        if not d.get("n"):
            return "-"
        return f"{d['ideal']:.2f}" + (f" / {d['cnn']:.2f}" if "cnn" in d else "") + f" ({d['n']})"

    L = [
        f"# Retrieval: ideal-observer bound{' (quick)' if res['quick'] else ''}",
        "",
        f"Library `{res['library']}`, {res['n_queries']} in-library queries of `benchmarks/retrieval.py` "
        f"(unseen conditions, any rotation, scale 0.8-1.2, dose 1e2-1e5 e/Å²). Machine: {res['machine']}.",
        "",
        "The ideal observer knows each query's imaging conditions, rotation, scale and dose, renders every "
        "configuration of the query's group (same material and zone axis: bulk, point-defect variants, boundaries) "
        "noise-free under them and picks the maximum Poisson likelihood: the Bayes-optimal choice, an upper bound "
        "on any retriever's top-1. Cells: ideal / CNN top-1 (number of queries); the CNN chooses among the same "
        f"group's configurations (nearest gallery image, checkpoint `{res['checkpoint']}`).",
        "",
        "| | all | dose >= 1e3 | " + " | ".join(t["by_dose"]) + " |",
        "|---|---|---|" + "---|" * len(t["by_dose"]),
        "| top-1 | "
        + fmt(t["all"])
        + " | "
        + fmt(t["dose_ge_1e3"])
        + " | "
        + " | ".join(fmt(v) for v in t["by_dose"].values())
        + " |",
        "",
        f"Identifiable queries (the truth's likelihood beats every other configuration of its group by at least "
        f"20:1): {t['identifiable']['n']} of {t['all']['n']}, {t['identifiable_dose_ge_1e3']['n']} of "
        f"{t['dose_ge_1e3']['n']} at dose >= 1e3; on them the CNN's top-1 is {t['identifiable']['cnn']:.2f} "
        f"({t['identifiable_dose_ge_1e3']['cnn']:.2f} at dose >= 1e3)."
        if "cnn" in t["identifiable"]
        else "",
        "",
        "| family | all doses | dose >= 1e3 |",
        "|---|---|---|",
    ]
    for f in t["by_family"]:
        L.append(f"| {f} | {fmt(t['by_family'][f])} | {fmt(t['by_family_dose_ge_1e3'][f])} |")
    L += ["", "| mode | all doses |", "|---|---|"] + [f"| {m} | {fmt(v)} |" for m, v in t["by_mode"].items()]
    r = res.get("refine")
    if r:
        doses = list(r["by_dose"])
        L += [
            "",
            f"## CNN + refine (the inference pipeline's two stages), HAADF queries at dose >= {r['min_dose']:.0e}",
            "",
            f"The CNN's {r['k']} nearest configurations (full gallery) are refined against the query "
            "(`surrogate.inference.refine`: pose, blur, scan distortion, defocus, from the conditions of the "
            "configuration's nearest gallery image) and ranked by the figure of merit; "
            + (
                "each candidate is fitted on its own. "
                if r["mode"] == "each"
                else "the first candidate of each group (material + zone axis) is fitted and its siblings are scored "
                "at that pose and defocus (`score_at_pose`). "
            )
            + f"The shortlist holds the right configuration for {r['shortlist_recall']:.2f} of the queries.",
            "",
            "| | all | " + " | ".join(doses) + " |",
            "|---|---|" + "---|" * len(doses),
        ]
        for key, name in (
            ("cnn", "CNN top-1"),
            ("cnn_refine", f"CNN top-{r['k']} + refine, ranked by FOM"),
            ("cnn_refine_residual", f"CNN top-{r['k']} + refine, ranked by residual 1 - R²"),
            ("ideal", "ideal observer (bound)"),
        ):
            L.append(
                f"| {name} | {r[key]:.2f} ({r['n']}) | "
                + " | ".join(f"{r['by_dose'][d][key]:.2f}" for d in doses)
                + " |"
            )
        L += [
            "",
            "Out-of-library detection, AUROC matched by dose (HAADF, dose >= the same limit): the best "
            "refined FOM and residual (image space) against the CNN's nearest distance.",
            "",
            "| set | FOM | residual | CNN distance |",
            "|---|---|---|---|",
        ]
        L += [
            f"| {s} | {v['fom']:.3f} | {v['residual']:.3f} | {v['cnn_distance']:.3f} |" for s, v in r["auroc"].items()
        ]
    L += [
        "",
        f"Re-rendering a query's own configuration reproduces its library image to a relative error of "
        f"{res['max_render_error']:.1e} at most.",
        "",
        f"Total time {res['seconds']:.0f} s. Reproduce: `{res['command']}`.",
        "",
    ]
    return "\n".join(L)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--library", default="demo_library")
    p.add_argument(
        "--checkpoint", default="checkpoints/embedding_demo.pt", help="CNN scored on the same choice ('' to skip)"
    )
    p.add_argument(
        "--quick", action="store_true", help="the retrieval benchmark's --quick queries (every third test source)"
    )
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--cache", default="/tmp/surrogate_retrieval_queries")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="K",
        help="also run CNN top-K + refine (the inference pipeline) on the HAADF queries (0: skip)",
    )
    p.add_argument(
        "--refine-mode",
        choices=("shared", "each"),
        default="shared",
        help="shared: fit the CNN's first candidate, score the others at its pose; each: fit every one",
    )
    p.add_argument(
        "--refine-min-dose", type=float, default=1e3, help="refine only queries of at least this dose [e/Å²]"
    )
    a = p.parse_args(argv)

    import torch

    from surrogate.io.files import atomic_write_text
    from surrogate.library import Library

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    lib = Library(a.library)
    test, _ = query_sources(lib, a.quick)
    queries, meta, ood, ood_meta = make_queries(lib, 4 if a.quick else 8, Path(a.cache), test)
    rows = ideal_observer(lib, meta, queries)
    gallery = CNNGallery(lib, a.checkpoint) if a.checkpoint else None
    cnn = cnn_within_group(lib, meta, queries, gallery) if gallery else None
    refined = None
    if a.refine and a.checkpoint:
        # HAADF only: the out-of-library queries are HAADF renderings, and multislice HRTEM
        # re-simulation for every refined candidate does not fit a CPU budget
        sel = [i for i, q in enumerate(meta) if q["mode"] == "haadf" and q["dose"] >= a.refine_min_dose]
        osel = [i for i, q in enumerate(ood_meta) if q["dose"] >= a.refine_min_dose]
        rmeta = [dict(meta[i], key=f"in:{i}") for i in sel] + [
            dict(ood_meta[i], key=f"ood:{i}", config_id="") for i in osel
        ]
        rimages = np.concatenate([queries[sel], ood[osel]])
        ck = gallery.emb.checkpoint_hash[:12]
        Path(a.cache).mkdir(parents=True, exist_ok=True)
        log = Path(a.cache) / f"refine_{lib.hash}_{ck}_{a.refine}_{a.refine_mode}.jsonl"
        rrows = cnn_refine(lib, gallery, rimages, rmeta, a.refine, log, a.refine_mode)
        refined = refine_table(rrows, {f"in:{r['query']}": r["top1"] for r in rows})
        refined.update(k=a.refine, min_dose=a.refine_min_dose, mode=a.refine_mode)
    res = {
        "quick": a.quick,
        "library": lib.hash,
        "checkpoint": a.checkpoint,
        "n_queries": len(rows),
        "machine": f"{platform.processor() or platform.machine()}, {a.threads} threads",
        "table": table(rows, cnn),
        "refine": refined,
        "rows": rows,
        "max_render_error": max(r["render_error"] for r in rows),
        "seconds": time.perf_counter() - t0,
        "command": "python benchmarks/retrieval_bound.py"
        + (" --quick" if a.quick else "")
        + (f" --checkpoint {a.checkpoint}" if a.checkpoint else "")
        + (f" --refine {a.refine} --refine-mode {a.refine_mode}" if a.refine else ""),
    }
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "retrieval_bound.json", json.dumps(res, indent=1))
    atomic_write_text(out / "retrieval_bound.md", markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
