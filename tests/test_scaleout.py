"""Scale-out: deploy/haproxy.cfg in front of three `npc-voice serve` processes, all on loopback.

What it shows, with real processes and a real HAProxy:
1. 50 characters speak through the proxy; each character's state lives on exactly one daemon
   (asked of each daemon directly: a character it never served exports the fresh state);
2. one daemon is SIGKILLed while all 50 speak: only calls of ITS characters may fail;
3. HAProxy marks it down from its /readyz health checks (bounded poll of the stats CSV), and
   then all 50 characters speak again with no failure; characters of the survivors stayed
   where they were (consistent hashing), the dead daemon's ones now live on one survivor each.

Needs `haproxy` (Debian package; .ci/run installs it). Without it the test skips loudly; with
REQUIRE_SCALEOUT=1 (CI) a missing haproxy is a failure. Run alone: `make test-scaleout`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from npc_voice.client import NpcVoiceClient

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
CHARACTERS = [f"{('guard', 'merchant')[i % 2]}/c{i:02d}" for i in range(50)]
PROBE = "guard/never-spoke"  # exports the fresh state on every daemon
DAEMON_CONFIG = """
voices:
  tiny: {tiny: 0}
characters:
  guard: {voice: tiny, pitch: -2}
  merchant: {voice: tiny, pitch: 3}
default_character: guard
server:
  slots: 40
  threads: 1
  max_load: 0            # routing is under test here, not admission: 3 daemons share 2 cores
  max_queue_wait_s: 20
  lookahead_ms: 150
"""
SHORT_LINE = "Well met, traveller."
LONG_LINE = "Well met, traveller. The road north is long, and the nights are cold in the pass."


def _haproxy() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if path is None:
        why = "haproxy is not installed (apt-get install -y haproxy): the SCALE-OUT TEST DID NOT RUN"
        if os.environ.get("REQUIRE_SCALEOUT") == "1":
            pytest.fail(why + " and REQUIRE_SCALEOUT=1")
        pytest.skip(why)
    return path


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    """Poll ``check`` every 0.1 s; return the seconds it took, fail after ``timeout_s``."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)
    return time.monotonic() - t0


@dataclass
class DaemonProc:
    name: str  # the HAProxy server name
    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"daemon {self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        return http_get(f"http://127.0.0.1:{self.metrics_port}/readyz")[0] == 200


@dataclass
class Cluster:
    daemons: list[DaemonProc]
    proxy: str  # host:port of HAProxy's gRPC frontend
    stats_url: str

    def server_status(self) -> dict[str, str]:
        """HAProxy's view of each daemon: UP, DOWN, ... (stats CSV)."""
        status, text = http_get(self.stats_url + ";csv")
        assert status == 200, text
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "npc_voice_daemons" and r["svname"] in
                {d.name for d in self.daemons}}


def haproxy_config(daemons: list[DaemonProc], frontend: int, stats: int) -> str:
    """deploy/haproxy.cfg with this test's addresses: everything else is used as shipped."""
    text = HAPROXY_CFG.read_text()
    text, n = re.subn(r"bind 127\.0\.0\.1:50050 proto h2", f"bind 127.0.0.1:{frontend} proto h2", text)
    assert n == 1, "deploy/haproxy.cfg changed: update this test's substitutions"
    text, n = re.subn(r"bind 127\.0\.0\.1:8404", f"bind 127.0.0.1:{stats}", text)
    assert n == 1
    servers = re.findall(r"^    server npc\d .*$", text, flags=re.M)
    assert len(servers) == 3, servers
    for line, d in zip(servers, daemons, strict=True):
        shipped = re.sub(r"127\.0\.0\.1:\d+ (.*) port \d+$", rf"127.0.0.1:{d.port} \1 port {d.metrics_port}", line)
        assert shipped != line and f"server {d.name} " in shipped, line
        text = text.replace(line, shipped)
    return text


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    haproxy = _haproxy()
    tmp = tmp_path_factory.mktemp("scaleout")
    config = tmp / "voices.yaml"
    config.write_text(DAEMON_CONFIG)
    ports = free_ports(8)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    daemons: list[DaemonProc] = []
    proxy: subprocess.Popen[bytes] | None = None
    try:
        for i in range(3):
            log = tmp / f"npc{i + 1}.log"
            cmd = [sys.executable, "-m", "npc_voice", "serve", "--config", str(config), "--device", "cpu",
                   "--port", str(ports[2 * i]), "--metrics-port", str(ports[2 * i + 1])]
            proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=tmp)
            daemons.append(DaemonProc(f"npc{i + 1}", ports[2 * i], ports[2 * i + 1], proc, log))
        for d in daemons:
            wait_for(f"{d.name} /readyz", d.ready, 120)
        cfg = tmp / "haproxy.cfg"
        cfg.write_text(haproxy_config(daemons, ports[6], ports[7]))
        hlog = tmp / "haproxy.log"
        proxy = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=hlog.open("wb"), stderr=subprocess.STDOUT)
        c = Cluster(daemons, f"127.0.0.1:{ports[6]}", f"http://127.0.0.1:{ports[7]}/stats")

        def all_up() -> bool:
            if proxy is not None and proxy.poll() is not None:
                pytest.fail(f"haproxy exited with {proxy.returncode}:\n{hlog.read_text()[-3000:]}")
            return http_get(c.stats_url)[0] == 200 and set(c.server_status().values()) == {"UP"}

        wait_for("haproxy to see all three daemons UP", all_up, 30)
        yield c
    finally:
        for p in [proxy, *(d.proc for d in daemons)]:
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [proxy, *(d.proc for d in daemons)]:
            if p is not None:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)


def speak_all(proxy: str, text: str, on_started: Callable[[], None] | None = None) -> dict[str, str]:
    """All 50 characters speak at once through the proxy; character -> "OK" or the status code name."""

    def one(client: NpcVoiceClient, character: str) -> str:
        try:
            pcm, _, _ = client.speak_to_array(text, character, timeout=60)
            return "OK" if len(pcm) > 0 else "EMPTY"
        except grpc.RpcError as e:
            return e.code().name  # type: ignore[attr-defined]

    with NpcVoiceClient(proxy) as client, ThreadPoolExecutor(len(CHARACTERS)) as pool:
        futures = {c: pool.submit(one, client, c) for c in CHARACTERS}
        if on_started is not None:
            on_started()
        return {c: f.result() for c, f in futures.items()}


def owners(daemons: list[DaemonProc]) -> dict[str, set[str]]:
    """Daemon name -> the characters whose state it holds (asked of each daemon directly)."""
    out: dict[str, set[str]] = {}
    for d in daemons:
        with NpcVoiceClient(d.address) as c:
            fresh = c.export_state(PROBE)
            known = {ch for ch in CHARACTERS if c.export_state(ch) != fresh}
            assert c.stats().characters_known == len(known), f"{d.name}: GetStats disagrees with the exports"
        out[d.name] = known
    return out


def assert_partition(where: dict[str, set[str]]) -> None:
    seen: dict[str, str] = {}
    for name, chars in where.items():
        for ch in chars:
            assert ch not in seen, f"{ch} has state on both {seen[ch]} and {name}"
            seen[ch] = name
    assert set(seen) == set(CHARACTERS), f"no daemon holds {sorted(set(CHARACTERS) - set(seen))}"


def test_characters_stick_to_one_daemon_and_survive_a_daemon_loss(cluster: Cluster) -> None:
    # 1. Everyone speaks once through the proxy: one daemon per character.
    results = speak_all(cluster.proxy, SHORT_LINE)
    assert set(results.values()) == {"OK"}, results
    before = owners(cluster.daemons)
    assert_partition(before)
    assert all(before.values()), f"consistent hashing left a daemon without characters: {before}"
    speaks = 0.0
    for d in cluster.daemons:  # the daemons' own metrics saw the same 50 calls
        _, text = http_get(f"http://127.0.0.1:{d.metrics_port}/metrics")
        m = re.search(r'npc_voice_rpcs_total\{code="OK",method="Speak",service="npc_voice.v1.NpcVoice"\} (\S+)', text)
        speaks += float(m.group(1)) if m else 0.0
    assert speaks == len(CHARACTERS)

    # 2. The busiest daemon dies while everyone speaks a longer line.
    victim = max(cluster.daemons, key=lambda d: len(before[d.name]))
    survivors = [d for d in cluster.daemons if d is not victim]

    detected: list[float] = []  # seconds from the kill until HAProxy's stats say DOWN

    def kill_victim() -> None:
        time.sleep(0.5)  # the lines are under way
        victim.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()

        def watch() -> None:
            while time.monotonic() - killed < 15 and not detected:
                if cluster.server_status().get(victim.name) == "DOWN":
                    detected.append(time.monotonic() - killed)
                time.sleep(0.05)

        threading.Thread(target=watch, name="down-watch", daemon=True).start()

    results = speak_all(cluster.proxy, LONG_LINE, on_started=kill_victim)
    failed = {c for c, r in results.items() if r != "OK"}
    assert failed <= before[victim.name], (
        f"calls of characters NOT on the killed daemon failed: {sorted(failed - before[victim.name])} ({results})"
    )
    wait_for(f"haproxy to mark {victim.name} DOWN", lambda: bool(detected), 15)
    # deploy/haproxy.cfg checks every 500 ms and takes a daemon out after 2 failures.
    assert detected[0] < 5.0, f"{victim.name} was marked DOWN only {detected[0]:.1f} s after it died"
    assert cluster.server_status() == {d.name: "UP" for d in survivors} | {victim.name: "DOWN"}

    # 3. With the victim down everyone speaks again, and nobody fails.
    results = speak_all(cluster.proxy, SHORT_LINE)
    assert set(results.values()) == {"OK"}, results
    after = owners(survivors)
    assert_partition(after)
    for d in survivors:  # consistent hashing: a survivor keeps its characters and gains only the victim's
        assert before[d.name] <= after[d.name], f"{d.name} lost characters: {before[d.name] - after[d.name]}"
        assert after[d.name] - before[d.name] <= before[victim.name]
    print(f"\nscale-out: {len(before[victim.name])} characters moved off {victim.name}; "
          f"{len(failed)} in-flight calls failed; marked DOWN {detected[0]:.2f} s after the kill")
