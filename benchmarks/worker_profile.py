"""Profile one streamcalc worker with py-spy and split its time into the cost model's buckets.

    .venv/bin/python -m benchmarks.worker_profile seed          # also: deep --entries 200000,
                                                                #       wide --entries 20000,
                                                                #       keyed (8 partitions)

Needs ``pip install py-spy``. See "Cost model" in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import workloads
from benchmarks.processes import Workers
from benchmarks.streams import (
    client_for,
    load_graph,
    new_ns,
    partition_keys,
    prefill_partitions,
    progress,
)

#: Buckets of a worker's time, matched leaf-first against py-spy's frames (first match wins).
PROFILE_BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting for Redis (socket)", ("recv (", "recv_into (", "read_from_socket (", "select (")),
    ("sending commands", ("sendall (", "pack_command", "send_packed_command")),
    ("evaluating waves", ("run_wave (",)),
    ("decoding entries", ("decode_entry (", "Engine._decode (")),
    ("building commit arguments", ("Engine._request (", "_commit_args (")),
    ("after-commit bookkeeping (metrics, cache)", ("Engine._committed (", "Engine._settle (")),
    ("prefetching slot state", ("Engine._prefetch (",)),
    ("parsing replies", ("read_response (",)),
)


def profile_buckets(raw_path: str) -> list[tuple[str, float]]:
    """Share of py-spy samples (``--format raw``) per bucket of :data:`PROFILE_BUCKETS`."""
    counts: dict[str, int] = {}
    total = 0
    for line in Path(raw_path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")[::-1]
        bucket = next(
            (
                name
                for frame in frames
                for name, keys in PROFILE_BUCKETS
                if any(k in frame for k in keys)
            ),
            "other",
        )
        counts[bucket] = counts.get(bucket, 0) + int(count)
        total += int(count)
    return sorted(((k, v / max(1, total)) for k, v in counts.items()), key=lambda kv: -kv[1])


def profile(name: str, entries: int, seconds: int, out: str, batch: int = 500) -> None:
    """Sample one worker draining ``entries`` prefilled entries of workload ``name`` with
    py-spy (``pip install py-spy``; idle samples included, so waiting on Redis shows)."""
    from streamcalc.embedded import EmbeddedRedis

    spy = Path(sys.executable).with_name("py-spy")
    with EmbeddedRedis() as server:
        client = client_for(server.url)
        wl = workloads.build(name, entries)
        filled = prefill_partitions(client, "bench:template:profile", wl)
        ns = new_ns("profile")
        parts = partition_keys(ns, wl)
        load_graph(client, ns, wl)
        for template, keys in zip(filled.templates, parts, strict=True):
            client.execute_command("COPY", template, keys.input)
        last_ids = [ids[-1] for ids in filled.ids]
        with Workers(server.url, ns, 1, batch=batch, block_ms=50) as procs:
            while not progress(client, ns, parts).started():
                procs.check_alive()
                time.sleep(0.001)
            subprocess.run(
                [str(spy), "record", "--pid", str(procs.pids[0]), "--duration", str(seconds),
                 "--rate", "250", "--idle", "--nonblocking", "--format", "raw", "-o", out],
                check=True, capture_output=True,
            )  # fmt: skip
            if progress(client, ns, parts).drained(last_ids):
                print("warning: the stream drained before the profile ended", file=sys.stderr)
    for bucket, share in profile_buckets(out):
        print(f"{share * 100:5.1f}%  {bucket}")


def main(argv: list[str] | None = None) -> None:
    """Command line: the workload, its entries, the seconds to sample, the raw output file."""
    parser = argparse.ArgumentParser(description="Profile one streamcalc worker with py-spy.")
    parser.add_argument("workload", choices=sorted(workloads.BUILDERS))
    parser.add_argument("--entries", type=int, default=400_000)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--out", default="profile.raw")
    opts = parser.parse_args(argv)
    profile(opts.workload, opts.entries, opts.seconds, opts.out)


if __name__ == "__main__":
    main()
