"""consent-relay against the real alternative: Postfix store-and-forward, in one run.

Three servers are measured on this machine, on the same messages, with the same load generator
(bench/smtp_bench.py: N concurrent clients, one connection each, one message per transaction)
and the same sink (an aiosmtpd process that accepts everything):

- ``postfix``: a private Debian Postfix (tests/postfix.py) on loopback that queues every message
  (fsync'd queue file, 250 after the queue file is safe) and delivers it to the sink;
- ``passthrough``: a plain aiosmtpd server forwarding unchanged through pooled aiosmtplib
  connections, ``--workers`` processes (the cheapest correct Python relay);
- ``consent-relay``: ``relay serve --workers W`` with full filtering, embedded Redis, consent
  lookups and the audit journal; 250 only after the sink accepted.

Rule 1: the figures are client-side: msg/s over the measured transactions (after a warm-up of
        5 messages per client) and the p50/p99 of each transaction's MAIL..DATA latency.
Rule 2: Postfix answers 250 before it delivers, so for Postfix the run also waits until its log
        shows every message delivered and prints how long the queue took to drain after the
        load ended (bounded: --drain-timeout), and the end-to-end rate (measured messages over
        load time plus drain time): store-and-forward is only cheap if it keeps up. The ratios
        give the relay against both rates (the relay's 250 comes after the sink's).
Rule 3: everything listens on 127.0.0.1, every server is stopped at the end, even on failure.
Rule 4: then the passthrough and the relay run again at half the relay's maximum rate, on an
        open-loop schedule (latency counted from each message's planned start), and the run
        prints the latency the relay adds: relay minus passthrough, p50 and p99.
Rule 5: each server's CPU time per message is read from /proc (bench/proc_cpu.py: its whole
        process tree, Postfix's short-lived smtpd/cleanup/smtp processes included, Redis with
        the relay and also on its own) over the load, the warm-up and, for Postfix, the drain;
        the sink's and the load generator's (this process) beside it: on a shared machine the
        three add up to what one message costs; and how many cores the whole machine kept busy
        during the load (below the core count: the run waited on something other than CPU).
Usage (as root, Postfix installed): python bench/postfix_bench.py [--clients 20]
       [--messages 2000] [--workers 2] [--corpus DIR] [--pipelining] [--no-paced]
       [--servers postfix,passthrough,consent-relay]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import smtp_bench
from proc_cpu import machine_busy, tree_cpu
from smtp_bench import (
    DEFAULT_CORPUS,
    corpus_messages,
    free_port,
    measure,
    run_passthrough,
    run_sink,
    start_relay,
    wait_port,
)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests.support.postfix lives beside bench/, in the repository root
    sys.path.insert(0, str(ROOT))

from tests.support.postfix import PostfixInstance, postfix_available, postfix_version  # noqa: E402

# Postfix tuned for a fair loopback benchmark: no artificial slowdown when the queue fills
# (in_flow_delay), as many parallel deliveries to the sink as there are clients, and enough
# smtpd processes for every client. Everything else is Debian's default behaviour.
BENCH_MAIN = {
    "in_flow_delay": "0",
    "default_process_limit": "200",
    "default_destination_concurrency_limit": "20",
    "smtp_destination_concurrency_limit": "20",
    "smtpd_client_connection_count_limit": "0",
    "smtp_connection_cache_on_demand": "yes",
}


SERVERS = ("postfix", "passthrough", "consent-relay")


def sent_count(instance: PostfixInstance, sink_port: int) -> int:
    return len(instance.log_lines(rf"relay=127\.0\.0\.1\[127\.0\.0\.1\]:{sink_port},.*status=sent"))


def wait_drained(instance: PostfixInstance, sink_port: int, total: int, timeout: float) -> float:
    """Seconds until Postfix's log shows ``total`` deliveries to the sink (or raise)."""
    started = time.monotonic()
    while sent_count(instance, sink_port) < total:
        if time.monotonic() - started > timeout:
            raise SystemExit(
                f"postfix delivered {sent_count(instance, sink_port)}/{total} in {timeout} s:\n"
                + instance.tail()
            )
        time.sleep(0.2)
    return time.monotonic() - started


def print_ratios(figures: dict[str, dict[str, float]]) -> None:
    """msg/s ratios (higher is better for the first) and p99 ratios (lower is better)."""
    pairs = [
        ("consent-relay", "postfix"),
        ("consent-relay", "passthrough"),
        ("postfix", "passthrough"),
    ]
    rates, p99s = [], []
    for ours, theirs in pairs:
        if ours in figures and theirs in figures:
            name = f"{ours}/{theirs}"
            rates.append(f"{name} {figures[ours]['rate'] / figures[theirs]['rate']:.2f}x")
            p99s.append(f"{name} {figures[ours]['p99'] / figures[theirs]['p99']:.2f}x")
    if "delivered" in figures.get("postfix", {}) and "consent-relay" in figures:
        # The relay's 250 comes after the sink's: like for like, Postfix's rate with its drain.
        ratio = figures["consent-relay"]["rate"] / figures["postfix"]["delivered"]
        rates.append(f"consent-relay/postfix delivered {ratio:.2f}x")
    if rates:
        print("  ratio msg/s    " + "   ".join(rates))
        print("  ratio p99      " + "   ".join(p99s))


@dataclass
class Bench:
    """The servers of one run and their ports; ``delivered`` counts Postfix's sink deliveries."""

    args: argparse.Namespace
    servers: set[str]
    mta: PostfixInstance
    ports: dict[str, int]
    roots: dict[str, list[int]]  # the process trees of each server and of the sink (Rule 5)
    delivered: int = 0

    def _cpu(self, name: str) -> tuple[float, float, float, float]:
        """CPU seconds so far of the server, the sink, the server's Redis and this process (the
        load generator) (Rule 5)."""
        roots = self.mta_roots() if name == "postfix" else self.roots[name]
        own = resource.getrusage(resource.RUSAGE_SELF)
        return (
            tree_cpu(roots),
            tree_cpu(self.roots["sink"]),
            tree_cpu(roots, named="valkey") if name == "consent-relay" else 0.0,
            own.ru_utime + own.ru_stime,
        )

    def mta_roots(self) -> list[int]:
        pid = self.mta.master_pid()
        return [pid] if pid is not None else []

    def run_set(self, title: str, messages: list[bytes]) -> None:
        print(f"{title}: {len(messages)} distinct messages")
        clients, total = self.args.clients, self.args.messages
        figures: dict[str, dict[str, float]] = {}
        for name in SERVERS:
            if name not in self.servers:
                continue
            cpu_before = self._cpu(name)
            busy_before, wall_before = machine_busy(), time.monotonic()
            figures[name] = measure(name, self.ports[name], messages, clients, total)
            busy = (machine_busy() - busy_before) / (time.monotonic() - wall_before)
            if name == "postfix":
                # The warm-up sends 5 messages per client besides the measured ones. Postfix
                # must drain before the next server runs, or its deliveries would load the sink.
                self.delivered += int(figures[name]["msgs"]) + 5 * clients
                sink = self.ports["sink"]
                drain = wait_drained(self.mta, sink, self.delivered, self.args.drain_timeout)
                accepted = figures[name]["msgs"] / figures[name]["rate"]
                figures[name]["delivered"] = figures[name]["msgs"] / (accepted + drain)
                print(
                    f"  {'':<14} queue drained {drain:.1f} s after the load ended: "
                    f"{figures[name]['delivered']:.1f} msg/s accepted and delivered"
                )
            cpu_after = self._cpu(name)
            # The warm-up's messages are inside the measured window too (Rule 5).
            sent = figures[name]["msgs"] + 5 * clients
            server_ms, sink_ms, redis_ms, load_ms = (
                1000 * (after - before) / sent
                for before, after in zip(cpu_before, cpu_after, strict=True)
            )
            redis = f" (Redis {redis_ms:.2f})" if name == "consent-relay" else ""
            print(
                f"  {'':<14} CPU per message: {server_ms:.2f} ms server{redis}, {sink_ms:.2f} ms"
                f" sink, {load_ms:.2f} ms load generator; machine {busy:.2f} of"
                f" {os.cpu_count()} cores busy under load"
            )
        print_ratios(figures)
        if not self.args.no_paced and {"passthrough", "consent-relay"} <= figures.keys():
            self.paced(messages, figures["consent-relay"]["rate"] / 2)

    def paced(self, messages: list[bytes], rate: float) -> None:
        """Rule 4: the added latency, at half the relay's maximum rate (open-loop schedule)."""
        print(f"  at half the relay's maximum rate ({rate:.0f} msg/s offered):")
        clients, total = self.args.clients, self.args.messages
        figures = {
            name: measure(name, self.ports[name], messages, clients, total, rate)
            for name in ("passthrough", "consent-relay")
        }
        added = {q: figures["consent-relay"][q] - figures["passthrough"][q] for q in ("p50", "p99")}
        print(
            f"  added latency  relay - passthrough: p50 {added['p50']:+.1f} ms   "
            f"p99 {added['p99']:+.1f} ms"
        )


def parse_args() -> tuple[argparse.Namespace, set[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument(
        "--pipelining",
        action="store_true",
        help="clients pipeline MAIL, RCPT and DATA as Postfix and Exim do (default: aiosmtplib)",
    )
    parser.add_argument(
        "--no-paced",
        action="store_true",
        help="skip the latency run at half the relay's maximum rate",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated subset of " + ",".join(SERVERS) + " (default: all)",
    )
    args = parser.parse_args()
    smtp_bench.PIPELINING_CLIENTS = args.pipelining
    servers = set(args.servers.split(","))
    if not servers <= set(SERVERS):
        parser.error(f"--servers: choose among {','.join(SERVERS)}")
    if not postfix_available():
        raise SystemExit("postfix is not installed: apt-get install postfix (see docs/postfix.md)")
    if os.geteuid() != 0:
        raise SystemExit("postfix start needs root: run this benchmark as root")
    return args, servers


def main() -> None:
    args, servers = parse_args()
    ctx = multiprocessing.get_context("spawn")
    ports = {name: free_port() for name in ("sink", *SERVERS)}
    procs = [ctx.Process(target=run_sink, args=(ports["sink"],), daemon=True)]
    procs += [
        ctx.Process(target=run_passthrough, args=(ports["passthrough"], ports["sink"]), daemon=True)
        for _ in range(args.workers)
    ]
    workdir = Path(tempfile.mkdtemp(prefix="postfix-bench-"))
    relay: subprocess.Popen[bytes] | None = None
    mta = PostfixInstance(
        workdir / "postfix",
        listen_port=ports["postfix"],
        relayhost=f"[127.0.0.1]:{ports['sink']}",
        main=BENCH_MAIN,
    )
    try:
        for p in procs:
            p.start()
        if "consent-relay" in servers:
            (workdir / "relay").mkdir()
            relay = start_relay(
                workdir / "relay", ports["consent-relay"], ports["sink"], args.workers
            )
        if "postfix" in servers:
            mta.start()
        for name in ("sink", *SERVERS):
            if name == "sink" or name in servers:
                wait_port(ports[name])
        print(
            f"machine: {platform.machine()} {os.cpu_count()} cores, {platform.platform()}; "
            f"Python {platform.python_version()}; Postfix {postfix_version()}"
        )
        clients = "pipelining clients" if args.pipelining else "aiosmtplib clients"
        print(f"{args.clients} {clients}, {args.messages} msgs per server, workers {args.workers}")
        roots = {
            "sink": [procs[0].pid or 0],
            "passthrough": [p.pid or 0 for p in procs[1:]],
            "consent-relay": [relay.pid] if relay is not None else [],
        }
        bench = Bench(args, servers, mta, ports, roots)
        small = [m for m in corpus_messages(args.corpus, None) if len(m) < 60_000]
        bench.run_set("corpus (newsletters < 60 KB)", small)
        bench.run_set("reference-67k.eml", corpus_messages(args.corpus, "reference-67k.eml"))
    finally:
        mta.stop()
        if relay is not None:
            relay.send_signal(signal.SIGTERM)
            try:
                relay.wait(timeout=60)
            except subprocess.TimeoutExpired:
                relay.kill()
        for p in procs:
            p.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
