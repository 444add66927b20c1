"""A noisy neighbour: other programs, or the hypervisor, taking CPU from the daemon's machine.

    python bench/neighbour.py --cores 1.5 --seconds 40 [--delay 3]
    python bench/neighbour.py --steal 0.2 --burst-ms 150 --seconds 40 [--delay 3]   # as root

``--cores``: one process per whole core that spins for ``--seconds``, and for a fractional part
one more that spins in bursts (on for ``fraction`` of every 800 ms, asleep the rest): what a game
server shares its machine with (a build, a second service). The kernel shares the cores fairly
between them and the daemon's threads.

``--steal``: what a busy host does to a VM. One spinner per CPU, pinned to it and scheduled
SCHED_FIFO, so that while it spins nothing else runs on that CPU at all (the daemon's threads
stop, as in a vCPU the hypervisor has taken), in bursts of ``--burst-ms`` (0.5-1.5x, at random)
adding up to ``--steal`` of each CPU's time. Needs root (or CAP_SYS_NICE); the kernel's RT
throttling keeps 5 % of every second for the rest.

Nothing here talks to the daemon; run it beside ``npc-voice loadtest`` (bench/README.md, "When
the machine is not yours alone").
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import time

PERIOD_S = 0.8  # one burst cycle of the fractional spinner


def _spin(seconds: float, duty: float) -> None:
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        busy_until = min(end, now + duty * PERIOD_S)
        while time.monotonic() < busy_until:
            pass
        if duty < 1.0:
            time.sleep((1.0 - duty) * PERIOD_S)


def _steal(seconds: float, share: float, burst_s: float, cpu: int, seed: int) -> None:
    """Take ``share`` of one CPU in SCHED_FIFO bursts (nothing else runs there meanwhile)."""
    os.sched_setaffinity(0, {cpu})
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
    rng = random.Random(seed)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        on = burst_s * rng.uniform(0.5, 1.5)
        time.sleep(on * (1.0 - share) / share * rng.uniform(0.5, 1.5))  # the rest of the cycle, jittered
        busy_until = min(end, time.monotonic() + on)
        while time.monotonic() < busy_until:
            pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cores", type=float, default=1.0, help="cores to take (1.5: one spinning, one at half duty)")
    p.add_argument("--steal", type=float, default=0.0,
                   help="instead: this share of every CPU taken in SCHED_FIFO bursts (a busy hypervisor; root)")
    p.add_argument("--burst-ms", type=float, default=150.0, help="mean length of one --steal burst")
    p.add_argument("--seconds", type=float, default=40.0, help="how long")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait first (the daemon's warm-up)")
    a = p.parse_args()
    if a.cores <= 0 or a.seconds <= 0 or not 0.0 <= a.steal < 0.95 or a.burst_ms <= 0:
        p.error("--cores, --seconds and --burst-ms must be positive, --steal in [0, 0.95)")
    time.sleep(a.delay)
    if a.steal > 0:
        cpus = sorted(os.sched_getaffinity(0))
        procs = [mp.Process(target=_steal, args=(a.seconds, a.steal, a.burst_ms / 1000.0, cpu, i), daemon=True)
                 for i, cpu in enumerate(cpus)]
        what = f"{a.steal:.0%} of each of {len(cpus)} CPUs in SCHED_FIFO bursts of ~{a.burst_ms:g} ms"
    else:
        whole, part = int(a.cores), a.cores - int(a.cores)
        duties = [1.0] * whole + ([part] if part > 0.01 else [])
        procs = [mp.Process(target=_spin, args=(a.seconds, d), daemon=True) for d in duties]
        what = f"{a.cores:g} cores"
    for proc in procs:
        proc.start()
    print(f"neighbour: {len(procs)} process(es) taking {what} for {a.seconds:g} s", flush=True)
    for proc in procs:
        proc.join()


if __name__ == "__main__":
    main()
