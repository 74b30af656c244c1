"""`make bench`: both benchmarks against a fresh dev stack each, then one summary line."""

from __future__ import annotations

import argparse
import asyncio

from bench import pipeline, reminders
from bench.common import fresh_stack, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    pipeline.add_arguments(parser)
    parser.add_argument("--assignments", type=int, default=1_000_000)
    parser.add_argument("--agencies", type=int, default=2_000)
    parser.add_argument("--as-of", default="2010-06-30")
    args = parser.parse_args()
    print(machine())
    with fresh_stack() as stack:
        pipe = asyncio.run(pipeline.run(args, stack))
    reminder_args = argparse.Namespace(n=args.assignments, agencies=args.agencies,
                                       as_of=args.as_of)
    with fresh_stack({"HRTRACK_PASS_INTERVAL_SECONDS": "0"}) as stack:
        rem = asyncio.run(reminders.run(reminder_args, stack))
    print(f"{pipeline.summary(args, pipe)}; reminders: due-set {rem['due_set_ms']:.0f} ms")


if __name__ == "__main__":
    main()
