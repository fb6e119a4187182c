"""Summarise py-spy collapsed stacks (``--format raw``): top functions by own and total share.

    python3 -m benchmarks.hotspots PROFILE.txt [--top 20] [--thread NAME]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def parse(path: Path, thread: str | None) -> list[tuple[list[str], int]]:
    """(frames outermost first, samples) per line; frames named ``file:function``."""
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if thread is not None and thread not in frames[0]:
            continue
        stacks.append(([frame_name(f) for f in frames], int(count)))
    return stacks


def frame_name(frame: str) -> str:
    match = FRAME.match(frame)
    if match is None:
        return frame
    return f"{short_path(match['file'])}:{match['function']}"


def short_path(file: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def shares(stacks: list[tuple[list[str], int]]) -> tuple[Counter[str], Counter[str], int]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for frames, count in stacks:
        samples += count
        own[frames[-1]] += count
        for name in set(frames[1:]):  # frames[0] is the thread with --threads
            total[name] += count
    return own, total, samples


def render(own: Counter[str], total: Counter[str], samples: int, top: int) -> str:
    lines = [f"samples: {samples}", "", "own time (self):"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "total time (inclusive):"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in total.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.hotspots")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--thread", default=None, help="only stacks of threads named this")
    args = parser.parse_args(argv)
    own, total, samples = shares(parse(args.profile, args.thread))
    print(render(own, total, samples, args.top) if samples else "no samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
