"""Prometheus metrics and HTTP health checks on the daemon's own HTTP port (server.metrics_port).

    GET /metrics   Prometheus text format (prometheus-client)
    GET /healthz   200 while the process runs (liveness)
    GET /readyz    200 when voices are loaded, the engine serves, gRPC health says SERVING and
                   the daemon is not draining; 503 with the reason otherwise (readiness)

Engine figures are read from ONE ``engine.stats()`` snapshot per scrape by a custom collector,
so the engine stays the single owner of its counters (nothing is counted twice). The server
side counts what only it sees: RPCs by method and status code, and authentication failures
(a grpc.aio interceptor placed outside the bearer-token check). No label ever carries a
character id: every label has a small, fixed set of values (methods, status codes, outcomes,
voice names from the configuration).

The HTTP server runs in its own thread (http.server), so a slow scraper never touches the
event loop; ``engine.stats()`` is a lock-protected snapshot and safe from any thread.
"""

from __future__ import annotations

import inspect
import logging
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from npc_voice.engine import EngineService, EngineStats
from npc_voice.server.reload import ConfigStore

log = logging.getLogger(__name__)

PREFIX = "npc_voice"
LINE_OUTCOMES = ("completed", "cancelled", "interrupted", "rejected", "failed")  # the bounded `outcome` label


# ----------------------------------------------------------------------------------------------
# Engine figures: one stats() snapshot per scrape


def _histogram(name: str, doc: str, buckets: Sequence[tuple[float, int]], total: float) -> HistogramMetricFamily:
    """A histogram from the engine's cumulative (upper bound, count) pairs; empty -> one +Inf bucket of 0."""
    pairs = [(floatToGoString(bound), float(count)) for bound, count in buckets]
    if not pairs or not math.isinf(buckets[-1][0]):  # Prometheus requires +Inf last
        pairs.append(("+Inf", pairs[-1][1] if pairs else 0.0))
    return HistogramMetricFamily(name, doc, buckets=pairs, sum_value=total)


def engine_metrics(s: EngineStats) -> Iterator[Metric]:
    """The Prometheus families of one engine snapshot."""
    p = PREFIX
    yield GaugeMetricFamily(f"{p}_streams_active", "Streams holding a slot and not yet ended.", value=s.active_streams)
    yield GaugeMetricFamily(
        f"{p}_streams_waiting", "Streams opened but not yet admitted (capacity, or their character is busy).",
        value=s.streams_waiting,
    )
    lines = CounterMetricFamily(f"{p}_lines", "Lines (streams) ended, by outcome.", labels=["outcome"])
    for outcome in LINE_OUTCOMES:
        lines.add_metric([outcome], getattr(s, f"lines_{outcome}"))
    yield lines
    yield CounterMetricFamily(f"{p}_lines_opened", "Lines (streams) opened.", value=s.lines_opened)
    yield CounterMetricFamily(
        f"{p}_underruns", "Times a stream's generated audio fell behind its playback clock.", value=s.underruns
    )
    yield CounterMetricFamily(f"{p}_engine_ticks", "Engine ticks that stepped at least one stream.", value=s.ticks)
    yield CounterMetricFamily(f"{p}_step_failures", "Model steps that raised.", value=s.step_failures)
    yield GaugeMetricFamily(
        f"{p}_batch_fill_ratio", "Recent mean of stepped rows per running stream per step (1 = every stream stepped).",
        value=s.batch_fill,
    )
    yield GaugeMetricFamily(
        f"{p}_load_ratio", "Fitted step time of the running batch over its real-time budget.", value=s.load
    )
    yield GaugeMetricFamily(f"{p}_engine_serving", "1 while the engine serves, 0 while steps keep failing.",
                            value=1.0 if s.serving else 0.0)
    used = GaugeMetricFamily(f"{p}_slots_used", "State-pool slots held by active streams, per voice.", labels=["voice"])
    capacity = GaugeMetricFamily(f"{p}_slots_capacity", "Usable state-pool slots, per voice.", labels=["voice"])
    if s.slots_per_voice:
        for voice, (in_use, total) in sorted(s.slots_per_voice.items()):
            used.add_metric([voice], in_use)
            capacity.add_metric([voice], total)
    else:  # an engine without per-voice figures: one row for all voices
        used.add_metric([""], s.slots_in_use)
        capacity.add_metric([""], s.slots_total)
    yield used
    yield capacity
    yield GaugeMetricFamily(
        f"{p}_characters_known", "Characters with a voice state (in the pool or in host memory).",
        value=s.characters_known,
    )
    yield GaugeMetricFamily(
        f"{p}_characters_resident", "Character states resident in the device pool.",
        value=max(0, s.characters_known - s.characters_evicted),
    )
    yield GaugeMetricFamily(
        f"{p}_characters_evicted", "Character states moved out of the pool into host memory.",
        value=s.characters_evicted,
    )
    yield CounterMetricFamily(
        f"{p}_characters_forgotten", "Idle character states dropped by the host-memory bound.",
        value=s.characters_forgotten,
    )
    yield CounterMetricFamily(f"{p}_lines_prepared", "Lines run through the encoder by the line preparer.",
                              value=s.lines_prepared)
    yield CounterMetricFamily(f"{p}_prepare_cache_hits", "Lines said again, served from the preparer's cache.",
                              value=s.prepare_cache_hits)
    yield GaugeMetricFamily(f"{p}_prepare_cache_bytes", "Bytes of prepared lines the preparer's cache holds.",
                            value=s.prepare_cache_bytes)
    yield _histogram(f"{p}_tick_seconds", "Wall time of engine ticks.", s.tick_seconds_buckets, s.tick_seconds_sum)
    yield _histogram(
        f"{p}_first_audio_seconds", "Stream opened to its first audio queued.",
        s.first_audio_seconds_buckets, s.first_audio_seconds_sum,
    )
    info = GaugeMetricFamily(f"{p}_device_info", "The engine's device (value always 1).", labels=["device"])
    info.add_metric([s.device], 1.0)
    yield info


class DaemonCollector(Collector):
    """Engine snapshot, configuration reloads and readiness, read fresh at every scrape."""

    def __init__(self, metrics: MetricsServer) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        ready, _ = m.readiness()
        yield GaugeMetricFamily(f"{PREFIX}_ready", "1 when /readyz answers 200.", value=1.0 if ready else 0.0)
        yield GaugeMetricFamily(f"{PREFIX}_draining", "1 once the daemon drains (shutting down).",
                                value=1.0 if m.draining else 0.0)
        if m.store is not None:
            reloads = CounterMetricFamily(
                f"{PREFIX}_config_reloads", "Configuration reloads (SIGHUP or file change), by result.",
                labels=["result"],
            )
            reloads.add_metric(["applied"], m.store.generation)
            reloads.add_metric(["rejected"], m.store.rejected)
            yield reloads
        if m.engine is not None:
            try:
                stats = m.engine.stats()
            except Exception:  # a scrape must not fail because the engine does
                log.exception("engine.stats() failed during a metrics scrape")
                return
            yield from engine_metrics(stats)
        if m.late_audio is not None:
            yield CounterMetricFamily(
                f"{PREFIX}_late_audio", "Audio chunks made in time by the engine that the gRPC edge took after the "
                "client's playback clock needed them (the daemon process short of CPU).", value=m.late_audio(),
            )


# ----------------------------------------------------------------------------------------------
# RPCs by method and status code


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    for c in grpc.StatusCode:  # some grpcio versions hand back the numeric code
        if c.value[0] == code:
            return c.name
    return "UNKNOWN"


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    """The status a handler ended with, as the client sees it."""
    set_code = context.code()
    if set_code is not None:  # abort() or set_code()
        return _code_name(set_code)
    if error is None:
        return "OK"
    if isinstance(error, (GeneratorExit, KeyboardInterrupt)) or type(error).__name__ == "CancelledError":
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    return "UNKNOWN"  # grpc's answer to an unhandled exception


class RpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every handled RPC by service, method and final status code.

    Place it FIRST in the server's interceptors so calls the bearer-token check rejects are
    counted too (as UNAUTHENTICATED, and in npc_voice_auth_failures_total). Calls to unknown
    methods are not counted (their names are unbounded); grpc answers them UNIMPLEMENTED."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rpcs = Counter(
            f"{PREFIX}_rpcs", "RPCs handled, by service, method and status code.",
            ["service", "method", "code"], registry=registry,
        )
        self.auth_failures = Counter(
            f"{PREFIX}_auth_failures", "Calls rejected for a missing or wrong bearer token.", registry=registry
        )

    def record(self, service: str, method: str, code: str) -> None:
        self.rpcs.labels(service, method, code).inc()
        if code == "UNAUTHENTICATED":
            self.auth_failures.inc()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        service, _, method = str(handler_call_details.method).lstrip("/").partition("/")  # type: ignore[attr-defined]
        return _counted(handler, lambda code: self.record(service, method, code))


def _counted(handler: grpc.RpcMethodHandler, record: Callable[[str], None]) -> grpc.RpcMethodHandler:
    """The same handler, calling ``record(code name)`` once when the call ends.

    grpc.aio picks how to drive a streaming handler from the function's kind (async generator,
    or coroutine using context.write), so the wrapper keeps the kind of the function it wraps."""
    if handler.unary_unary or handler.stream_unary:
        inner = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            error: BaseException | None = None
            try:
                return await inner(request, context)
            except BaseException as e:
                error = e
                raise
            finally:
                record(_final_code(context, error))

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return make(unary, handler.request_deserializer, handler.response_serializer)

    inner = handler.unary_stream or handler.stream_stream
    make = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    if inspect.isasyncgenfunction(inner):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            error: BaseException | None = None
            responses = inner(request, context)
            try:
                async for response in responses:
                    yield response
            except BaseException as e:
                error = e
                raise
            finally:
                await responses.aclose()  # run the handler's own cleanup now, not at garbage collection
                record(_final_code(context, error))

        return make(streaming, handler.request_deserializer, handler.response_serializer)

    async def writing(request: Any, context: grpc.aio.ServicerContext) -> None:  # context.write() style
        error: BaseException | None = None
        try:
            await inner(request, context)
        except BaseException as e:
            error = e
            raise
        finally:
            record(_final_code(context, error))

    return make(writing, handler.request_deserializer, handler.response_serializer)


# ----------------------------------------------------------------------------------------------
# The HTTP server


def grpc_health_reader(servicer: object, service: str) -> Callable[[], bool]:
    """A thread-safe "is ``service`` SERVING in this grpc health servicer?".

    grpcio-health-checking's aio servicer has no synchronous getter (Check is a coroutine for
    the event loop); its status table is a plain dict, read here without the loop. If a future
    grpcio renames it, this reads False and readiness fails loudly (tests/test_metrics.py)."""

    def serving() -> bool:
        table = getattr(servicer, "_server_status", None)
        return isinstance(table, dict) and table.get(service) == health_pb2.HealthCheckResponse.SERVING

    return serving


class MetricsServer:
    """The HTTP side of the daemon: /metrics, /healthz, /readyz on ``host:port``.

    Start it before the voices load (liveness answers during start-up, readiness says why not
    yet); ``attach()`` the engine once it runs; ``set_draining()`` when shutting down."""

    def __init__(self, host: str, port: int) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"metrics port {port} is not in 1..65535 (0 turns metrics off)")
        self.host = host
        self.requested_port = port
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu, open fds
        PlatformCollector(registry=self.registry)
        self.interceptor = RpcMetricsInterceptor(self.registry)
        self.registry.register(DaemonCollector(self))
        self.engine: EngineService | None = None
        self.store: ConfigStore | None = None
        self._grpc_serving: Callable[[], bool] | None = None
        self.late_audio: Callable[[], int] | None = None
        self.draining = False
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (after start())."""
        return self._http.server_address[1] if self._http is not None else 0

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"metrics": self})
        try:
            self._http = ThreadingHTTPServer((self.host, self.requested_port), handler)
        except OSError as e:
            raise OSError(f"cannot serve metrics on {self.host}:{self.requested_port}: {e.strerror or e}") from e
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="npc-voice-metrics", daemon=True)
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics, /healthz, /readyz", self.host, self.port)

    def attach(self, engine: EngineService, store: ConfigStore, grpc_serving: Callable[[], bool] | None = None,
               late_audio: Callable[[], int] | None = None) -> None:
        """The daemon serves from now on: voices loaded, engine running, gRPC bound. ``late_audio``
        reads the gRPC edge's count of audio it took late (an int the event loop publishes)."""
        self.engine, self.store, self._grpc_serving = engine, store, grpc_serving
        self.late_audio = late_audio

    def set_draining(self, draining: bool = True) -> None:
        """Readiness fails from now on (load balancers stop sending new calls); liveness stays."""
        if draining and not self.draining:
            log.info("draining: /readyz answers 503")
        self.draining = draining

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if self.engine is None:
            return False, "starting (voices loading)"
        if self._grpc_serving is not None and not self._grpc_serving():
            return False, "gRPC health is not SERVING"
        try:
            serving = self.engine.stats().serving
        except Exception as e:
            return False, f"engine stats failed: {e}"
        return (True, "ready") if serving else (False, "engine not serving (model steps keep failing)")

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _Handler(BaseHTTPRequestHandler):
    metrics: MetricsServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive: Prometheus and HAProxy health checks reuse connections

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            status, ctype, data = 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)
        elif path == "/healthz":
            status, ctype, data = 200, "text/plain; charset=utf-8", b"ok\n"
        elif path == "/readyz":
            ready, why = self.metrics.readiness()
            status, ctype, data = (200 if ready else 503), "text/plain; charset=utf-8", f"{why}\n".encode()
        else:
            status, ctype, data = 404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz, /readyz\n"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("metrics http: " + format, *args)
