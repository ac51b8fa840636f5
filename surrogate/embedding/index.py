"""``python -m surrogate.embedding.index --library demo_library --checkpoint CKPT --out INDEX``:
embed every library image with a trained checkpoint and save the FAISS index (+ JSON sidecar)."""

from __future__ import annotations

import argparse

from surrogate.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from surrogate.embedding.embed import build_index

    p = argparse.ArgumentParser(prog="python -m surrogate.embedding.index", description=__doc__.split("\n\n")[0])
    p.add_argument("--library", default="demo_library", help="library directory (default: demo_library)")
    p.add_argument("--checkpoint", required=True, help="embedding checkpoint (Lightning .ckpt or exported .pt)")
    p.add_argument("--out", required=True, help="index file to write (a .json sidecar is written beside it)")
    p.add_argument(
        "--kind",
        default="auto",
        choices=["auto", "flat", "hnsw", "ivf", "ivfpq"],
        help="FAISS index kind (ivfpq: compressed, for libraries beyond memory)",
    )
    p.add_argument("--gpu", action="store_true", help="build on the GPUs when FAISS has them (faiss-gpu)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    a = p.parse_args(argv)
    index = build_index(a.library, a.checkpoint, a.out, kind=a.kind, device=a.device, gpu=a.gpu)
    print(f"indexed {len(index)} images of {a.library} ({index.built_kind}, dim {index.dim}) -> {a.out}")


if __name__ == "__main__":
    main()
