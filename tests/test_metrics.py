"""Prometheus metrics and HTTP health (npc_voice/server/metrics.py) on a real daemon over loopback.

The daemon runs with a bearer token so authentication failures can be counted; every call
here goes over a real gRPC channel, every scrape over real HTTP.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import TINY_CONFIG, DaemonThread, start_daemon
from grpc_health.v1 import health_pb2
from prometheus_client.parser import text_string_to_metric_families

from npc_voice.client import NpcVoiceClient
from npc_voice.config import ConfigError, parse_config
from npc_voice.engine.api import EngineStats
from npc_voice.server.app import SERVICE_NAME
from npc_voice.server.metrics import LINE_OUTCOMES, engine_metrics

TOKEN = "metrics-test-token"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(port: int) -> Samples:
    status, text = http_get(port, "/metrics")
    assert status == 200
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonThread, int]]:
    tmp = tmp_path_factory.mktemp("metrics")
    (tmp / "token.txt").write_text(TOKEN)
    port = free_port()
    d = start_daemon(tmp, TINY_CONFIG, metrics_port=port, token_file=str(tmp / "token.txt"))
    yield d, port
    d.stop()


def test_health_endpoints_follow_grpc_health_and_draining(served: tuple[DaemonThread, int]) -> None:
    d, port = served
    assert http_get(port, "/healthz") == (200, "ok\n")
    assert http_get(port, "/readyz") == (200, "ready\n")
    assert http_get(port, "/nope")[0] == 404
    assert d.daemon.metrics is not None
    health = d.daemon.health
    assert health is not None
    try:
        d.call(health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING))
        status, body = http_get(port, "/readyz")
        assert (status, body) == (503, "gRPC health is not SERVING\n")
        assert value(scrape(port), "npc_voice_ready") == 0.0
        assert http_get(port, "/healthz")[0] == 200, "liveness does not follow readiness"
    finally:
        d.call(health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING))
    assert http_get(port, "/readyz")[0] == 200
    try:
        d.daemon.metrics.set_draining()
        assert http_get(port, "/readyz") == (503, "draining\n")
        assert value(scrape(port), "npc_voice_draining") == 1.0
    finally:
        d.daemon.metrics.set_draining(False)
    assert http_get(port, "/readyz")[0] == 200
    assert value(scrape(port), "npc_voice_ready") == 1.0


def test_values_move_with_real_calls(served: tuple[DaemonThread, int]) -> None:
    d, port = served
    before = scrape(port)
    with NpcVoiceClient(d.address, token=TOKEN) as client:
        for character in ("guard/m1", "merchant/m2", "guard/m1"):  # guard says it twice: a cache hit
            line = client.speak_to_array("Fresh bread, friend.", character)
            assert len(line[0]) > 0
        call = client.speak("A much longer line, so that the client can walk away in the middle of it.", "goblin/m3")
        for event in call:  # the player walks away after the first audio: the call is cancelled
            if event.WhichOneof("event") == "audio":
                call.cancel()
                break
        with pytest.raises(grpc.RpcError) as err:
            client.speak_to_array("Hello.", "nobody")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        deadline = time.monotonic() + 10
        while (grpc_stats := client.stats()).active_streams and time.monotonic() < deadline:
            time.sleep(0.02)
    with NpcVoiceClient(d.address) as anonymous, pytest.raises(grpc.RpcError) as err:
        anonymous.stats()
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    after = scrape(port)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    svc = "npc_voice.v1.NpcVoice"
    assert moved("npc_voice_lines_total", outcome="completed") == 3
    assert moved("npc_voice_rpcs_total", service=svc, method="Speak", code="OK") == 3
    assert moved("npc_voice_rpcs_total", service=svc, method="Speak", code="NOT_FOUND") == 1
    assert moved("npc_voice_rpcs_total", service=svc, method="Speak", code="CANCELLED") == 1
    assert moved("npc_voice_lines_total", outcome="cancelled") == 1
    assert moved("npc_voice_rpcs_total", service=svc, method="GetStats", code="UNAUTHENTICATED") == 1
    assert moved("npc_voice_auth_failures_total") == 1
    assert moved("npc_voice_rpcs_total", service=svc, method="GetStats", code="OK") >= 1  # the idle poll
    assert value(after, "npc_voice_characters_known") >= 2
    # the daemon's line preparer: guard's line, merchant's (another speed), the long one; guard's again cached
    assert moved("npc_voice_lines_prepared_total") >= 3
    assert moved("npc_voice_prepare_cache_hits_total") >= 1
    assert value(after, "npc_voice_prepare_cache_bytes") > 0
    assert grpc_stats.prepare_cache_hits == value(after, "npc_voice_prepare_cache_hits_total")
    assert grpc_stats.lines_prepared == value(after, "npc_voice_lines_prepared_total")
    assert moved("npc_voice_engine_ticks_total") > 0
    assert ("npc_voice_late_audio_total", ()) in after  # the gRPC edge's count, the same as GetStats'
    assert grpc_stats.late_audio == value(after, "npc_voice_late_audio_total")
    # Every outcome is exposed (zero or not), and no label carries a character id.
    for outcome in LINE_OUTCOMES:
        assert ("npc_voice_lines_total", (("outcome", outcome),)) in after
    for _, labels in after:
        assert not any("/m1" in v or "/m2" in v for _, v in labels)
    # Slots per voice add up to GetStats' total (TINY_CONFIG: 8 usable per voice).
    capacity = sum(v for (n, _), v in after.items() if n == "npc_voice_slots_capacity")
    assert capacity == grpc_stats.slots_total > 0
    assert value(after, "npc_voice_streams_active") == 0
    # Histograms always carry a +Inf bucket and a count, even when the engine has no buckets yet.
    for h in ("npc_voice_tick_seconds", "npc_voice_first_audio_seconds"):
        assert (f"{h}_bucket", (("le", "+Inf"),)) in after
        assert value(after, f"{h}_count") == value(after, f"{h}_bucket", le="+Inf")
    assert value(after, "process_resident_memory_bytes") > 10e6


def test_config_reloads_are_counted(served: tuple[DaemonThread, int]) -> None:
    d, port = served
    store = d.daemon.store
    assert store is not None and store.path is not None
    path = Path(store.path)
    good = path.read_text()
    before = scrape(port)
    try:
        path.write_text("characters: {guard: {pitch: 99}}\n")
        assert store.reload() is False
        path.write_text(good)
        assert store.reload() is True
    finally:
        path.write_text(good)
    after = scrape(port)
    for result in ("applied", "rejected"):
        assert value(after, "npc_voice_config_reloads_total", result=result) == (
            value(before, "npc_voice_config_reloads_total", result=result) + 1
        )


def test_engine_snapshot_families() -> None:
    """Histogram buckets from the engine's cumulative pairs; per-voice slots when the engine gives them."""
    stats = EngineStats(
        active_streams=3, slots_in_use=3, slots_total=10, ticks=5, tick_ms_mean=1.0, tick_ms_p99=2.0,
        underruns=1, characters_known=7, characters_evicted=2, device="cpu", lines_completed=4,
        lines_cancelled=1, lines_rejected=0, lines_interrupted=2,
        slots_per_voice={"a": (2, 6), "b": (1, 4)},
        tick_seconds_buckets=((0.01, 3), (0.05, 5), (float("inf"), 5)), tick_seconds_sum=0.07,
        first_audio_seconds_buckets=((0.1, 1), (0.2, 2)), first_audio_seconds_sum=0.25,  # no +Inf given
    )
    families = {f.name: f for f in engine_metrics(stats)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("npc_voice_lines_total", (("outcome", "interrupted"),))] == 2
    assert samples[("npc_voice_slots_used", (("voice", "a"),))] == 2
    assert samples[("npc_voice_slots_capacity", (("voice", "b"),))] == 4
    assert samples[("npc_voice_characters_resident", ())] == 5
    assert samples[("npc_voice_tick_seconds_bucket", (("le", "0.05"),))] == 5
    assert samples[("npc_voice_tick_seconds_count", ())] == 5
    assert samples[("npc_voice_first_audio_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("npc_voice_first_audio_seconds_sum", ())] == 0.25
    # An engine without histograms yet: still exposed, one +Inf bucket of 0.
    empty = EngineStats(**{**stats.__dict__, "tick_seconds_buckets": (), "tick_seconds_sum": 0.0})
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in engine_metrics(empty) for s in f.samples}
    inf_bucket = ("npc_voice_tick_seconds_bucket", (("le", "+Inf"),))
    assert [k for k in got if k[0] == "npc_voice_tick_seconds_bucket"] == [inf_bucket]
    assert got[inf_bucket] == got[("npc_voice_tick_seconds_count", ())] == 0


def test_metrics_port_config_and_flag() -> None:
    from npc_voice.cli import build_parser

    base = "characters: {guard: {}}\nserver: {port: 7000, metrics_port: %s}\n"
    assert parse_config(base % 9100, source="t", base_dir=None).server.metrics_port == 9100
    assert parse_config("characters: {guard: {}}\n", source="t", base_dir=None).server.metrics_port == 0
    for bad, why in (("7000", "server.port too"), ("70000", "out of range"), ("'x'", "expected an integer")):
        with pytest.raises(ConfigError, match=why):
            parse_config(base % bad, source="t", base_dir=None)
    assert build_parser().parse_args(["serve", "--metrics-port", "9100"]).metrics_port == 9100
