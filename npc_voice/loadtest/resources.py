"""The daemon's own resources during a load test, for soak runs: does anything grow?

``npc-voice loadtest --daemon-pid PID`` samples ``/proc/PID`` and its child processes (the
engine process), summed: resident memory, threads, open file descriptors, and CPU time (the
daemon's own and its children's apart, so that the report can say how many cores the gRPC edge
and the engine each used: what a server engineer sizes a machine by), every few seconds in
a background thread, and adds a ``resources`` section to the report: every sample, the first
sample after warm-up, the last one, the peak, and the growth from first-after-warm-up to last in
percent. A daemon that leaks shows growth that keeps rising with the run's length; a sound one
stays flat within a few percent after warm-up (the engine's state pool, the host cache and the
allocator settle in the first minute).

It also reads the whole machine's CPU time (``/proc/stat``): busy, idle, and *stolen*, the time
the hypervisor gave this VM's virtual CPUs to someone else. On a shared cloud VM that steal
comes and goes by the minute and takes the engine's real-time margin with it; the report shows it
beside every figure, so a run made while the host was busy is seen as such, not as the
daemon's capacity.

Linux only (``/proc``), and the daemon must run on this machine.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npc_voice.engine.hostcpu import CLOCK_TICKS as _CLOCK_TICKS
from npc_voice.engine.hostcpu import machine_cpu_seconds

WARMUP_MAX_S = 60.0  # warm-up = the first fifth of the run, at most this
STEAL_WARN_PCT = 5.0  # machine CPU time stolen by the hypervisor above which the report says so


@dataclass(frozen=True)
class ResourceSample:
    t: float  # seconds since sampling started
    rss_kib: int  # VmRSS: resident memory
    threads: int  # Threads: OS threads of the process
    fds: int  # entries of /proc/PID/fd: open files, sockets, pipes
    cpu_s: float = 0.0  # user + system CPU seconds of the daemon process itself so far
    child_cpu_s: float = 0.0  # ... of its descendants alive at the sample (the engine process)
    machine: tuple[float, float, float] = (0.0, 0.0, 0.0)  # whole machine so far: busy, idle, stolen CPU-s


def sample_process(pid: int, t: float = 0.0) -> ResourceSample:
    """One reading of ``/proc/PID`` plus its descendants (the daemon's engine process, which
    holds the model and the states), summed; OSError when PID is gone or not ours to read."""
    rss, threads, fds = _read_one(pid)
    cpu = _cpu_seconds(pid)
    child_cpu = 0.0
    for child in _descendants(pid):
        try:
            c_rss, c_threads, c_fds = _read_one(child)
            c_cpu = _cpu_seconds(child)
        except OSError:  # it exited between listing and reading
            continue
        rss, threads, fds, child_cpu = rss + c_rss, threads + c_threads, fds + c_fds, child_cpu + c_cpu
    return ResourceSample(t, rss, threads, fds, cpu, child_cpu, machine_cpu_seconds())




def _cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` (fields 14 and 15 of /proc/PID/stat), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3, utime field 14
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _read_one(pid: int) -> tuple[int, int, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])  # "VmRSS:   123456 kB"
    return fields.get("VmRSS", 0), fields.get("Threads", 0), len(os.listdir(f"/proc/{pid}/fd"))


def _descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid`` (parent ids from every /proc/N/stat)."""
    parent_of: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        parent_of[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])  # "pid (comm) state ppid ..."
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        kids = [p for p, pp in parent_of.items() if pp == parent]
        found += kids
        todo += kids
    return found


class ResourceSampler:
    """Samples a process every ``interval_s`` until ``stop()`` (which takes a last sample)."""

    def __init__(self, pid: int, interval_s: float = 2.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"the sampling interval must be positive, got {interval_s}")
        try:
            sample_process(pid)
        except OSError as e:
            raise ValueError(
                f"--daemon-pid {pid}: cannot read /proc/{pid} (the daemon must run on this machine): {e}"
            ) from e
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[ResourceSample] = []
        self.error: str | None = None  # why sampling stopped early (the process exited)
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="npc-voice-resources", daemon=True)

    def start(self) -> ResourceSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def _take(self) -> bool:
        try:
            self.samples.append(sample_process(self.pid, time.monotonic() - self._t0))
            return True
        except OSError as e:
            self.error = f"process {self.pid} could not be read any more: {e}"
            return False

    def _run(self) -> None:
        while self._take() and not self._stop.wait(self.interval_s):
            pass

    def stop(self) -> list[ResourceSample]:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.error is None:
            self._take()
        return self.samples


def _growth(first: float, last: float) -> float | None:
    return None if first == 0 else 100.0 * (last - first) / first


def resources_report(sampler: ResourceSampler, duration_s: float) -> dict[str, Any]:
    """The report's ``resources`` section."""
    samples = sampler.samples
    warmup_s = min(WARMUP_MAX_S, duration_s / 5)
    out: dict[str, Any] = {
        "pid": sampler.pid,
        "interval_s": sampler.interval_s,
        "warmup_s": warmup_s,
        "error": sampler.error,
        "samples": [dataclasses.asdict(s) for s in samples],
    }
    if not samples:
        return out
    first = next((s for s in samples if s.t >= warmup_s), samples[-1])
    last = samples[-1]
    out["first_after_warmup"] = dataclasses.asdict(first)
    out["last"] = dataclasses.asdict(last)
    out["peak"] = {k: max(getattr(s, k) for s in samples) for k in ("rss_kib", "threads", "fds")}
    out["growth_pct"] = {k: _growth(getattr(first, k), getattr(last, k)) for k in ("rss_kib", "threads", "fds")}
    span = last.t - first.t
    if span > 0:  # cores used after warm-up; a child that exited meanwhile (engine restart) takes its CPU along
        out["cpu_cores"] = {
            "daemon": max(0.0, (last.cpu_s - first.cpu_s) / span),
            "engine": max(0.0, (last.child_cpu_s - first.child_cpu_s) / span),
        }
        busy, idle, stolen = (max(0.0, (b - a) / span) for a, b in zip(first.machine, last.machine, strict=True))
        total = busy + idle + stolen
        out["machine"] = {
            "cpus": os.cpu_count() or 1,
            "busy_cores": busy,
            "idle_cores": idle,
            "stolen_cores": stolen,
            "steal_pct": 100.0 * stolen / total if total else 0.0,
        }
    return out


def resources_text(res: dict[str, Any]) -> str:
    """A small table for the terminal."""
    head = f"resources     daemon pid {res['pid']}, {len(res['samples'])} samples every {res['interval_s']:g} s"
    if "last" not in res:
        return head + f": none ({res['error']})"
    first, last, peak, growth = res["first_after_warmup"], res["last"], res["peak"], res["growth_pct"]
    span = f"growth from t={first['t']:.0f} s (after {res['warmup_s']:.0f} s warm-up) to t={last['t']:.0f} s"
    lines = [f"{head}; {span}"]
    lines.append(f"  {'':10} {'first':>10} {'last':>10} {'peak':>10} {'growth':>8}")
    for key, name, scale in (("rss_kib", "RSS MiB", 1024), ("threads", "threads", 1), ("fds", "open fds", 1)):
        g = growth[key]
        lines.append(
            f"  {name:10} {first[key] / scale:10.1f} {last[key] / scale:10.1f} {peak[key] / scale:10.1f} "
            f"{'-' if g is None else f'{g:+.1f}%':>8}"
        )
    cores = res.get("cpu_cores")
    if cores is not None:
        lines.append(f"  CPU        {cores['daemon'] + cores['engine']:.2f} cores after warm-up: "
                     f"daemon process (gRPC, line preparation) {cores['daemon']:.2f}, "
                     f"engine process {cores['engine']:.2f}")
    machine = res.get("machine")
    if machine is not None:
        line = (f"  machine    {machine['cpus']} CPUs: busy {machine['busy_cores']:.2f} cores, idle "
                f"{machine['idle_cores']:.2f}, stolen by the hypervisor {machine['stolen_cores']:.2f} "
                f"({machine['steal_pct']:.0f} % steal)")
        if machine["steal_pct"] >= STEAL_WARN_PCT:
            line += ("\n  note       the host took this VM's CPU time during the run: "
                     "figures are below this machine's own")
        lines.append(line)
    if res["error"]:
        lines.append(f"  sampling stopped early: {res['error']}")
    return "\n".join(lines)
