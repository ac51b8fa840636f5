"""Inference entry point: ``python infer.py image=<file> [key=value ...]`` (same as ``surrogate-infer``).

Reads one micrograph, matches it against the library (CNN embedding + FAISS, or method=sift|hog),
ranks the candidates by image distance and energy, refines the top ones against the image, and
writes ``candidates.json``, structures, overlay PNGs and ``report.html`` into ``output_dir``.
See ``python infer.py --help`` and surrogate/configs/infer.yaml.
"""

from surrogate.inference.cli import infer, main

__all__ = ["infer", "main"]

if __name__ == "__main__":
    main()
