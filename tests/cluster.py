"""A real local Redis Cluster for tests and benchmarks: redis-server nodes on loopback.

Each node runs ``redis-server --cluster-enabled yes`` on a free port whose
cluster bus port (port + 10000) is free too, keeps nothing on disk unless told
(``--save '' --appendonly no``; :meth:`LocalCluster.stop_node` saves once so a
restarted master comes back with its data) and has its own directory for
``nodes.conf``. ``redis-cli --cluster create`` joins them; the cluster is ready
when every node says ``cluster_state:ok`` and agrees on who owns every slot.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot

from streamcalc.embedded import find_redis_server

#: Why the cluster tests cannot run here, or "" when they can.
MISSING = (
    ""
    if shutil.which("redis-server") and shutil.which("redis-cli")
    else "redis-server and redis-cli are not installed (apt-get install redis-server redis-tools)"
)


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(count: int) -> list[int]:
    """``count`` free ports whose bus ports (+10000) are free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 < 65536 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


@dataclass
class Node:
    """One redis-server of the cluster."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain client of this node alone."""
        return redis.Redis(port=self.port, protocol=2, socket_timeout=10)


@dataclass
class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, started by :meth:`start`."""

    masters: int = 3
    replicas: int = 0
    spare: int = 0
    """Masters that own no slot (joined after the others): nodes that own none of any key."""
    node_timeout_ms: int = 2000
    nodes: list[Node] = field(default_factory=list)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sc-cluster-")))
    spares: list[int] = field(default_factory=list)
    """The ports of the spare masters."""

    def start(self, timeout: float = 60.0) -> LocalCluster:
        """Start every node, join them into one cluster, wait until it is ready."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        ports = cluster_ports(self.masters * (1 + self.replicas) + self.spare)
        ports, spares = ports[: len(ports) - self.spare], ports[len(ports) - self.spare :]
        for port in ports:
            self._add(port, timeout)
        create = ["redis-cli", "--cluster", "create"]
        create += [f"127.0.0.1:{port}" for port in ports]
        create += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=timeout)
        self.wait_ok(timeout)
        for port in spares:
            self._add(port, timeout)
            add = ["redis-cli", "--cluster", "add-node", f"127.0.0.1:{port}"]
            add.append(f"127.0.0.1:{ports[0]}")
            subprocess.run(add, check=True, capture_output=True, timeout=timeout)
        self.spares = spares
        self.wait_ok(timeout)

    def _add(self, port: int, timeout: float) -> None:
        directory = self.root / str(port)
        directory.mkdir()
        node = Node(port, directory)
        self.nodes.append(node)
        self._launch(node)
        _wait_ping(node, timeout)

    def _launch(self, node: Node) -> None:
        args = [
            find_redis_server(),  # STREAMCALC_REDIS_SERVER picks another (Redis 6.2, Valkey)
            "--port", str(node.port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(node.directory),
            "--logfile", "redis.log",
        ]  # fmt: skip
        node.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def url(self) -> str:
        """The URL of the first node."""
        return self.nodes[0].url

    def node(self, port: int) -> Node:
        """The node on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        """Stop every node and remove their directories."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                node.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- topology ----------------------------------------------------------------------------

    def slot_owners(self, via: Node | None = None) -> dict[int, int]:
        """Slot -> port of its master, as one node sees it."""
        client = (via or self._live()[0]).client()
        try:
            owners: dict[int, int] = {}
            for start, end, master, *_ in client.execute_command("CLUSTER SLOTS"):
                for slot in range(int(start), int(end) + 1):
                    owners[slot] = int(master[1])
            return owners
        finally:
            client.close()

    def owner(self, key: str) -> int:
        """The port of the master that owns ``key``'s slot."""
        return self.slot_owners()[key_slot(key.encode())]

    def master_ports(self) -> list[int]:
        """The ports of the masters that own slots."""
        return sorted(set(self.slot_owners().values()))

    def replica_of(self, port: int) -> int:
        """The port of a replica of the master on ``port``."""
        for node in self._live():
            client = node.client()
            try:
                info = client.info("replication")
            finally:
                client.close()
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == port:
                return node.port
        raise AssertionError(f"no replica of {port}")

    def node_id(self, port: int) -> str:
        """The cluster node ID of the node on ``port``."""
        client = self.node(port).client()
        try:
            return str(client.execute_command("CLUSTER MYID").decode())
        finally:
            client.close()

    def _live(self) -> list[Node]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def ready(self) -> bool:
        """Every live node says ``cluster_state:ok``, they agree on the slots, replicas synced."""
        seen: list[dict[int, int]] = []
        for node in self._live():
            client = node.client()
            try:
                if _cluster_info(client)["cluster_state"] != "ok":
                    return False
                replication = client.info("replication")
                if replication.get("role") == "slave" and (
                    replication.get("master_link_status") != "up"
                ):
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
            seen.append(self.slot_owners(node))
        return bool(seen) and all(s == seen[0] and len(s) == 16384 for s in seen)

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Wait until :meth:`ready`."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"the cluster did not become ready within {timeout}s")
            time.sleep(0.1)

    def state(self, port: int) -> str:
        """``ok`` or ``fail``: the cluster state as the node on ``port`` sees it."""
        client = self.node(port).client()
        try:
            return _cluster_info(client)["cluster_state"]
        finally:
            client.close()

    # -- faults ------------------------------------------------------------------------------

    def stop_node(self, port: int) -> None:
        """Stop a node cleanly, its data saved (``SHUTDOWN SAVE``): it can be restarted."""
        node = self.node(port)
        client = node.client()
        with contextlib.suppress(redis.ConnectionError):  # SHUTDOWN's reply: a closed connection
            client.execute_command("SHUTDOWN", "SAVE")
        assert node.process is not None
        node.process.wait(timeout=30)

    def restart_node(self, port: int, timeout: float = 30.0) -> None:
        """Start a stopped node again from its directory (nodes.conf and dump.rdb)."""
        node = self.node(port)
        self._launch(node)
        _wait_ping(node, timeout)

    def migrate_slot(self, slot: int, target: int, pause_s: float = 0.0) -> None:
        """Move ``slot`` to the master on ``target``, key by key (MIGRATING/IMPORTING, MIGRATE).

        ``pause_s`` between keys keeps the slot half-moved for a while: commands
        that touch it meanwhile get ASK or TRYAGAIN.
        """
        source = self.slot_owners()[slot]
        masters = self.master_ports()
        src, dst = self.node(source).client(), self.node(target).client()
        try:
            dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", self.node_id(source))
            src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", self.node_id(target))
            while True:
                keys = src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 10000, "KEYS", *keys)
                time.sleep(pause_s)
            for port in [target, source, *(m for m in masters if m not in (target, source))]:
                client = self.node(port).client()
                try:
                    client.execute_command("CLUSTER SETSLOT", slot, "NODE", self.node_id(target))
                finally:
                    client.close()
        finally:
            src.close()
            dst.close()


def _wait_ping(node: Node, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    client = node.client()
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    raw = client.execute_command("CLUSTER INFO")
    if isinstance(raw, bytes):
        raw = dict(line.split(":", 1) for line in raw.decode().split() if ":" in line)
    return {str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in raw.items()}


@contextlib.contextmanager
def cluster_client(url: str) -> Iterator[redis.RedisCluster]:
    """redis-py's own cluster client, its sockets closed after (its close() leaves the nodes'
    connection pools connected, to the garbage collector)."""
    client = redis.RedisCluster.from_url(url)
    try:
        yield client
    finally:
        client.close()
        for node in client.get_nodes():
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect()
