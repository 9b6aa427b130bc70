"""``python -m difgan.compare <run folders | sweep folders | globs> [--out DIR]``: the comparison table
(Markdown and CSV, mean +- std over seeds, one metric protocol per row) and plots of a set of runs.
``--wandb entity/project[/group]`` reads the runs from W&B instead. docs/compare.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from difgan.errors import DifganError, run_reporting_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m difgan.compare", description=__doc__.split("\n")[0])
    p.add_argument("targets", nargs="*", help="run folders, folders holding runs (a sweep), or globs")
    p.add_argument("--out", help="output folder (default: <the one target folder>/compare, else ./compare)")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT[/GROUP]", help="read the runs from W&B instead")
    return p.parse_args(argv)


class CompareError(DifganError):
    pass


def compare_main(args: argparse.Namespace) -> int:
    from difgan.analysis import compare, load_runs

    if bool(args.targets) == bool(args.wandb):
        raise CompareError("give run folders (or a sweep folder, or globs) or --wandb entity/project[/group]")
    if args.wandb:
        from difgan.analysis.wandb_runs import load_wandb_runs

        try:
            runs = load_wandb_runs(args.wandb)
        except ValueError as e:
            raise CompareError(str(e)) from None
    else:
        try:
            runs = load_runs(args.targets)
        except FileNotFoundError as e:
            raise CompareError(str(e)) from None
    single = len(args.targets) == 1 and Path(args.targets[0]).is_dir()
    out = Path(args.out) if args.out else (Path(args.targets[0]) / "compare" if single else Path("compare"))
    comparison, files = compare(runs, out)
    print((out / "table.md").read_text().split("\n![")[0])
    print(f"{len(runs)} runs, {len(comparison.rows)} rows -> " + ", ".join(str(p) for p in files.values()))
    return 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run_reporting_errors(compare_main, args)


if __name__ == "__main__":
    main()
