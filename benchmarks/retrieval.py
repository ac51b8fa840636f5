"""Retrieval benchmark: the CNN embedding vs SIFT, HOG and the power-spectrum matcher on the same queries.

Queries come from the library's held-out test split (split by imaging condition: conditions no
training step saw): every noise-free test image is rotated by any angle and magnified by 0.8-1.2
(``surrogate.augment.rotate_scale``, reflection at the borders), then given Poisson noise at 10^2,
10^3, 10^4 and 10^5 e/Å² with seeds no library image used (one query per dose). The gallery is the
rest of the library (train + validation conditions), so a query's own source image is never in it.
Configurations *not* in the library measure out-of-library detection (AUROC of the distance to the
nearest gallery image): ``near`` = the same slabs with point defects drawn with another seed,
``far`` = materials the library does not hold with the library's lattice types (Ge diamond, GaAs
zincblende: the Si / CdTe projections at 1.04 / 0.87 times the size, inside the queries' unknown
0.8-1.2 scale and with normalised contrast, so their images are nearly the library's by
construction), ``lattice`` = other lattice types along [110] (fcc Au, bcc W, rock-salt PbTe): centred
rectangular column patterns, unlike the diamond / zincblende dumbbells (along [100] every cubic
lattice projects to a square lattice, so [100] would repeat the ``far`` problem); they are rendered with
``surrogate.simulate.render`` in the fast incoherent HAADF mode (multislice HRTEM renderings of
every query did not fit the CPU budget).

Metrics per method: top-1 / top-5 (configurations ranked by their nearest gallery image), mAP
(average precision of the gallery ranking, relevant = images of the query's configuration), each
by dose, rotation and scale; query latency (embed + FAISS search) at 1k, 10k and 100k entries
(the library's embeddings padded with random unit vectors), against SIFT's measured cost per
gallery image times the size.

With the pixel size known (as at inference: the drawn magnification undone), the row "cnn + lattice
check" applies inference's lattice-spacing check (``surrogate.inference.lattice``) to the CNN's 10
nearest configurations; its out-of-library score is the smallest lattice mismatch among them.

Galleries: the CNN searches all gallery images (what inference does). SIFT is slow
(one RANSAC match per gallery image), so all methods, the CNN included, are also compared on a
reduced gallery of ``--per-config`` images per configuration (noise-free ones first).

Usage: ``python benchmarks/retrieval.py --checkpoint checkpoints/embedding_demo.pt [--quick]``;
writes ``benchmarks/results/retrieval.json``, ``retrieval.md`` and ``retrieval.png`` (CNN examples).
Rendered queries are cached in ``--cache`` (default ``/tmp/surrogate_retrieval_queries``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from common import auroc

DOSES = (1e2, 1e3, 1e4, 1e5)
QUERY_SEED = 7_919  # base seed of the query conditions; checked disjoint from the library's seeds
ROT_BINS = (0, 90, 180, 270, 360)
SCALE_BINS = (0.8, 0.9333, 1.0667, 1.2001)
OOD_SETS = ("near", "far", "lattice")
#: out-of-library lattice types, imaged along [110] (ASE bulk arguments, experimental lattice constants [Å])
OTHER_LATTICES = [
    {"name": "Au", "crystalstructure": "fcc", "a": 4.078},
    {"name": "W", "crystalstructure": "bcc", "a": 3.165},
    {"name": "PbTe", "crystalstructure": "rocksalt", "a": 6.462},
]


# ----------------------------------------------------------------------------------------- queries
def _render_set(recipes, sim, n_per, shape, sampling, seed, label, forbidden_seeds, quick_modes=False):
    """Render ``n_per`` queries of every recipe; returns images and per-query metadata."""
    from surrogate.augment import rotate_scale
    from surrogate.library.build import _settings
    from surrogate.simulate import apply_dose, render, sample_conditions
    from surrogate.structures import build_structure

    settings = _settings(sim)
    rng = np.random.default_rng(seed)
    images, meta = [], []
    for u, recipe in enumerate(recipes):
        atoms = build_structure(recipe)
        conds = sample_conditions(
            n_per, sim.get("ranges") or {}, sim.get("modes") or [], seed=seed * 1_000_003 + u, sampling=sampling
        )
        clash = {c.seed for c in conds} & forbidden_seeds
        if clash:
            raise RuntimeError(f"query seeds {sorted(clash)[:3]} were used by the library: change QUERY_SEED")
        clean = render(atoms, conds, shape, settings, noise=False)
        rot = rng.uniform(0, 360, n_per)
        scale = rng.uniform(0.8, 1.2, n_per)
        dose = np.array([DOSES[(u + j) % len(DOSES)] for j in range(n_per)])
        geo = rotate_scale(clean, rot, scale)
        for j, c in enumerate(conds):
            images.append(apply_dose(geo[j], float(dose[j]), sampling, seed=c.seed, mode=c.mode))
            meta.append(
                {
                    "config_id": atoms.info["config_id"],
                    "family": atoms.info["family"],
                    "set": label,
                    "mode": c.mode,
                    "dose": float(dose[j]),
                    "rotation": float(rot[j]),
                    "scale": float(scale[j]),
                }
            )
        print(f"  {label} {u + 1}/{len(recipes)} {atoms.info['config_id']} ({atoms.info['family']})", flush=True)
    return np.stack(images).astype(np.float32), meta


def query_sources(lib, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """Library images the queries derive from (the test split's noise-free images when there are
    any; every third with ``quick``) and the per-image noisy mask of the whole library."""
    from surrogate.library import split_indices

    noisy = ~lib.noise_free()
    test = split_indices(lib, "test", "condition")
    test = test[~noisy[test]] if (~noisy[test]).any() else test
    return (test[::3] if quick else test), noisy


def make_queries(lib, n_ood: int, cache: Path, test_idx: np.ndarray, ood_per_config: int = 2):
    """In-library queries from the held-out (test-split) conditions and out-of-library renderings.

    In library: every noise-free library image of the test split (imaging conditions no training
    step saw) gives one query per dose, each with a fresh rotation, scale and noise seed. Out of
    library: ``near`` and ``far`` configurations rendered in the fast incoherent HAADF mode under
    conditions drawn from the library's ranges with fresh seeds.
    """
    from surrogate.augment import rotate_scale
    from surrogate.simulate import apply_dose
    from surrogate.structures import plan_structures

    path = cache / f"{lib.hash}_{len(test_idx)}_{n_ood}_{ood_per_config}_v3.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        return z["images"], json.loads(str(z["meta"])), z["ood_images"], json.loads(str(z["ood_meta"]))
    cfg = lib.manifest["config"]
    sim, scfg, lcfg = cfg["simulate"], cfg["structures"], cfg["library"]
    shape, sampling = tuple(lcfg["shape"]), float(lcfg["sampling"])
    used = set(lib.condition_column("seed").astype(np.int64).tolist())
    rng = np.random.default_rng(QUERY_SEED)
    cids = lib.config_ids()
    images, meta = [], []
    for i in test_idx:
        c = lib.conditions(int(i))
        geo = rotate_scale(
            np.repeat(lib.image(int(i))[None], len(DOSES), 0),
            rng.uniform(0, 360, len(DOSES)),
            rng.uniform(0.8, 1.2, len(DOSES)),
        )
        for j, dose in enumerate(DOSES):
            seed = QUERY_SEED * 1_000_003 + int(i) * len(DOSES) + j
            assert seed not in used
            images.append(apply_dose(geo[j], dose, sampling, seed=seed, mode=c.mode))
        meta += [
            {
                "config_id": f"{int(cids[i]):016x}",
                "source": int(i),
                "set": "in",
                "mode": c.mode,
                "dose": d,
                "rotation": 0.0,
                "scale": 1.0,
            }
            for d in DOSES
        ]
    # record the drawn geometry (same rng order as above)
    rng = np.random.default_rng(QUERY_SEED)
    for k in range(len(test_idx)):
        rot, sc = rng.uniform(0, 360, len(DOSES)), rng.uniform(0.8, 1.2, len(DOSES))
        for j in range(len(DOSES)):
            meta[k * len(DOSES) + j].update(rotation=float(rot[j]), scale=float(sc[j]))
    t = time.perf_counter()
    lib_ids = {f"{int(c):016x}" for c in np.unique(cids)}
    near_cfg = {**scfg, "bulk": False, "boundaries": [], "defects": {**scfg["defects"], "seed": 4242, "per_slab": 1}}
    far_cfg = {
        **scfg,
        "materials": [{"name": "Ge"}, {"name": "GaAs"}],
        "zone_axes": [[1, 1, 0], [1, 0, 0]],
        "defects": {**scfg["defects"], "per_slab": 0},
        "boundaries": [],
    }
    lattice_cfg = {**far_cfg, "materials": OTHER_LATTICES, "zone_axes": [[1, 1, 0]]}
    haadf = {**sim, "modes": [{"mode": "haadf", "method": "incoherent", "weight": 1.0}]}
    parts = []
    for k, (label, c) in enumerate((("near", near_cfg), ("far", far_cfg), ("lattice", lattice_cfg))):
        recipes = plan_structures(c)
        recipes = [recipes[i] for i in np.unique(np.linspace(0, len(recipes) - 1, n_ood).astype(int))]
        parts.append(_render_set(recipes, haadf, ood_per_config, shape, sampling, QUERY_SEED + 1 + k, label, used))
    ood_images, ood_meta = np.concatenate([p[0] for p in parts]), sum((p[1] for p in parts), [])
    keep = [i for i, m in enumerate(ood_meta) if m["config_id"] not in lib_ids]
    ood_images, ood_meta = ood_images[keep], [ood_meta[i] for i in keep]
    print(
        f"{len(images)} queries; rendered {len(ood_images)} out-of-library queries in {time.perf_counter() - t:.0f} s",
        flush=True,
    )
    cache.mkdir(parents=True, exist_ok=True)
    images = np.stack(images).astype(np.float32)
    np.savez(path, images=images, meta=json.dumps(meta), ood_images=ood_images, ood_meta=json.dumps(ood_meta))
    return images, meta, ood_images, ood_meta


# ----------------------------------------------------------------------------------------- metrics
def rank_metrics(dist: np.ndarray, gallery_cfg: np.ndarray, query_cfg: np.ndarray, groups: dict | None = None) -> dict:
    """Per-query top-1, top-5 (configurations ranked by their nearest gallery image) and AP; with
    ``groups`` (configuration -> material + zone-axis group), whether the top configuration is of
    the query's group (``group1``)."""
    classes, inv = np.unique(gallery_cfg, return_inverse=True)
    per_class = np.full((len(dist), len(classes)), np.inf)
    for c in range(len(classes)):
        per_class[:, c] = dist[:, inv == c].min(axis=1)
    order = np.argsort(per_class, axis=1, kind="stable")
    top = classes[order[:, 0]]
    truth = np.searchsorted(classes, query_cfg)
    valid = classes[np.clip(truth, 0, len(classes) - 1)] == query_cfg
    rank = np.argmax(order == truth[:, None], axis=1)
    rank[~valid] = len(classes)
    ap = np.zeros(len(dist))
    for q in range(len(dist)):
        order = np.argsort(dist[q], kind="stable")
        order = order[np.isfinite(dist[q][order])]  # infinite distance = not in this query's gallery
        rel = gallery_cfg[order] == query_cfg[q]
        if rel.any():
            hits = np.cumsum(rel)
            ap[q] = float((hits[rel] / (np.flatnonzero(rel) + 1)).mean())
    out = {"top1": rank == 0, "top5": rank < 5, "ap": ap, "nearest": per_class.min(axis=1)}
    if groups is not None:
        out["group1"] = np.array([groups.get(int(t)) == groups.get(int(c)) for t, c in zip(top, query_cfg)])
    return out


def lattice_rerank(
    lib, sig: np.ndarray, dist: np.ndarray, gallery_cfg: np.ndarray, top: int = 10, tolerance: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Inference's lattice check (``surrogate.inference.lattice.check_signatures``, the shipped stage)
    applied to a distance matrix (Q, G), given the queries' lattice signatures ``sig`` (Q, 3) at
    their known pixel size: each query's ``top`` nearest configurations go through the check as
    candidates (inference keeps ``retrieval.candidates`` = 10), in its output order; the distances
    are offset so that order holds (the consistent ones first, the others after them, the rest of
    the library last). Also returns the check's novelty score: the smallest mismatch among the
    ``top`` configurations (inference flags the image when it exceeds the tolerance)."""
    from surrogate.inference.lattice import LatticeReference, check_signatures
    from surrogate.inference.rank import Candidate
    from surrogate.inference.settings import LatticeSettings

    settings = LatticeSettings() if tolerance is None else LatticeSettings(tolerance=tolerance)
    ref = LatticeReference.of(lib)
    classes, inv = np.unique(gallery_cfg, return_inverse=True)
    per_class = np.stack([dist[:, inv == c].min(axis=1) for c in range(len(classes))], 1)
    penalty = np.full(per_class.shape, 4.0)  # cosine distances are <= 2: outside the shortlist comes last
    novelty = np.full(len(per_class), np.inf)
    for q in range(len(per_class)):
        order = [int(c) for c in np.argsort(per_class[q], kind="stable")[:top] if np.isfinite(per_class[q, c])]
        cands = [
            Candidate(config_id=f"{int(classes[c]):016x}", distance=float(per_class[q, c]), window=0, entry=c, rank=r)
            for r, c in enumerate(order, 1)
        ]
        _, record = check_signatures(ref, sig[q : q + 1], cands, settings)
        for c in cands:  # consistent ones keep their distance; the others move behind them (when any is consistent)
            penalty[q, c.entry] = 2.0 if (not record["mismatch"] and c.lattice_mismatch > settings.tolerance) else 0.0
        novelty[q] = min((c.lattice_mismatch for c in cands), default=np.inf)
    return dist + penalty[:, inv], novelty


def known_scale_signatures(lib, images: np.ndarray, meta: list[dict]) -> np.ndarray:
    """Lattice signatures of benchmark images with their pixel size known: the drawn magnification
    undone (inference resamples to the library's sampling from the file's calibration)."""
    from surrogate.inference.lattice import signatures

    sig = signatures(images, lib.sampling)
    scale = np.array([m["scale"] for m in meta])
    sig[:, :2] /= scale[:, None]
    return sig


def summarise(m: dict, meta: list[dict]) -> dict:
    dose = np.array([q["dose"] for q in meta])
    rot = np.array([q["rotation"] for q in meta])
    scale = np.array([q["scale"] for q in meta])

    def block(mask):
        if not mask.any():
            return {"n": 0}
        b = {
            "n": int(mask.sum()),
            "top1": float(m["top1"][mask].mean()),
            "top5": float(m["top5"][mask].mean()),
            "mAP": float(m["ap"][mask].mean()),
        }
        if "group1" in m:
            b["group_top1"] = float(m["group1"][mask].mean())
        return b

    out = {"all": block(np.ones(len(meta), bool))}
    out["by_dose"] = {f"{d:.0e}": block(dose == d) for d in DOSES}
    out["by_rotation"] = {f"{a}-{b}": block((rot >= a) & (rot < b)) for a, b in zip(ROT_BINS[:-1], ROT_BINS[1:])}
    out["by_scale"] = {
        f"{a:.2f}-{min(b, 1.2):.2f}": block((scale >= a) & (scale < b)) for a, b in zip(SCALE_BINS[:-1], SCALE_BINS[1:])
    }
    out["dose_ge_1e3"] = block(dose >= 1e3)
    return out


# ----------------------------------------------------------------------------------------- methods
def baseline_distances(method: str, gallery: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Distances (Q, G), fit time and mean query time [s] of a classical retriever."""
    from surrogate.baseline import make_retriever

    r = make_retriever(method)
    t = time.perf_counter()
    r.fit(gallery)
    fit = time.perf_counter() - t
    t = time.perf_counter()
    d = np.stack([r.distances(q) for q in queries])
    return d, fit, (time.perf_counter() - t) / len(queries)


def latency(emb, lib_vecs: np.ndarray, query: np.ndarray, sizes=(1_000, 10_000, 100_000), repeats: int = 30) -> dict:
    """Median time [ms] of embed(one image) + search(k=5) at each index size (flat and HNSW)."""
    import faiss

    from surrogate.index import EmbeddingIndex

    rng = np.random.default_rng(0)
    out = {}
    emb.embed(query[:1])  # warm up
    t_embed = []
    for _ in range(repeats):
        t = time.perf_counter()
        emb.embed(query[:1])
        t_embed.append(time.perf_counter() - t)
    embed_ms = 1e3 * float(np.median(t_embed))
    out["embed_ms"] = embed_ms
    for n in sizes:
        pad = rng.standard_normal((max(0, n - len(lib_vecs)), lib_vecs.shape[1])).astype(np.float32)
        pad /= np.linalg.norm(pad, axis=1, keepdims=True)
        vecs = np.concatenate([lib_vecs, pad])[:n]
        z = emb.embed(query[:1])
        for kind in ("flat", "hnsw"):
            index = EmbeddingIndex(vecs.shape[1], kind=kind).build(vecs)
            index.search(z, 5)
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                index.search(z, 5)
                ts.append(time.perf_counter() - t)
            search_ms = 1e3 * float(np.median(ts))
            out[f"{n}_{kind}"] = {"search_ms": search_ms, "total_ms": embed_ms + search_ms}
    out["embed_min_ms"] = 1e3 * float(np.min(t_embed))
    out["faiss_threads"] = faiss.omp_get_max_threads()
    out["load_average"] = list(os.getloadavg())
    return out


def figure(path: Path, queries, meta, dist, gallery_images, gallery_cfg, n=8):
    import matplotlib.pyplot as plt

    from surrogate.embedding.figures import retrieval_figure

    qcfg = np.array([q["config_id"] for q in meta])
    pick = np.linspace(0, len(queries) - 1, n).astype(int)
    top = np.argsort(dist[pick], axis=1)[:, :5]
    fig = retrieval_figure(queries[pick], gallery_images[top], gallery_cfg[top] == qcfg[pick, None])
    for r, i in enumerate(pick):
        fig.axes[r * 6].set_ylabel(f"{meta[i]['dose']:.0e}\n{meta[i]['rotation']:.0f}°", fontsize=6)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    L = [
        f"# Retrieval benchmark{' (quick)' if res['quick'] else ''}",
        "",
        f"Library `{res['library']}` ({res['library_images']} images, {res['library_configs']} configurations), "
        f"checkpoint `{res['checkpoint']}` ({res['backbone']}). {res['n_queries']} queries "
        f"({res['n_per_config']} per configuration: unseen conditions and seeds, any rotation, scale 0.8-1.2, "
        f"dose 1e2-1e5 e/Å²); {res['n_ood']} out-of-library queries. Machine: {res['machine']}.",
        "",
    ]
    methods = list(res["methods"])
    L += [
        "## Accuracy",
        "",
        "Material + zone axis: the top configuration is of the query's material and zone axis (its "
        "group: the bulk slab, its point defects and boundaries), whatever the configuration.",
        "",
        "| method | gallery | top-1 | top-5 | mAP | top-1 at dose >= 1e3 | material + zone axis (>= 1e3) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in methods:
        r = res["methods"][name]
        a, hi = r["summary"]["all"], r["summary"]["dose_ge_1e3"]
        g = f"{a['group_top1']:.3f} ({hi['group_top1']:.3f})" if "group_top1" in a else "-"
        L.append(
            f"| {name} | {r['gallery']} | {a['top1']:.3f} | {a['top5']:.3f} | {a['mAP']:.3f} | {hi['top1']:.3f} | {g} |"
        )
    for key, title in (("by_dose", "dose [e/Å²]"), ("by_rotation", "rotation [deg]"), ("by_scale", "scale")):
        bins = list(res["methods"][methods[0]]["summary"][key])
        L += [
            "",
            f"### Top-1 / mAP by {title}",
            "",
            "| method | " + " | ".join(bins) + " |",
            "|---|" + "---|" * len(bins),
        ]
        for name in methods:
            s = res["methods"][name]["summary"][key]
            L.append(
                f"| {name} | "
                + " | ".join(f"{s[b]['top1']:.2f} / {s[b]['mAP']:.2f}" if s[b]["n"] else "-" for b in bins)
                + " |"
            )
    if any("lattice check" in n for n in methods):
        L += [
            "",
            '"cnn + lattice check (pixel size known)": inference\'s lattice-spacing check '
            "(`surrogate.inference.lattice`) on the CNN's 10 nearest configurations, with the queries' drawn "
            "magnification undone (a file's pixel size is known at inference; the scale-invariant CNN cannot use it). "
            "Its out-of-library score below is the smallest lattice mismatch among those 10.",
        ]
    L += [
        "",
        "## Out-of-library detection (AUROC of the nearest distance)",
        "",
        "near: the library's slabs with point defects at other sites; far: Ge and GaAs, the library's lattice "
        "types at 1.04 / 0.87 times its sizes (inside the queries' unknown 0.8-1.2 scale, so nearly "
        "indistinguishable by construction); lattice: fcc Au, bcc W, rock-salt PbTe along [110] (other column patterns).",
    ]
    for key, intro in (
        ("auroc", "Pooled over all in-library queries."),
        (
            "auroc_matched",
            "Matched: HAADF in-library queries against the (HAADF) out-of-library ones of "
            "the same dose, AUROC per dose averaged over the doses (pooled, the noise level of a query moves "
            "its nearest distance more than novelty does).",
        ),
    ):
        L += [
            "",
            intro,
            "",
            "| method | near (other defect sites) | far (Ge, GaAs) | lattice (Au, W, PbTe) | all |",
            "|---|---|---|---|---|",
        ]
        for name in methods:
            o = res["methods"][name].get(key)
            if o:
                L.append(
                    f"| {name} | " + " | ".join(f"{o.get(k, float('nan')):.3f}" for k in (*OOD_SETS, "all")) + " |"
                )
    lat = res["latency"]
    L += [
        "",
        f"## Query latency (one image: embed + search k=5), {lat.get('threads', 2)} thread(s)",
        "",
        f"CNN embedding alone: {lat['cnn']['embed_ms']:.1f} ms median, {lat['cnn']['embed_min_ms']:.1f} ms best; "
        f"load average during the measurement {lat['cnn']['load_average'][0]:.1f} on {os.cpu_count()} cores "
        "(other jobs share them).",
        "",
        "| entries | CNN flat [ms] | CNN HNSW [ms] | SIFT [ms] | SIFT / CNN (best) |",
        "|---|---|---|---|---|",
    ]
    for n in (1_000, 10_000, 100_000):
        f, h = lat["cnn"][f"{n}_flat"]["total_ms"], lat["cnn"][f"{n}_hnsw"]["total_ms"]
        s = lat["sift_ms_per_entry"] * n + lat["sift_feature_ms"]
        L.append(f"| {n:,} | {f:.1f} | {h:.1f} | {s:,.0f} | {s / min(f, h):,.0f}x |")
    L += [
        "",
        f"SIFT: {lat['sift_ms_per_entry']:.2f} ms per gallery image (measured on {lat['sift_gallery']} "
        f"images, linear in the gallery size) + {lat['sift_feature_ms']:.1f} ms of query features. "
        f"HOG: {lat['hog_ms_per_query']:.1f} ms, spectrum: {lat['spectrum_ms_per_query']:.1f} ms per query "
        f"against {lat['sift_gallery']} images.",
        "",
        f"Total time {res['seconds']:.0f} s. Reproduce: `{res['command']}`.",
        "",
    ]
    return "\n".join(L)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--library", default="demo_library")
    p.add_argument("--checkpoint", default="checkpoints/embedding_demo.pt")
    p.add_argument(
        "--quick",
        action="store_true",
        help="4 queries per configuration (8 in full), 4 gallery images per configuration",
    )
    p.add_argument("--per-config", type=int, default=None, help="reduced gallery: images per configuration")
    p.add_argument("--out", default="benchmarks/results", help="directory of retrieval.json / .md / .png")
    p.add_argument("--cache", default="/tmp/surrogate_retrieval_queries")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ood-per-config", type=int, default=2, help="renderings of each out-of-library configuration")
    a = p.parse_args(argv)

    import faiss
    import torch

    from surrogate.embedding import load_embedder
    from surrogate.io.files import atomic_write_text
    from surrogate.library import Library

    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    t0 = time.perf_counter()
    lib = Library(a.library)
    emb = load_embedder(a.checkpoint, library=lib)
    from surrogate.library import split_indices

    n_ood = 4 if a.quick else 8
    per_config = a.per_config or (4 if a.quick else 8)
    test, noisy = query_sources(lib, a.quick)
    queries, meta, ood, ood_meta = make_queries(lib, n_ood, Path(a.cache), test, a.ood_per_config)
    n_per = len(queries) / max(1, len(np.unique([q["config_id"] for q in meta])))
    qcfg = np.array([int(q["config_id"], 16) for q in meta], dtype=np.uint64)

    all_images = np.asarray(lib.group["images"][:], dtype=np.float32)
    gallery = np.setdiff1d(np.arange(len(lib)), split_indices(lib, "test", "condition"))  # train + val conditions
    images, cfg, noisy = all_images[gallery], lib.config_ids()[gallery], noisy[gallery]
    small = np.concatenate(
        [np.flatnonzero(cfg == c)[np.argsort(noisy[cfg == c], kind="stable")][:per_config] for c in np.unique(cfg)]
    )

    res = {
        "quick": a.quick,
        "library": lib.hash,
        "library_images": len(lib),
        "library_configs": int(len(np.unique(cfg))),
        "checkpoint": str(a.checkpoint),
        "checkpoint_hash": emb.checkpoint_hash,
        "backbone": emb.config["backbone"],
        "n_queries": len(queries),
        "n_per_config": round(n_per, 1),
        "n_ood": len(ood),
        "methods": {},
        "machine": f"{platform.processor() or platform.machine()}, {a.threads} threads",
        "command": "python benchmarks/retrieval.py"
        + (" --quick" if a.quick else "")
        + f" --checkpoint {a.checkpoint}"
        + (f" --threads {a.threads}" if a.threads != 2 else "")
        + (f" --ood-per-config {a.ood_per_config}" if a.ood_per_config != 2 else ""),
    }

    t = time.perf_counter()
    lib_vecs = emb.embed(images)  # gallery: the train and validation conditions (the test split is the queries' source)
    zq, zo = emb.embed(queries), emb.embed(ood)
    print(f"embedded {len(images) + len(queries) + len(ood)} images in {time.perf_counter() - t:.1f} s", flush=True)
    ood_kind = np.array([m["set"] for m in ood_meta])
    ood_dose = np.array([m["dose"] for m in ood_meta])
    q_dose, q_haadf = np.array([q["dose"] for q in meta]), np.array([q["mode"] == "haadf" for q in meta])

    def matched_auroc(near_in, near_out, sel):
        """AUROC within each dose, HAADF in-library queries only (the out-of-library renderings are
        HAADF), averaged over the doses: noise level and mode no longer stand in for novelty."""
        vals = []
        for d in DOSES:
            inside, outside = near_in[q_haadf & (q_dose == d)], near_out[sel & (ood_dose == d)]
            if len(inside) and len(outside):
                vals.append(auroc(inside, outside))
        return float(np.mean(vals)) if vals else float("nan")

    groups = lib.groups()

    def record(name, gallery_label, dist, dist_ood, gcfg, scores=None):
        """``scores``: (in-library, out-of-library) novelty scores replacing the nearest distances."""
        m = rank_metrics(dist, gcfg, qcfg, groups)
        entry = {"gallery": gallery_label, "summary": summarise(m, meta)}
        if dist_ood is not None or scores is not None:
            near_i, near_o = scores if scores is not None else (m["nearest"], dist_ood.min(axis=1))
            entry["auroc"] = {
                k: auroc(near_i, near_o[ood_kind == k]) if (ood_kind == k).any() else float("nan") for k in OOD_SETS
            }
            entry["auroc"]["all"] = auroc(near_i, near_o)
            entry["auroc_matched"] = {k: matched_auroc(near_i, near_o, ood_kind == k) for k in OOD_SETS}
            entry["auroc_matched"]["all"] = matched_auroc(near_i, near_o, np.ones(len(near_o), bool))
        res["methods"][name] = entry
        s = entry["summary"]
        print(
            f"{name:>14} [{gallery_label}] top1 {s['all']['top1']:.3f} top5 {s['all']['top5']:.3f} "
            f"mAP {s['all']['mAP']:.3f} | by dose " + " ".join(f"{k}:{v['top1']:.2f}" for k, v in s["by_dose"].items()),
            flush=True,
        )
        return m

    d_full = 1 - zq @ lib_vecs.T
    record("cnn", f"library train+val ({len(images)})", d_full, 1 - zo @ lib_vecs.T, cfg)
    # what inference can use when the microscopist gives retrieval.mode and retrieval.elements:
    # only gallery images of the query's imaging mode and of configurations of its elements
    from ase.formula import Formula

    from surrogate.library.store import int_to_id
    from surrogate.simulate.conditions import MODES

    records = lib.structures()
    elems = {c: frozenset(Formula(records[int_to_id(c)].formula).count()) for c in np.unique(cfg)}
    g_mode = np.array([MODES[int(v)] for v in lib.condition_column("mode")[gallery]])
    known = (np.array([q["mode"] for q in meta])[:, None] == g_mode[None, :]) & (
        np.array([elems[c] for c in qcfg])[:, None] == np.array([elems[c] for c in cfg])[None, :]
    )
    record(
        "cnn (mode + elements known)", "same mode and elements of train+val", np.where(known, d_full, np.inf), None, cfg
    )
    # what inference adds with the file's pixel size (always known there): the lattice-spacing check
    # re-orders the 10 nearest configurations and its smallest mismatch is the novelty score
    d_lat, s_in = lattice_rerank(lib, known_scale_signatures(lib, queries, meta), d_full, cfg)
    _, s_out = lattice_rerank(lib, known_scale_signatures(lib, ood, ood_meta), 1 - zo @ lib_vecs.T, cfg)
    record(
        "cnn + lattice check (pixel size known)",
        f"library train+val ({len(images)})",
        d_lat,
        None,
        cfg,
        scores=(s_in, s_out),
    )
    Path(a.out).mkdir(parents=True, exist_ok=True)
    figure(Path(a.out) / "retrieval.png", queries, meta, d_full, images, cfg)
    g_label = f"{per_config}/config ({len(small)})"
    record("cnn (reduced)", g_label, 1 - zq @ lib_vecs[small].T, 1 - zo @ lib_vecs[small].T, cfg[small])
    lat = {"sift_gallery": len(small)}
    for method in ("hog", "spectrum", "sift"):
        d, fit, per_q = baseline_distances(method, images[small], np.concatenate([queries, ood]))
        lat[f"{method}_ms_per_query"] = 1e3 * per_q
        record(method, g_label, d[: len(queries)], d[len(queries) :], cfg[small])
        print(f"  {method}: fit {fit:.1f} s, {1e3 * per_q:.1f} ms per query", flush=True)
    # SIFT cost split into query features + per-gallery-image matching
    from surrogate.baseline import SIFTRetriever

    sift = SIFTRetriever().fit(images[small[:64]])
    t = time.perf_counter()
    for q in queries[:10]:
        sift._features(q)
    lat["sift_feature_ms"] = 1e3 * (time.perf_counter() - t) / 10
    lat["sift_ms_per_entry"] = max(lat["sift_ms_per_query"] - lat["sift_feature_ms"], 0.0) / len(small)
    lat["cnn"] = latency(emb, lib_vecs, queries)
    lat["threads"] = a.threads
    res["latency"] = lat
    res["seconds"] = time.perf_counter() - t0
    out = Path(a.out)
    atomic_write_text(out / "retrieval.json", json.dumps(res, indent=1))
    atomic_write_text(out / "retrieval.md", markdown(res))
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
