"""Assembling and running the daemon: voices, engine, gRPC server, health, reflection, reload.

``Daemon(options)`` is what ``npc-voice serve`` and the tests use:

    daemon = Daemon(DaemonOptions(config_path="voices.yaml", port=0))
    await daemon.start()          # loads voices, starts the engine, binds; daemon.port is real
    ...
    await daemon.stop()           # drains: NOT_SERVING, no new calls, streams end, then the server stops
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from npc_voice.collector import freeze_after_startup
from npc_voice.config import Config, ServerSettings, load_config
from npc_voice.engine import Engine, EngineConfig, EngineService, resolve_device
from npc_voice.engine.allocator import keep_freed_memory
from npc_voice.engine.process import ProcessEngine
from npc_voice.model.api import VoiceModel
from npc_voice.server.auth import BearerTokenInterceptor, DrainGate, TokenSource, exposure_warnings
from npc_voice.server.metrics import MetricsServer, grpc_health_reader
from npc_voice.server.reload import ConfigStore
from npc_voice.server.servicer import NpcVoiceServicer
from npc_voice.server.tls import ServerCertificate
from npc_voice.server.voices import build_voices
from npc_voice.v1 import npc_voice_pb2, npc_voice_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = npc_voice_pb2.DESCRIPTOR.services_by_name["NpcVoice"].full_name  # "npc_voice.v1.NpcVoice"
# Shutdown never takes longer than the drain grace plus this: the engine's fade-out
# (CLOSE_FADE_WAIT_S), the last StreamEnds written, the gRPC server stopped.
STOP_MARGIN_S = 5.0
ENGINE_HEALTH_POLL_S = 0.5  # how often gRPC health re-reads the engine's serving flag
_INT32_MAX = 2**31 - 1


def server_options(s: ServerSettings) -> list[tuple[str, int]]:
    """gRPC channel arguments for the server's limits (README, "Limits")."""

    def ms(seconds: float) -> int:
        return min(_INT32_MAX, int(seconds * 1000))

    options = [
        ("grpc.so_reuseport", 0),  # a second daemon on a taken port must fail, not silently share it
        ("grpc.keepalive_time_ms", ms(s.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(s.keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", 1),  # find dead peers on idle connections too
        ("grpc.max_receive_message_length", s.max_receive_message_bytes),
        ("grpc.max_send_message_length", s.max_send_message_bytes),
    ]
    if s.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", ms(s.max_connection_age_s)),
            ("grpc.max_connection_age_grace_ms", ms(s.max_connection_age_grace_s)),
        ]
    return options


@dataclass(frozen=True)
class DaemonOptions:
    """Command-line choices; None = take the value from the configuration's ``server:`` block."""

    config_path: str | None = None  # None = the embedded voices.yaml
    host: str | None = None
    port: int | None = None  # 0 = any free port
    metrics_port: int | None = None  # HTTP metrics/health port; 0 = off
    device: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token_file: str | None = None
    token_env: str | None = None
    watch_interval_s: float = 1.0  # config file mtime poll; 0 = no watching
    handle_signals: bool = False  # SIGHUP reload (only in the main thread's loop)
    # The process is the daemon's own (`npc-voice serve`): once serving, start-up objects are frozen
    # out of garbage collection (npc_voice/collector.py). Off for a daemon inside another program.
    freeze_gc: bool = False


def effective_settings(config: Config, options: DaemonOptions) -> ServerSettings:
    """The config's server settings with command-line overrides applied."""
    overrides = {
        k: getattr(options, k)
        for k in ("host", "port", "metrics_port", "device", "tls_cert", "tls_key", "token_file", "token_env")
        if getattr(options, k) is not None
    }
    if ("tls_cert" in overrides) != ("tls_key" in overrides):
        raise ValueError("give both --tls-cert and --tls-key, or neither")
    if "token_file" in overrides or "token_env" in overrides:  # a command-line source replaces the file's
        overrides.setdefault("token_file", None)
        overrides.setdefault("token_env", None)
    return dataclasses.replace(config.server, **overrides)


class Daemon:
    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.server: grpc.aio.Server | None = None
        self.engine: EngineService | None = None
        self.store: ConfigStore | None = None
        self.port = 0
        self.settings = ServerSettings()  # the effective settings once started
        self.auth = False  # whether a token is required
        self._tasks: list[asyncio.Task[None]] = []
        self.health: health.aio.HealthServicer | None = None
        self.servicer: NpcVoiceServicer | None = None
        self.token: TokenSource | None = None  # re-read on SIGHUP (reload_credentials)
        self.certificate: ServerCertificate | None = None  # idem
        self._stopped = False
        self.metrics: MetricsServer | None = None  # server.metrics_port > 0
        self.gate = DrainGate()  # closed when the drain starts: new calls get UNAVAILABLE

    async def start(self) -> None:
        keep_freed_memory()  # the edge prepares lines (encoder tensors): same allocator churn as the engine
        config = load_config(self.options.config_path)
        settings = effective_settings(config, self.options)
        self.token = TokenSource(settings.token_file, settings.token_env)
        token = self.token.token
        self.settings, self.auth = settings, token is not None
        for warning in exposure_warnings(settings.host, bool(settings.tls_cert), token is not None):
            log.warning("%s", warning)
        if settings.metrics_port:  # up before the voices load: /healthz answers, /readyz says "starting"
            self.metrics = MetricsServer(settings.host, settings.metrics_port)
            self.metrics.start()
        device = str(resolve_device(settings.device))  # chosen once: the voices load there, the engine runs there
        voices: dict[str, VoiceModel] = await asyncio.to_thread(build_voices, config.voices.values(), device)
        engine_config = EngineConfig(
            slots=settings.slots,
            frames_per_tick=settings.frames_per_tick,
            max_queue_wait_s=settings.max_queue_wait_s,
            device=device,
            lookahead_ms=settings.lookahead_ms,
            lead_slack_ms=settings.lead_slack_ms,
            max_load=settings.max_load,
            max_waiting_per_character=settings.max_waiting_per_character,
            max_line_symbols=settings.max_line_symbols,
            max_batch=settings.max_batch,
            threads=settings.threads,
            step_threads=settings.step_threads,
            host_cache_characters=settings.host_cache_characters,
            host_cache_mb=settings.host_cache_mb,
            prepare_cache_mb=settings.prepare_cache_mb,
        )
        own_process = engine_in_own_process(settings.engine_process, device)
        self.engine = ProcessEngine(voices, engine_config) if own_process else Engine(voices, engine_config)
        await asyncio.to_thread(self.engine.start)
        self.store = ConfigStore(config, voices, self.options.config_path, device, self._add_voices)
        try:
            await self._serve(settings, token)
        except BaseException:  # e.g. the port is taken: do not leave the engine thread behind
            await self.stop(0)
            raise
        if self.options.freeze_gc:
            freeze_after_startup("daemon")  # no 100+ ms full collections under load (npc_voice/collector.py)
        if self.metrics is not None:
            servicer = self.servicer
            self.metrics.attach(self.engine, self.store, grpc_health_reader(self.health, SERVICE_NAME),
                                late_audio=lambda: servicer.late_audio.count if servicer is not None else 0)
        log.info(
            "npc-voice listening on %s:%d (%s, %s, auth %s), device %s, %d characters, default %r",
            settings.host,
            self.port,
            "TLS" if settings.tls_cert else "plaintext",
            self.store.path or "embedded voices.yaml",
            "on" if token else "off",
            device,
            len(config.characters),
            config.default_character,
        )
        self._tasks.append(asyncio.create_task(self._follow_engine_health()))
        if self.options.watch_interval_s > 0 and self.options.config_path:
            self._tasks.append(asyncio.create_task(self.store.watch(self.options.watch_interval_s)))
        if self.options.handle_signals:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self._reload_soon)

    async def _serve(self, settings: ServerSettings, token: str | None) -> None:
        """Build the gRPC server (NpcVoice, health, reflection, auth), bind and start it."""
        assert self.engine is not None and self.store is not None and self.token is not None
        interceptors: list[grpc.aio.ServerInterceptor] = [self.gate]
        if token:  # outside the gate: a caller without the token hears UNAUTHENTICATED, draining or not
            interceptors.insert(0, BearerTokenInterceptor(self.token))
        if self.metrics is not None:  # first: it also counts the calls the token check rejects
            interceptors.insert(0, self.metrics.interceptor)
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=server_options(settings),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        )
        self.servicer = NpcVoiceServicer(self.engine, self.store)
        npc_voice_pb2_grpc.add_NpcVoiceServicer_to_server(self.servicer, self.server)
        health_servicer = self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)

        address = f"{settings.host}:{settings.port}"
        try:
            if settings.tls_cert and settings.tls_key:
                self.certificate = ServerCertificate(settings.tls_cert, settings.tls_key)
                self.port = self.server.add_secure_port(address, self.certificate.credentials())
            else:
                self.port = self.server.add_insecure_port(address)
        except RuntimeError as e:  # grpc says "Failed to bind": name the address
            raise OSError(f"cannot listen on {address} (in use, or not an address of this machine): {e}") from e
        await self.server.start()
        # Voices are loaded and the engine runs: from now on the daemon serves.
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    def _add_voices(self, voices: dict[str, VoiceModel]) -> None:
        assert self.engine is not None
        self.engine.add_voices(voices)
        if self.options.freeze_gc:
            freeze_after_startup("daemon, voices added")

    def _reload_soon(self) -> None:
        assert self.store is not None
        log.info("SIGHUP: reloading configuration, token and TLS certificate")
        self.reload_credentials()
        self._tasks.append(asyncio.create_task(asyncio.to_thread(self.store.reload)))  # type: ignore[arg-type]

    def reload_credentials(self) -> None:
        """Re-read the token file and the TLS certificate (SIGHUP); no connection is dropped."""
        if self.token is not None and self.auth:
            self.token.reload()
        if self.certificate is not None:
            self.certificate.reload()

    async def wait(self) -> None:
        assert self.server is not None
        await self.server.wait_for_termination()

    async def _follow_engine_health(self) -> None:
        """gRPC health follows the engine: NOT_SERVING while its model steps keep failing or its
        process restarts, SERVING again once it serves (cancelled when the drain begins)."""
        assert self.engine is not None and self.health is not None
        serving = True
        while True:
            await asyncio.sleep(ENGINE_HEALTH_POLL_S)
            now = self.engine.stats().serving
            if now == serving:
                continue
            serving = now
            log.log(logging.INFO if now else logging.WARNING, "gRPC health: %s (the engine %s)",
                    "SERVING" if now else "NOT_SERVING", "serves again" if now else "is not serving")
            status = health_pb2.HealthCheckResponse.SERVING if now else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", SERVICE_NAME):
                await self.health.set(name, status)

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain, then stop; bounded by ``grace_s`` (default server.drain_grace_s) + STOP_MARGIN_S.

        1. readiness fails (/readyz, gRPC health NOT_SERVING) and no new call is accepted;
        2. Converse calls stop reading and close their contexts; streams get ``grace_s`` to finish;
        3. ``engine.close()`` fades out what still speaks: those clients get StreamEnd "cancelled";
        4. the gRPC server stops once those last responses are written."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.settings.drain_grace_s if grace_s is None else grace_s
        try:
            await asyncio.wait_for(self._drain(grace), grace + STOP_MARGIN_S)
        except asyncio.TimeoutError:
            log.error("shutdown: drain took longer than %g s; stopping now", grace + STOP_MARGIN_S)
        finally:
            if self.server is not None:
                await self.server.stop(0)
            if self.engine is not None:
                await _close_engine(self.engine, 1.0)  # a no-op when the drain closed it
            if self.metrics is not None:
                self.metrics.stop()
        log.info("npc-voice stopped")

    async def _drain(self, grace_s: float) -> None:
        # From now on new calls are refused with UNAVAILABLE by the gate (health checks still
        # answer, NOT_SERVING); running ones go on. The gRPC server itself stops at the end.
        self.gate.closed = True
        if self.metrics is not None:  # /readyz 503 first: balancers stop routing here
            self.metrics.set_draining()
        for t in self._tasks:
            t.cancel()
        if self.health is not None:  # tell load balancers first: every service NOT_SERVING
            await self.health.enter_graceful_shutdown()
        left = 0
        if self.servicer is not None:
            left = await self.servicer.drain(grace_s)
            if left:
                log.info("shutdown: %d call(s) still speaking after %g s: fading them out", left, grace_s)
        if self.engine is not None:  # every remaining stream ends "cancelled" (faded)
            await _close_engine(self.engine, STOP_MARGIN_S / 2)
        if self.servicer is not None and left:  # their StreamEnd goes out before the server stops
            await self.servicer.drain(STOP_MARGIN_S / 4)
        if self.server is not None:
            await self.server.stop(STOP_MARGIN_S / 4)


def engine_in_own_process(setting: str, device: str) -> bool:
    """``server.engine_process``: "auto" runs the engine in its own process on CPU, where the
    GIL shared with the gRPC edge cost it a third of its time (bench/README.md); on a GPU the
    engine thread stays in the daemon (CUDA graphs, one context)."""
    if setting == "auto":
        return device == "cpu"
    return setting == "on"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _close_engine(engine: EngineService, timeout_s: float) -> None:
    """``engine.close()`` in a daemon thread: a close that hangs cannot keep the process alive
    (``asyncio.to_thread`` would: ``asyncio.run`` joins its executor on exit)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def run() -> None:
        try:
            engine.close()
        except Exception:
            log.exception("engine close failed")
        loop.call_soon_threadsafe(_resolve, done)

    threading.Thread(target=run, name="npc-voice-engine-close", daemon=True).start()
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(done, timeout_s)
    except asyncio.TimeoutError:
        log.error("engine close did not finish within %g s", time.monotonic() - t0)


async def serve(options: DaemonOptions, on_ready: Callable[[str, int, bool, bool], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM. ``on_ready(host, port, tls, auth)`` is called once serving."""
    daemon = Daemon(dataclasses.replace(options, handle_signals=True))
    await daemon.start()
    if on_ready is not None:
        s = daemon.settings
        on_ready(s.host, daemon.port, bool(s.tls_cert), daemon.auth)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await daemon.stop()
