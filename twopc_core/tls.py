"""TLS contexts, built in one place for every hop: client → coordinator, coordinator →
participant, replica → replica, and the services' own listeners.

A server context serves a certificate and key; given a client CA it also requires every
client to present a certificate that CA signed. A client context trusts the CA file it is
given (the system's CAs without one) and may present a client certificate. Both refuse
anything older than TLS 1.2; a client checks the server's certificate and host name.

A file that is missing or is not what it should be raises :class:`TlsConfigError` naming
the file and what it was meant to be, so a configuration fails at load, not at the first
connection.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["TlsConfigError", "check_file", "client_context", "server_context"]

PathLike = str | Path


class TlsConfigError(ValueError):
    """A certificate, key or CA file that is missing or cannot be loaded."""


def check_file(path: PathLike, what: str) -> Path:
    """``path`` as a Path; raises :class:`TlsConfigError` if it is not an existing file."""
    found = Path(path)
    if not found.is_file():
        raise TlsConfigError(f"{what} {str(found)!r} does not exist or is not a file")
    return found


def server_context(cert_file: PathLike, key_file: PathLike, client_ca_file: PathLike | None = None) -> ssl.SSLContext:
    """A context to serve HTTPS with ``cert_file``/``key_file``; with ``client_ca_file``,
    clients must present a certificate that CA signed (mutual TLS)."""
    # Not create_default_context: it would trust the system's CAs for client certificates.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert_file, key_file, "server")
    if client_ca_file is not None:
        _load_ca(context, client_ca_file, "client CA file")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    ca_file: PathLike | None = None, cert_file: PathLike | None = None, key_file: PathLike | None = None
) -> ssl.SSLContext:
    """A context to reach an HTTPS server whose certificate ``ca_file`` signed (the
    system's CAs when None), presenting ``cert_file``/``key_file`` if given (``key_file``
    may be left out when the certificate file holds the key too)."""
    if key_file is not None and cert_file is None:
        raise TlsConfigError("a client key file needs its certificate file")
    if ca_file is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        # Only the given CA: the system's CAs loaded beside it would be trusted too.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # checks certificates and host names
        _load_ca(context, ca_file, "CA file")
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None:
        _load_chain(context, cert_file, key_file, "client")
    return context


def _load_ca(context: ssl.SSLContext, ca_file: PathLike, what: str) -> None:
    path = check_file(ca_file, what)
    try:
        context.load_verify_locations(cafile=path)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsConfigError(f"{what} {str(path)!r} holds no PEM CA certificate ({exc})") from None


def _load_chain(context: ssl.SSLContext, cert_file: PathLike, key_file: PathLike | None, side: str) -> None:
    cert = check_file(cert_file, f"{side} certificate file")
    key = check_file(key_file, f"{side} key file") if key_file is not None else None
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsConfigError(
            f"{side} certificate {str(cert)!r} and key {str(key or cert)!r} do not load as a PEM pair ({exc})"
        ) from None
