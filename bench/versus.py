"""One bench, two versions of tideline, taking turns in one run: before and after a change.

``python bench/versus.py --before <commit> [--rounds 3] <bench> [its arguments]`` checks
``<commit>`` out into a temporary git worktree, then runs ``bench/<bench>`` of each tree
(its own copy of the bench, on its own code: ``PYTHONPATH`` its runtime and operator)
``--rounds`` times, in the order before, after, after, before, before, after... so that
neither always goes first on a machine that warms up or gets busier. Every run's output is
printed as it comes.

Then one table: each line the two versions printed alike (the same words, numbers aside;
a bench's table rows, as a rule), with the median of each number over the rounds before
and after, and ``after/before`` of each number that is not alike in every run. The bench's own baselines (River,
redis-py, a bare Starlette app: the same code in both trees) are rows too: how much they
moved between the trees' runs is how much of a difference is the machine's.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def run(tree: Path, bench: str, args: list[str]) -> str:
    """The bench of ``tree`` on ``tree``'s code; its output, printed as it comes."""
    env = {**os.environ, "PYTHONPATH": f"{tree}/runtime:{tree}/operator:{tree}"}
    cmd = [sys.executable, str(tree / "bench" / bench), *args]
    out: list[str] = []
    with subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        for line in p.stdout:
            print(f"  {line}", end="", flush=True)
            out.append(line)
    if p.returncode:
        raise SystemExit(f"{tree / 'bench' / bench} exited {p.returncode}")
    return "".join(out)


def rows(output: str) -> dict[str, list[float]]:
    """Each line with numbers, keyed by its words (numbers as ``#``): its numbers."""
    found = {}
    for line in output.splitlines():
        numbers = NUMBER.findall(line)
        if numbers:
            found[NUMBER.sub("#", line.strip())] = [float(n.replace(",", "")) for n in numbers]
    return found


def table(before: list[dict[str, list[float]]], after: list[dict[str, list[float]]]) -> str:
    """Lines both versions printed (the first run's order), medians before and after."""

    def medians(runs: list[dict[str, list[float]]], key: str) -> list[float] | None:
        seen = [r[key] for r in runs if key in r]
        if not seen or len({len(s) for s in seen}) != 1:
            return None
        return [statistics.median(column) for column in zip(*seen, strict=True)]

    out = ["| line | before | after | after/before |", "|---|---|---|---|"]
    for key in after[0]:
        b, a = medians(before, key), medians(after, key)
        if b is None or a is None or len(a) != len(b):
            continue
        # (a number alike in every run is a label's: ``0/1``, ``64 rows``)
        ratios = [f"{y / x:.2f}x" for x, y in zip(b, a, strict=True) if x != y and x]
        line = key.strip("| ").replace(" | ", " · ")
        out.append(f"| {line} | {_numbers(b)} | {_numbers(a)} | {' / '.join(ratios)} |")
    return "\n".join(out)


def _numbers(values: list[float]) -> str:
    return " / ".join(f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" for v in values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the commit to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("bench", help="a file of bench/, e.g. serve.py")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the bench's own arguments")
    args = ap.parse_args()
    results: dict[str, list[dict[str, list[float]]]] = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="tideline-before-") as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(old),
                        args.before], check=True)  # fmt: skip
        try:
            trees = {"before": old, "after": ROOT}
            for i in range(args.rounds):
                order = ["before", "after"] if i % 2 == 0 else ["after", "before"]
                for name in order:
                    print(f"== round {i + 1}, {name} ({args.bench})", flush=True)
                    results[name].append(rows(run(trees[name], args.bench, args.args)))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)],
                           check=False)  # fmt: skip
    print(f"\n{args.bench}, before ({args.before}) and after (this checkout), "
          f"medians of {args.rounds} rounds taking turns:\n")  # fmt: skip
    print(table(results["before"], results["after"]))


if __name__ == "__main__":
    main()
