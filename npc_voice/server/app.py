"""Assembling and running the daemon: voices, engine, gRPC server, health, reflection, reload.

``Daemon(options)`` is what ``npc-voice serve`` and the tests use:

    daemon = Daemon(DaemonOptions(config_path="voices.yaml", port=0))
    await daemon.start()          # loads voices, starts the engine, binds; daemon.port is real
    ...
    await daemon.stop()
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from npc_voice.config import Config, ServerSettings, load_config
from npc_voice.engine.api import Engine, EngineConfig
from npc_voice.model.api import VoiceModel
from npc_voice.server.auth import BearerTokenInterceptor, read_token
from npc_voice.server.metrics import MetricsServer, grpc_health_reader
from npc_voice.server.reload import ConfigStore
from npc_voice.server.servicer import NpcVoiceServicer
from npc_voice.server.voices import build_voices, resolve_device
from npc_voice.v1 import npc_voice_pb2, npc_voice_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = npc_voice_pb2.DESCRIPTOR.services_by_name["NpcVoice"].full_name  # "npc_voice.v1.NpcVoice"


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
        self.engine: Engine | None = None
        self.store: ConfigStore | None = None
        self.port = 0
        self.settings = ServerSettings()  # the effective settings once started
        self.auth = False  # whether a token is required
        self._tasks: list[asyncio.Task[None]] = []
        self.health: health.aio.HealthServicer | None = None
        self.metrics: MetricsServer | None = None  # server.metrics_port > 0

    async def start(self) -> None:
        config = load_config(self.options.config_path)
        settings = effective_settings(config, self.options)
        token = read_token(settings.token_file, settings.token_env)
        self.settings, self.auth = settings, token is not None
        if settings.metrics_port:  # up before the voices load: /healthz answers, /readyz says "starting"
            self.metrics = MetricsServer(settings.host, settings.metrics_port)
            self.metrics.start()
        device = resolve_device(settings.device)
        voices: dict[str, VoiceModel] = await asyncio.to_thread(build_voices, config.voices.values(), device)
        engine_config = EngineConfig(
            slots=settings.slots,
            frames_per_tick=settings.frames_per_tick,
            max_queue_wait_s=settings.max_queue_wait_s,
            device=device,
            lookahead_ms=settings.lookahead_ms,
            max_load=settings.max_load,
            max_batch=settings.max_batch,
            threads=settings.threads,
            host_cache_characters=settings.host_cache_characters,
        )
        self.engine = Engine(voices, engine_config)
        self.engine.start()
        self.store = ConfigStore(config, voices, self.options.config_path, device, self._add_voices)
        try:
            await self._serve(settings, token)
        except BaseException:  # e.g. the port is taken: do not leave the engine thread behind
            await self.stop(0)
            raise
        if self.metrics is not None:
            self.metrics.attach(self.engine, self.store, grpc_health_reader(self.health, SERVICE_NAME))
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
        if self.options.watch_interval_s > 0 and self.options.config_path:
            self._tasks.append(asyncio.create_task(self.store.watch(self.options.watch_interval_s)))
        if self.options.handle_signals:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self._reload_soon)

    async def _serve(self, settings: ServerSettings, token: str | None) -> None:
        """Build the gRPC server (NpcVoice, health, reflection, auth), bind and start it."""
        assert self.engine is not None and self.store is not None
        interceptors: list[grpc.aio.ServerInterceptor] = [BearerTokenInterceptor(token)] if token else []
        if self.metrics is not None:  # first: it also counts the calls the token check rejects
            interceptors.insert(0, self.metrics.interceptor)
        # No SO_REUSEPORT: a second daemon on a taken port must fail, not silently share it.
        self.server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
        npc_voice_pb2_grpc.add_NpcVoiceServicer_to_server(NpcVoiceServicer(self.engine, self.store), self.server)
        health_servicer = self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)

        address = f"{settings.host}:{settings.port}"
        try:
            if settings.tls_cert and settings.tls_key:
                key, cert = Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes()
                self.port = self.server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
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

    def _reload_soon(self) -> None:
        assert self.store is not None
        log.info("SIGHUP: reloading configuration")
        self._tasks.append(asyncio.create_task(asyncio.to_thread(self.store.reload)))  # type: ignore[arg-type]

    async def wait(self) -> None:
        assert self.server is not None
        await self.server.wait_for_termination()

    async def stop(self, grace_s: float = 1.0) -> None:
        if self.metrics is not None:  # /readyz 503 first: balancers stop routing here
            self.metrics.set_draining()
        for t in self._tasks:
            t.cancel()
        if self.health is not None:  # tell load balancers first: every service NOT_SERVING
            await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace_s)
        if self.engine is not None:
            await asyncio.to_thread(self.engine.close)
        if self.metrics is not None:
            self.metrics.stop()
        log.info("npc-voice stopped")


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
