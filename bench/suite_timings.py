"""Compare two `make test` logs: wall time, pytest sessions and their slowest tests.

Run `make test` from a fresh clone with `PYTEST_ADDOPTS=--durations=25` and the wall time
(`/usr/bin/time -f "WALL %e s" make test > run.log 2>&1`), once per commit, then
`python bench/suite_timings.py before.log after.log` prints one JSON object with both runs and
the after/before ratios.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

SESSION = re.compile(r"=+ (?P<summary>.*?) in (?P<seconds>[\d.]+)s(?: \([\d:]+\))? =+")
DURATION = re.compile(
    r"^(?:\d\d:\d\d:\d\d )?(?P<seconds>[\d.]+)s (?P<phase>call|setup|teardown)\s+(?P<test>\S+)"
)
WALL = re.compile(r"WALL (?P<seconds>[\d.]+) s")


def read_log(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace")
    sessions = [
        (m["summary"], float(m["seconds"]))
        for m in SESSION.finditer(text)
        if "passed" in m["summary"] or "failed" in m["summary"]
    ]
    slowest = sorted(
        (
            (float(m["seconds"]), m["phase"], m["test"])
            for line in text.splitlines()
            if (m := DURATION.match(line))
        ),
        reverse=True,
    )[:25]
    wall = WALL.search(text)
    return {
        "log": str(path),
        "make_test_wall_s": float(wall["seconds"]) if wall else None,
        "pytest_sessions": [{"summary": s, "seconds": t} for s, t in sessions],
        "pytest_s": round(sum(t for _, t in sessions), 2),
        "slowest": [{"seconds": t, "phase": p, "test": n} for t, p, n in slowest],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = read_log(args.before), read_log(args.after)
    ratios = {
        key: round(after[key] / before[key], 3)
        for key in ("make_test_wall_s", "pytest_s")
        if before[key] and after[key]
    }
    print(json.dumps({"before": before, "after": after, "after_over_before": ratios}, indent=2))


if __name__ == "__main__":
    main()
