"""Per process: collections per generation, their total and longest pause (see sitecustomize.py).

    python bench/gc_pauses/summary.py DIR [--after UNIX_TIME]
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("--after", type=float, default=0.0, help="only collections after this wall time")
    args = p.parse_args()
    for path in sorted(Path(args.dir).glob("gc_*.txt")):
        by_gen: dict[int, list[float]] = collections.defaultdict(list)
        for line in path.read_text().splitlines():
            t, gen, seconds, _ = line.split()
            if float(t) >= args.after:
                by_gen[int(gen)].append(float(seconds))
        parts = [f"gen {g}: {len(v)} collections, {sum(v) * 1e3:.0f} ms in all, longest {max(v) * 1e3:.1f} ms"
                 for g, v in sorted(by_gen.items())]
        print(f"{path.stem[3:]:>8}  " + ("; ".join(parts) or "none"))


if __name__ == "__main__":
    main()
