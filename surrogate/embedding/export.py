"""``python -m surrogate.embedding.export --checkpoint RUN/checkpoints/last.ckpt --out checkpoints/NAME.pt``:
write the slim, shippable checkpoint (network weights + library record, no optimiser state)."""

from __future__ import annotations

import argparse

from surrogate.errors import exit_on_user_error


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from surrogate.embedding.embed import export_checkpoint, load_embedder

    p = argparse.ArgumentParser(prog="python -m surrogate.embedding.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="Lightning checkpoint of an embedding run")
    p.add_argument("--out", required=True, help="file to write (e.g. checkpoints/embedding_demo.pt)")
    p.add_argument("--half", action="store_true", help="store float16 weights (half the size)")
    a = p.parse_args(argv)
    out = export_checkpoint(a.checkpoint, a.out, half=a.half)
    emb = load_embedder(out)
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB): {emb!r}")


if __name__ == "__main__":
    main()
