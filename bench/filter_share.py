"""How much of the relay's cost in service is its filter: the relay as it is, and the same relay
with each message's filter result reused, beside Postfix, in one run (issue 15's bound).

The servers, clients, messages and sink are those of bench/postfix_bench.py. The relay runs
twice per round, each time a fresh ``relay serve`` with the instrument of ``bench/insitu``:

- ``relay``: the relay as it is; the instrument times every ``filter_message`` call in the
  relay's own processes (``time.thread_time``) and the garbage collector's passes;
- ``reused``: the filter's result of the first copy of each message returned for every later
  copy, so that the filter costs nothing: what the relay would do with a filter of zero cost
  (its messages carry the first copy's decisions, so it is a bound, never a relay).

Rule 1: rates and CPU per message are those of postfix_bench (Rules 1 and 5 there): client-side
        msg/s, each server's process tree from /proc over warm-up and load (and Postfix's
        drain), per measured and warm-up message.
Rule 2: the rounds alternate Postfix, the relay and the bound, so that a machine that changes
        speed during the run moves all three alike.
Usage (as root, Postfix installed): python bench/filter_share.py [--rounds 2] [--messages 2000]
       [--workers 2] [--clients 20]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from postfix_bench import BENCH_MAIN, wait_drained
from proc_cpu import tree_cpu
from smtp_bench import (
    DEFAULT_CORPUS,
    corpus_messages,
    free_port,
    measure,
    run_sink,
    start_relay,
    wait_port,
)

# importing postfix_bench put the repository root (tests.support) on sys.path
from tests.support.postfix import PostfixInstance, postfix_available

INSITU = Path(__file__).resolve().parent / "insitu"
WARM_UP = 5  # messages per client before the measured ones (smtp_bench)


@contextmanager
def relay_serving(
    workdir: Path, port: int, sink: int, workers: int, mode: str
) -> Iterator[tuple[int, Path]]:
    """A fresh ``relay serve`` with the instrument in ``mode``; yields its process id and where
    the instrument writes."""
    workdir.mkdir()
    out = workdir / "filter"
    path = os.pathsep.join(filter(None, [str(INSITU), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, BENCH_FILTER=mode, BENCH_FILTER_OUT=str(out), PYTHONPATH=path)
    relay = start_relay(workdir, port, sink, workers, env)
    try:
        wait_port(port)
        yield relay.pid, out
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=60)
        except subprocess.TimeoutExpired:
            relay.kill()


def filter_figures(out: Path, size: str) -> str:
    """CPU ms per filtered message of one size class, the garbage collector's passes and ms per
    message (all of them, then the full ones), over every relay process's last tallies (Rule 1
    of bench/insitu)."""
    sums: dict[str, float] = {}
    for path in out.parent.glob(out.name + ".*"):
        for name, value in json.loads(path.read_text()).items():
            sums[name] = sums.get(name, 0.0) + value
    calls = sums.get(size + "_n", 0.0) or 1.0
    ms = {name: 1000 * sums.get(name, 0.0) / calls for name in (size + "_s", "gc_s", "gc_full_s")}
    return (
        f"of it the filter {ms[size + '_s']:.2f} ms, GC {ms['gc_s']:.3f} ms"
        f" ({sums.get('gc_n', 0.0) / calls:.2f} passes; full ones {ms['gc_full_s']:.3f} ms,"
        f" {int(sums.get('gc_full_n', 0.0))} of them; over {int(calls)} calls)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    if not postfix_available() or os.geteuid() != 0:
        raise SystemExit("needs Postfix installed and root (see bench/postfix_bench.py)")
    ports = {name: free_port() for name in ("sink", "postfix", "relay")}
    sink = multiprocessing.get_context("spawn").Process(
        target=run_sink, args=(ports["sink"],), daemon=True
    )
    workdir = Path(tempfile.mkdtemp(prefix="filter-share-"))
    mta = PostfixInstance(
        workdir / "postfix",
        listen_port=ports["postfix"],
        relayhost=f"[127.0.0.1]:{ports['sink']}",
        main=BENCH_MAIN,
    )
    sent_to_postfix = 0
    try:
        sink.start()
        mta.start()
        wait_port(ports["sink"])
        wait_port(ports["postfix"])
        print(f"{args.clients} clients, {args.messages} msgs per server, workers {args.workers}")
        sets = [
            ("corpus (newsletters < 60 KB)", "small", None),
            ("reference-67k.eml", "big", "reference-67k.eml"),
        ]
        for title, size, only in sets:
            messages = [m for m in corpus_messages(args.corpus, only) if only or len(m) < 60_000]
            print(title)
            for round_ in range(args.rounds):
                before = tree_cpu([mta.master_pid() or 0])
                theirs = measure("postfix", ports["postfix"], messages, args.clients, args.messages)
                sent = int(theirs["msgs"]) + WARM_UP * args.clients
                sent_to_postfix += sent
                wait_drained(mta, ports["sink"], sent_to_postfix, 300.0)
                postfix_cpu = tree_cpu([mta.master_pid() or 0]) - before
                print(f"  {'':<14} CPU per message: {1000 * postfix_cpu / sent:.2f} ms server")
                for mode, label in (("time", "relay"), ("reuse", "reused")):
                    place = workdir / f"{size}-{round_}-{mode}"
                    serving = relay_serving(
                        place, ports["relay"], ports["sink"], args.workers, mode
                    )
                    with serving as (pid, out):
                        before = tree_cpu([pid])
                        ours = measure(label, ports["relay"], messages, args.clients, args.messages)
                        sent = int(ours["msgs"]) + WARM_UP * args.clients
                        cpu = 1000 * (tree_cpu([pid]) - before) / sent
                    line = f"  {'':<14} CPU per message: {cpu:.2f} ms server"
                    if mode == "time":
                        line += ", " + filter_figures(out, size)
                    print(line + f"; {ours['rate'] / theirs['rate']:.2f}x Postfix accepted")
    finally:
        mta.stop()
        sink.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
