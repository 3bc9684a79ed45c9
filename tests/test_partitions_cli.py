"""graph load --partitions, partition KEY and send --key from the command line."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
import redis
from helpers import drain

from streamcalc.cli import main
from streamcalc.keys import Keys, Namespace
from streamcalc.store import partition_count

GRAPH = '[nodes.A]\nfn = "add"\nargs = ["C", "D"]\n'


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_partitions_are_set_on_load_and_fixed_once_the_namespace_holds_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_url: str, r: redis.Redis, ns: str
) -> None:
    graph = tmp_path / "g.toml"
    graph.write_text(GRAPH)
    where = ("--redis-url", redis_url, "--ns", ns)
    code, out, _ = run(capsys, "graph", "load", str(graph), "--partitions", "4", *where)
    assert code == 0 and "(4 partitions)" in out
    assert partition_count(r, ns) == 4
    assert all(r.hget(k.meta, "graph_version") for k in Namespace(ns).partitions(4))
    code, out, _ = run(capsys, "graph", "load", str(graph), "--partitions", "2", *where)
    assert code == 0 and partition_count(r, ns) == 2  # still empty: it may change

    code, out, _ = run(capsys, "partition", "dev-7", *where)
    p = zlib.crc32(b"dev-7") % 2
    assert (code, out.split()) == (0, [str(p), Keys(ns, p).input])
    code, out, _ = run(capsys, "send", "--key", "dev-7", "C=1", "D=2", *where)
    assert code == 0 and r.xlen(Keys(ns, p).input) == 1
    drain(redis_url, ns)

    code, _, err = run(capsys, "graph", "load", str(graph), "--partitions", "8", *where)
    assert code == 2 and "partition count is fixed" in err and len(err.splitlines()) == 1
    assert partition_count(r, ns) == 2
    code, _, _ = run(capsys, "graph", "load", str(graph), "--partitions", "2", *where)
    assert code == 0  # the same count again is no change
    code, _, err = run(capsys, "partition", "bad key!", *where)
    assert code == 2 and "bad key" in err
