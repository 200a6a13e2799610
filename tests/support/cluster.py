"""A real Valkey Cluster on loopback for the tests and the benchmark: 3 masters, 3 replicas.

Every node is the server binary the project ships (``relay.store.embedded.server_binary``),
started in cluster mode on a port whose cluster bus (port + 10000) is free too. The cluster is
built with plain commands (CLUSTER ADDSLOTSRANGE, MEET, REPLICATE), so no ``valkey-cli`` and no
interactive step: master i owns an equal contiguous third of the 16384 slots and replica i
follows master i.

With ``tls`` (a certificate, ``tests.support.tls``) and a server binary built with TLS
(``binary``: Debian's ``redis-server``; the embedded one has none), every node listens for
TLS only (``--port 0``), its cluster bus and replication over TLS too, and ``url`` is a
``rediss+cluster://`` seed list trusting that certificate: nothing reaches a node in clear.

The node timeout is short (``node_timeout_ms``, 1 s by default) so that a killed master is
replaced by its replica within a few seconds; ``cluster-require-full-coverage no`` keeps the
other masters' slots serving meanwhile, as the deployment example recommends.
"""

from __future__ import annotations

import contextlib
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from relay.store.embedded import server_command
from tests.support.tls import Cert

SLOTS = 16384
BUS_OFFSET = 10000


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for outgoing connections and port 0 binds."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_cluster_ports(count: int) -> list[int]:
    """Ports p with p + 10000 free as well (the cluster bus), both below the kernel's ephemeral
    range: a bus port inside it was found free, then taken by another test's outgoing
    connection before the node bound it ("Address already in use", a CI failure)."""
    high = _ephemeral_low() - BUS_OFFSET  # p + 10000 stays below the ephemeral range
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(10000, high)
        if port not in ports and _port_free(port) and _port_free(port + BUS_OFFSET):
            ports.append(port)
    return ports


@dataclass
class Node:
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    tls: Cert | None = None

    def client(self, timeout: float = 5.0) -> redis.Redis:
        if self.tls is None:
            return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout)
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout,
            ssl=True, ssl_ca_certs=str(self.tls.cert),
        )  # fmt: skip

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class ValkeyCluster:
    """``start()`` builds the cluster; ``url`` is the relay's ``redis+cluster://`` seed list."""

    base_dir: Path
    masters: int = 3
    replicas_per_master: int = 1
    node_timeout_ms: int = 1000
    appendonly: bool = False
    nodes: list[Node] = field(default_factory=list)
    binary: str = ""  # the server program; "" = the embedded one
    tls: Cert | None = None

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[: self.masters])
        if self.tls is not None:
            return f"rediss+cluster://{seeds}?ssl_ca_certs={self.tls.cert}"
        return f"redis+cluster://{seeds}"

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        files = ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
        return [
            *files, "--tls-ca-cert-file", str(self.tls.cert), "--tls-auth-clients", "no",
            "--tls-cluster", "yes", "--tls-replication", "yes",
        ]  # fmt: skip

    def _launch(self, node: Node) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        args = server_command(
            node.port,
            node.data_dir,
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "no",
            "--repl-diskless-sync-delay", "0",
            *self._tls_args(),
            appendonly=self.appendonly,
            logfile="server.log",
        )  # fmt: skip
        if self.binary:
            args[0] = self.binary
        if self.tls is not None:  # TLS only: the plain port closed, the TLS one on node.port
            at = args.index("--port")
            args[at : at + 2] = ["--port", "0", "--tls-port", str(node.port)]
        node.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                err = node.process.stderr.read().decode() if node.process.stderr else ""
                raise RuntimeError(f"cluster node {node.port} exited at start: {err.strip()}")
            try:
                with node.client(0.5) as client:
                    client.ping()
                    myid = client.execute_command("CLUSTER MYID")
                    node.node_id = myid.decode() if isinstance(myid, bytes) else str(myid)
                    return
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError(f"cluster node {node.port} did not answer")

    def start(self, timeout: float = 30.0) -> ValkeyCluster:
        count = self.masters * (1 + self.replicas_per_master)
        ports = free_cluster_ports(count)
        self.nodes = [Node(port, self.base_dir / f"node{port}", tls=self.tls) for port in ports]
        try:
            for node in self.nodes:
                self._launch(node)
            self._build(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _build(self, timeout: float) -> None:
        masters = self.nodes[: self.masters]
        for index, node in enumerate(masters):
            low = index * SLOTS // self.masters
            high = (index + 1) * SLOTS // self.masters - 1
            with node.client() as client:
                client.execute_command("CLUSTER ADDSLOTSRANGE", low, high)
        first = self.nodes[0]
        with first.client() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + timeout
        self._wait(lambda: all(self._known(n) == len(self.nodes) for n in self.nodes), deadline)
        for index, node in enumerate(self.nodes[self.masters :]):
            master = masters[index % self.masters]
            with node.client() as client:
                client.execute_command("CLUSTER REPLICATE", master.node_id)
        self._wait(self.healthy, deadline)

    @staticmethod
    def _wait(condition: object, deadline: float) -> None:
        assert callable(condition)
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if condition():
                    return
            time.sleep(0.05)
        raise RuntimeError("the cluster did not come together in time")

    @staticmethod
    def _known(node: Node) -> int:
        with node.client() as client:
            return len(client.execute_command("CLUSTER NODES"))

    def healthy(self) -> bool:
        """Every live node says ``cluster_state:ok`` and every master has its replicas in sync."""
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as client:
                info = client.execute_command("CLUSTER INFO")
                if info.get("cluster_state") != "ok":
                    return False
                replication = client.info("replication")
                if replication.get("role") == "slave" and (
                    replication.get("master_link_status") != "up"
                ):
                    return False
        roles = [self.role(n) for n in self.nodes if n.alive]
        return roles.count("master") == self.masters

    def role(self, node: Node) -> str:
        with node.client() as client:
            return str(client.info("replication").get("role"))

    def primaries(self) -> list[Node]:
        return [n for n in self.nodes if n.alive and self.role(n) == "master"]

    def flush(self) -> None:
        """Empty every master (replicas follow) and wait until the replicas caught up."""
        for node in self.primaries():
            with node.client() as client:
                client.flushall()
                client.execute_command("WAIT", self.replicas_per_master, 2000)

    def master_of(self, key: str) -> Node:
        """The node serving ``key``'s slot now."""
        for node in self.primaries():
            with node.client() as client:
                slot = int(client.execute_command("CLUSTER KEYSLOT", key))
                if self._serves(client, slot):
                    return node
        raise RuntimeError(f"no master serves the slot of {key!r}")

    @staticmethod
    def _serves(client: redis.Redis, slot: int) -> bool:
        myself: object = client.execute_command("CLUSTER MYID")  # type: ignore[no-untyped-call]
        myself = myself.decode() if isinstance(myself, bytes) else str(myself)
        ranges: list[Any] = client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
        for low, high, master, *_replicas in ranges:
            if low <= slot <= high:
                node_id = master[2].decode() if isinstance(master[2], bytes) else str(master[2])
                return node_id == myself
        return False

    def replica_of(self, master: Node) -> Node:
        for node in self.nodes:
            if node is not master and node.alive:
                with node.client() as client:
                    info = client.info("replication")
                if info.get("role") == "slave" and int(info.get("master_port", 0)) == master.port:
                    return node
        raise RuntimeError(f"master {master.port} has no live replica")

    @staticmethod
    def slot_of(key: str) -> int:
        from redis.crc import key_slot

        return int(key_slot(key.encode()))

    def freeze(self, node: Node) -> None:
        """SIGSTOP: the node neither reads nor answers until ``thaw``."""
        assert node.process is not None
        node.process.send_signal(signal.SIGSTOP)

    def thaw(self, node: Node) -> None:
        assert node.process is not None
        node.process.send_signal(signal.SIGCONT)

    def cut_replication(self, master: Node) -> None:
        """Close the master's links to its replicas (a frozen replica cannot reconnect), so
        that what the master acknowledges next reaches no replica."""
        with master.client() as client:
            client.execute_command("CLIENT KILL TYPE replica")

    # -- slot migration (resharding), step by step ------------------------------------------

    def begin_migration(self, slot: int, source: Node, target: Node) -> None:
        with target.client() as client:
            client.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.node_id)
        with source.client() as client:
            client.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.node_id)

    def move_keys(self, slot: int, source: Node, target: Node, count: int) -> int:
        """MIGRATE up to ``count`` keys of the slot from source to target; how many moved."""
        with source.client() as client:
            keys = client.execute_command("CLUSTER GETKEYSINSLOT", slot, count)
            for key in keys:
                client.execute_command("MIGRATE", "127.0.0.1", target.port, key, 0, 5000)
        return len(keys)

    def finish_migration(self, slot: int, source: Node, target: Node) -> None:
        while self.move_keys(slot, source, target, 100):
            pass
        for node in (target, source, *self.primaries()):
            with node.client() as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", target.node_id)

    def kill(self, node: Node) -> None:
        """SIGKILL: the master dies without a word, as in a crash."""
        if node.process is not None:
            node.process.kill()
            node.process.wait()

    def restart(self, node: Node, timeout: float = 30.0) -> None:
        """Start a killed node again on its port and files: it rejoins (as a replica)."""
        if node.process is not None and node.process.stderr:
            node.process.stderr.close()
        self._launch(node)
        self._wait(self.healthy, time.monotonic() + timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        self._wait(self.healthy, time.monotonic() + timeout)

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is None:
                continue
            if node.process.poll() is None:
                node.process.terminate()
                try:
                    node.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
            if node.process.stderr:
                node.process.stderr.close()
            node.process = None
