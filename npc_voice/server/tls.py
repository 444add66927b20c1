"""The daemon's TLS certificate, re-read on SIGHUP without dropping a connection.

grpc's dynamic server credentials ask ``_fetch`` before every new TLS handshake: it returns the
new certificate once after a ``reload()`` and None (keep the current one) otherwise. Connections
already open keep the certificate they were made with; new ones get the new certificate.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


class CertificateError(ValueError):
    """The certificate or key cannot be read, or they do not belong together."""


def read_key_pair(cert_file: str, key_file: str) -> tuple[bytes, bytes]:
    """(key PEM, certificate chain PEM), checked to be a matching pair."""
    try:
        key, cert = Path(key_file).read_bytes(), Path(cert_file).read_bytes()
        # A pair that does not match would fail every handshake later, far from the cause.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise CertificateError(f"TLS certificate {cert_file!r} / key {key_file!r}: {e}") from e
    return key, cert


class ServerCertificate:
    """Owns the certificate in force; ``credentials()`` goes to ``add_secure_port`` once."""

    def __init__(self, cert_file: str, key_file: str) -> None:
        self.cert_file, self.key_file = cert_file, key_file
        self._current = read_key_pair(cert_file, key_file)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()  # _fetch runs on a grpc thread
        self.rotations = 0

    def credentials(self) -> grpc.ServerCredentials:
        initial = grpc.ssl_server_certificate_configuration([self._current])
        return grpc.dynamic_ssl_server_credentials(initial, self._fetch)

    def reload(self) -> bool:
        """Re-read the files; True when the certificate changed. A broken pair keeps the old one."""
        try:
            pair = read_key_pair(self.cert_file, self.key_file)
        except CertificateError as e:
            log.error("TLS certificate not rotated, the current one stays in force: %s", e)
            return False
        if pair == self._current:
            return False
        with self._lock:
            self._current = pair
            self._pending = grpc.ssl_server_certificate_configuration([pair])
            self.rotations += 1
        log.info("TLS certificate rotated: new connections use %s", self.cert_file)
        return True

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            pending, self._pending = self._pending, None
        return pending
