"""Certificates made in the test (``trustme``): a throwaway CA and a server certificate for 127.0.0.1.

::

    certs = make_certs(tmp_path)
    Node(..., tls_cert=certs.cert, tls_key=certs.key)
    PusherClient.connect(port, tls=certs.client_context())
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

__all__ = ["Certs", "make_certs"]


@dataclass(frozen=True)
class Certs:
    """Paths of the PEM files: ``ca`` (what clients trust), ``cert`` (the chain) and ``key``."""

    ca: str
    cert: str
    key: str
    authority: trustme.CA

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA and checks the host name."""
        return ssl.create_default_context(cafile=self.ca)


def make_certs(directory: Path) -> Certs:
    """Write a fresh CA and a certificate for ``127.0.0.1`` and ``localhost`` into ``directory``."""
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    ca, cert, key = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    authority.cert_pem.write_to_path(str(ca))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return Certs(str(ca), str(cert), str(key), authority)
