"""Command line: ``python -m surrogate.dft --out data/dft/cdte --max-structures N --batch 10``."""

from __future__ import annotations

import argparse
import os
import sys

EPILOG = """\
examples:
  # label everything not yet labelled, 10 frames per batch file (resumes where it stopped)
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 setsid nohup nice -n 19 \\
      python -m surrogate.dft --out data/dft/cdte --batch 10 > /tmp/dft_label.log 2>&1 < /dev/null &
  # four cores: four independent shards (no MPI needed), each writes its own batch files
  for i in 0 1 2 3; do python -m surrogate.dft --out data/dft/cdte --shard $i/4 > /tmp/dft_$i.log 2>&1 & done
  # list the structures and what is already done, compute nothing
  python -m surrogate.dft --out data/dft/cdte --list

GPAW is an optional dependency (pip install .[dft]; see docs/dft.md for the system libraries).
"""


def main(argv=None) -> int:
    from surrogate.errors import SurrogateError

    p = argparse.ArgumentParser(
        prog="python -m surrogate.dft",
        description="Label the CdTe structure list with GPAW (PBE) energies, forces and stress; "
        "resumable extxyz batches with the DFT settings in every frame.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out", default="data/dft/cdte", help="output folder of batch_*.extxyz files (default: %(default)s)"
    )
    p.add_argument(
        "--max-structures",
        type=int,
        default=None,
        metavar="N",
        help="label at most N new structures, then stop (default: all remaining)",
    )
    p.add_argument("--batch", type=int, default=10, help="frames per batch file (default: %(default)s)")
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="label every N-th structure starting at I, to run N processes on N cores (default: 0/1)",
    )
    p.add_argument(
        "--families",
        nargs="+",
        default=None,
        metavar="FAMILY",
        help="only these structure families (default: all; see --list)",
    )
    p.add_argument("--mode", choices=["pw", "lcao"], default="pw", help="GPAW mode (default: %(default)s)")
    p.add_argument("--ecut", type=float, default=300.0, help="plane-wave cutoff in eV (default: %(default)s)")
    p.add_argument("--smearing", type=float, default=0.1, help="Fermi-Dirac width in eV (default: %(default)s)")
    p.add_argument(
        "--kpt-density",
        type=float,
        default=12.0,
        help="k-points per axis = ceil(density / cell length in Å) (default: %(default)s, 2x2x2 for 8 atoms)",
    )
    p.add_argument("--no-stress", action="store_true", help="do not compute the stress")
    p.add_argument("--hours", type=float, default=None, help="start no new structure after this many hours")
    p.add_argument(
        "--gpaw-txt",
        default=None,
        metavar="DIR",
        help="write each structure's GPAW text output to DIR/<config_id>.txt (default: none)",
    )
    p.add_argument("--list", action="store_true", help="print the structure list with done/todo marks and exit")
    args = p.parse_args(argv)

    from surrogate.dft.label import DFTSettings, done_ids, label_one, run_job
    from surrogate.dft.structures import cdte_structures, estimated_cost, kpts_for, split_of

    try:
        try:
            i, n = (int(v) for v in args.shard.split("/"))
        except ValueError:
            raise SurrogateError(f"--shard {args.shard!r}: give I/N, e.g. 0/4") from None
        structures = cdte_structures(args.families)
        if args.list:
            done = done_ids(args.out)
            for k, a in enumerate(structures):
                mark = "done" if a.info["config_id"] in done else "todo"
                print(
                    f"{k:4d} {mark} {a.info['config_id']} {a.info['family']:14s} {len(a):3d} atoms "
                    f"k={'x'.join(map(str, kpts_for(a, args.kpt_density)))} cost~{estimated_cost(a):.1f} "
                    f"{split_of(a.info['config_id'], family=a.info['family'])}"
                )
            print(f"{len(structures)} structures, {sum(a.info['config_id'] in done for a in structures)} done")
            return 0
        settings = DFTSettings(
            mode=args.mode,
            ecut=args.ecut,
            smearing=args.smearing,
            kpt_density=args.kpt_density,
            stress=not args.no_stress,
        )
        labeller = None
        if args.gpaw_txt:
            os.makedirs(args.gpaw_txt, exist_ok=True)

            def labeller(atoms, st):
                return label_one(atoms, st, txt=os.path.join(args.gpaw_txt, f"{atoms.info['config_id']}.txt"))
        else:
            try:
                import gpaw  # noqa: F401
            except ImportError:
                raise SurrogateError("GPAW is not installed: pip install .[dft] (see docs/dft.md)") from None
        new = run_job(
            structures,
            args.out,
            settings,
            batch=args.batch,
            max_structures=args.max_structures,
            shard=(i, n),
            labeller=labeller,
            stop_after_s=None if args.hours is None else args.hours * 3600,
        )
        bad = sum(not f.info["converged"] for f in new)
        print(f"surrogate.dft: labelled {len(new)} structures ({bad} not converged, flagged)", flush=True)
    except SurrogateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
