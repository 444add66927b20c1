"""`npc-voice loadtest --daemon-pid`: the daemon's RSS, threads and open fds sampled during a run."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
from pathlib import Path

import pytest
from conftest import TINY_CONFIG
from live_daemon import LiveDaemon

from npc_voice.loadtest.resources import (
    ResourceSample,
    ResourceSampler,
    machine_cpu_seconds,
    resources_report,
    resources_text,
    sample_process,
)


def test_sample_process_reads_proc() -> None:
    s = sample_process(os.getpid())
    assert s.rss_kib > 10_000 and s.threads >= 1 and s.fds >= 3
    with pytest.raises(ValueError, match=r"--daemon-pid 999999999: cannot read /proc/999999999"):
        ResourceSampler(999_999_999)


def test_report_compares_the_first_sample_after_warmup_with_the_last() -> None:
    sampler = ResourceSampler(os.getpid(), interval_s=1.0)
    sampler.samples = [  # a 100 s run: warm-up is its first 20 s
        ResourceSample(0.0, 50_000, 5, 10),
        ResourceSample(10.0, 90_000, 9, 20),
        ResourceSample(20.0, 100_000, 10, 20),
        ResourceSample(100.0, 103_000, 10, 25),
    ]
    res = resources_report(sampler, duration_s=100.0)
    assert res["warmup_s"] == 20.0 and res["first_after_warmup"]["t"] == 20.0
    assert res["growth_pct"] == {"rss_kib": pytest.approx(3.0), "threads": 0.0, "fds": 25.0}
    assert res["peak"] == {"rss_kib": 103_000, "threads": 10, "fds": 25}
    text = resources_text(res)
    assert "RSS MiB" in text and "+3.0%" in text and "+25.0%" in text
    assert "cpu_cores" in res  # no CPU readings in these samples: 0 cores, reported as such
    assert res["cpu_cores"] == {"daemon": 0.0, "engine": 0.0}


def test_cpu_cores_are_the_cpu_time_after_warmup_over_the_wall_time() -> None:
    sampler = ResourceSampler(os.getpid(), interval_s=1.0)
    sampler.samples = [  # 50 s run: warm-up 10 s; from t=10 to t=50 the daemon used 20 CPU-s, the engine 36
        ResourceSample(0.0, 1, 1, 1, cpu_s=1.0, child_cpu_s=0.0),
        ResourceSample(10.0, 1, 1, 1, cpu_s=5.0, child_cpu_s=4.0),
        ResourceSample(50.0, 1, 1, 1, cpu_s=25.0, child_cpu_s=40.0),
    ]
    res = resources_report(sampler, duration_s=50.0)
    assert res["cpu_cores"] == {"daemon": pytest.approx(0.5), "engine": pytest.approx(0.9)}
    assert "1.40 cores after warm-up" in resources_text(res)


def test_machine_cpu_reads_busy_idle_and_steal_from_proc_stat() -> None:
    from npc_voice.loadtest.resources import _CLOCK_TICKS as hz

    # user nice system idle iowait irq softirq steal guest guest_nice
    text = "cpu  1000 10 200 5000 40 5 15 300 0 0\ncpu0 500 5 100 2500 20 2 7 150 0 0\nintr 1 2 3\n"
    busy, idle, stolen = machine_cpu_seconds(text)
    assert (busy * hz, idle * hz, stolen * hz) == pytest.approx((1230, 5040, 300))
    assert machine_cpu_seconds("cpu  10 0 5 100\n") == pytest.approx((15 / hz, 100 / hz, 0.0))  # no steal column
    with pytest.raises(OSError, match="no cpu line"):
        machine_cpu_seconds("intr 1 2 3\n")
    live = machine_cpu_seconds()  # this machine: it has been up, and idle at some point
    assert live[0] > 0.0 and live[1] > 0.0 and live[2] >= 0.0


def test_report_shows_the_cpu_the_hypervisor_took() -> None:
    sampler = ResourceSampler(os.getpid(), interval_s=1.0)
    sampler.samples = [  # 50 s, warm-up 10 s; from t=10 to 50: 60 CPU-s busy, 12 idle, 8 stolen on 2 CPUs
        ResourceSample(0.0, 1, 1, 1, machine=(0.0, 0.0, 0.0)),
        ResourceSample(10.0, 1, 1, 1, machine=(15.0, 3.0, 2.0)),
        ResourceSample(50.0, 1, 1, 1, machine=(75.0, 15.0, 10.0)),
    ]
    res = resources_report(sampler, duration_s=50.0)
    m = res["machine"]
    assert (m["busy_cores"], m["idle_cores"], m["stolen_cores"]) == pytest.approx((1.5, 0.3, 0.2))
    assert m["steal_pct"] == pytest.approx(10.0)
    text = resources_text(res)
    assert "stolen by the hypervisor 0.20 (10 % steal)" in text and "figures are below this machine's own" in text
    sampler.samples[-1] = ResourceSample(50.0, 1, 1, 1, machine=(75.0, 23.0, 2.2))  # 0.5 % steal: no note
    assert "figures are below" not in resources_text(resources_report(sampler, duration_s=50.0))


def test_loadtest_samples_a_live_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from npc_voice.cli import main

    (tmp_path / "voices.yaml").write_text(TINY_CONFIG, encoding="utf-8")
    live = LiveDaemon(tmp_path / "voices.yaml")
    try:
        report_path = tmp_path / "soak.json"
        args = ["loadtest", "--server", live.address, "--streams", "3", "--duration", "4", "--scenario", "mixed"]
        args += ["--daemon-pid", str(live.proc.pid), "--resources-interval", "0.5", "--report", str(report_path)]
        assert main([*args, "--quiet"]) == 0
        res = json.loads(report_path.read_text())["resources"]
        assert res["pid"] == live.proc.pid and res["error"] is None
        assert len(res["samples"]) >= 6  # every 0.5 s for >= 4 s, plus the last
        ts = [s["t"] for s in res["samples"]]
        assert ts == sorted(ts) and ts[-1] >= 4.0
        last = res["last"]
        assert last["rss_kib"] > 50_000 and last["threads"] >= 3 and last["fds"] >= 5  # torch + grpc + engine
        assert set(res["growth_pct"]) == {"rss_kib", "threads", "fds"}
        assert all(v is not None and abs(v) < 100 for v in res["growth_pct"].values()), res["growth_pct"]
        cores = res["cpu_cores"]  # the engine process stepped 3 streams; the daemon served them
        assert cores["engine"] > 0.0 and cores["daemon"] > 0.0, cores
        machine = res["machine"]  # the whole machine was busy at least with what the daemon used
        assert machine["busy_cores"] >= 0.8 * (cores["engine"] + cores["daemon"]), (machine, cores)
        assert 0.0 <= machine["steal_pct"] < 100.0
        out = capsys.readouterr().out
        assert "resources     daemon pid" in out
        # the daemon's line preparer (GetStats; cache hits are checked in test_metrics.py)
        m = re.search(r"preparer    (\d+) lines encoded, (\d+) said again from its cache", out)
        assert m is not None and int(m[1]) >= 4, out  # each of the 4 lines at least once
        # npc-voice serve froze its start-up objects out of garbage collection in both processes
        # (npc_voice/collector.py); the load generator gave its own back when it finished
        frozen = {m[1]: int(m[2]) for line in live.lines
                  if (m := re.search(r"(daemon|engine process): (\d+) start-up objects frozen", line))}
        assert set(frozen) == {"daemon", "engine process"} and min(frozen.values()) > 10_000, frozen
        assert gc.get_freeze_count() == 0
        live.signal(signal.SIGTERM)
        assert live.wait_exit(30)[0] == 0
    finally:
        live.kill()


def test_sample_process_counts_child_processes() -> None:
    """The daemon's engine runs in a child process: its memory must be in the soak figures."""
    import subprocess
    import sys
    import time

    alone = sample_process(os.getpid())
    # 200 MB, then ~0.3 s of CPU, then idle
    code = ("import time; b = bytearray(200 << 20); t = time.process_time() + 0.3\n"
            "while time.process_time() < t: pass\ntime.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while (s := sample_process(os.getpid())).rss_kib < alone.rss_kib + 150_000 or s.child_cpu_s < 0.25:
            assert time.monotonic() < deadline, (alone, s)
            time.sleep(0.1)
        assert s.cpu_s >= alone.cpu_s > 0.0  # this process's own CPU stays apart from the child's
    finally:
        child.kill()
        child.wait()
