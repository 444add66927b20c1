"""The daemon's live configuration and its hot reload (SIGHUP and file change).

A reload parses and validates the whole file, loads any new voices, and only then swaps the
``Config`` in one assignment; on any error the old configuration stays and the log says why.
Server settings (host, port, slots, TLS, token) are read once at start-up: a reload that
changes them logs that a restart is needed and keeps the running values.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from npc_voice.config import Config, ConfigError, load_config
from npc_voice.model.api import VoiceModel
from npc_voice.server.voices import build_voices

log = logging.getLogger(__name__)


class ConfigStore:
    """Holds the current Config and the loaded voices; readers just use ``store.config``."""

    def __init__(
        self,
        config: Config,
        voices: dict[str, VoiceModel],
        path: str | None,
        device: str,
        on_new_voices: Callable[[dict[str, VoiceModel]], None] | None = None,
    ) -> None:
        self.config = config
        self.voices = voices  # name -> model; only grows (streams may still use an old voice)
        self.path = path  # None = embedded default (nothing to watch)
        self.device = device
        self.on_new_voices = on_new_voices  # hands new voices to the engine
        self.generation = 0  # bumped on every successful reload
        self.rejected = 0  # reloads refused (invalid file, voice failed to load); the old config kept
        self._mtime = self._stat()
        self._lock = threading.Lock()

    def _stat(self) -> float | None:
        if self.path is None:
            return None
        try:
            return os.stat(self.path).st_mtime_ns / 1e9
        except OSError:
            return None

    def reload(self) -> bool:
        """Re-read the file; True when the new configuration is now live. Thread-safe."""
        with self._lock:  # SIGHUP and the file watcher may ask at the same moment
            return self._reload()

    def _reload(self) -> bool:
        if self.path is None:
            log.info("reload requested but the daemon runs the embedded configuration; nothing to do")
            return False
        self._mtime = self._stat()
        try:
            new = load_config(self.path)
            missing = [v for v in new.voices.values() if v.name not in self.voices or v != self._spec(v.name)]
            loaded = build_voices(missing, self.device)
        except ConfigError as e:
            log.error("configuration reload rejected, keeping the running configuration: %s", e)
            self.rejected += 1
            return False
        except Exception as e:  # a checkpoint that fails to load must not take the daemon down
            log.error("configuration reload rejected (voice failed to load), keeping the running one: %s", e)
            self.rejected += 1
            return False
        if new.server != self.config.server:
            log.warning("server settings changed in %s; they take effect after a restart", self.path)
        if loaded and self.on_new_voices is not None:
            try:
                self.on_new_voices(loaded)
            except Exception as e:
                log.error("configuration reload rejected, keeping the running configuration: %s", e)
                self.rejected += 1
                return False
        self.voices.update(loaded)
        self.config = new
        self.generation += 1
        log.info(
            "configuration reloaded from %s: %d characters, %d voices (%s new)",
            self.path,
            len(new.characters),
            len(new.voices),
            ", ".join(loaded) or "none",
        )
        return True

    def _spec(self, name: str) -> object:
        return self.config.voices.get(name)

    def changed_on_disk(self) -> bool:
        m = self._stat()
        return m is not None and m != self._mtime

    async def watch(self, interval_s: float = 1.0) -> None:
        """Poll the file's mtime and reload when it changes (runs until cancelled)."""
        if self.path is None:
            return
        log.info("watching %s for changes every %.1f s", Path(self.path), interval_s)
        while True:
            await asyncio.sleep(interval_s)
            if self.changed_on_disk():
                await asyncio.to_thread(self.reload)
