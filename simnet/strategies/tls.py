"""Hypothesis strategies for TLS cases: certificate defects, trust stores and policy settings.

A case is drawn as plain values (defect sets, which CAs each side trusts, ALPN lists, version
ranges, cipher lists) and built into the model's ``handshake.Client``/``Server`` with real
certificates from one ``pki.Hierarchy``, so the same case can be predicted and run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import strategies as st

from simnet.model import pki
from simnet.model.certpath import Verifier
from simnet.model.handshake import TLS12, TLS13, Client, Server
from simnet.model.pki import Defect

SERVER_NAME = "6b1c5e0a-4f2d-4c1e-8a7b-0d9e3f2a1b4c"
CLIENT_NAME = "gorouter.service.cf.internal"
ALPN = ("h2", "http/1.1")
# TLS 1.2 suites: ones an RSA certificate can serve and two it cannot (ECDSA), so cipher
# negotiation can fail as well as succeed.
TLS12_CIPHERS = ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                 "ECDHE-RSA-CHACHA20-POLY1305", "AES128-GCM-SHA256",
                 "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384")
CAS = ("root", "intermediate", "stranger")
# Handshakes compared with real components in this run, by "client -> server" (test summary).
HANDSHAKES: Counter[str] = Counter()

# The usual configuration is drawn as often as all the unusual ones together, so that later
# checks (client certificate, ALPN) are reached, not only the first failing one.
defects = st.just(frozenset()) | st.sets(st.sampled_from(list(Defect)), min_size=1,
                                         max_size=2).map(frozenset)
trust = st.just(frozenset({"root"})) | st.sets(st.sampled_from(CAS), max_size=3).map(frozenset)
alpn_lists = st.lists(st.sampled_from(ALPN), unique=True, max_size=2).map(tuple)
version_ranges = st.just((TLS12, TLS13)) | st.sampled_from([(TLS12, TLS12), (TLS13, TLS13)])
cipher_lists = st.none() | st.lists(st.sampled_from(TLS12_CIPHERS), min_size=1, max_size=3,
                                    unique=True).map(tuple)


@dataclass(frozen=True)
class Case:
    """One drawn TLS case, before certificates are made."""

    server_defects: frozenset
    server_via_intermediate: bool
    client_trusts: frozenset
    expect_name: bool
    client_cert: frozenset | None  # defects of the router's certificate; None: none presented
    client_via_intermediate: bool
    require_client_cert: bool
    server_trusts: frozenset
    verify_client_san: tuple[str, ...]
    client_alpn: tuple[str, ...]
    server_alpn: tuple[str, ...]
    client_versions: tuple[str, str]
    server_versions: tuple[str, str]
    client_ciphers: tuple[str, ...] | None
    server_ciphers: tuple[str, ...] | None


def cases(*, envoy: bool = False) -> st.SearchStrategy[Case]:
    """TLS cases; ``envoy``: the server side is the sidecar's (SAN lists, its fixed ciphers)."""
    return st.builds(
        Case,
        server_defects=defects,
        server_via_intermediate=st.booleans(),
        client_trusts=trust,
        expect_name=st.booleans(),
        client_cert=st.none() | defects,
        client_via_intermediate=st.booleans(),
        require_client_cert=st.booleans(),
        server_trusts=trust,
        verify_client_san=(st.sampled_from([(), (CLIENT_NAME,), ("someone-else",),
                                            ("someone-else", CLIENT_NAME)])
                           if envoy else st.just(())),
        client_alpn=alpn_lists,
        server_alpn=alpn_lists,
        client_versions=version_ranges,
        server_versions=version_ranges,
        client_ciphers=cipher_lists,
        server_ciphers=st.just(None) if envoy else cipher_lists,
    )


def _cas(h: pki.Hierarchy, names) -> tuple:
    return tuple(getattr(h, n).cert for n in CAS if n in names)


def server_credential(case: Case, h: pki.Hierarchy, now: datetime) -> pki.KeyPair:
    return pki.defective(h, SERVER_NAME, "server", case.server_defects, now=now,
                         via_intermediate=case.server_via_intermediate)


def client_credential(case: Case, h: pki.Hierarchy, now: datetime) -> pki.KeyPair | None:
    if case.client_cert is None:
        return None
    return pki.defective(h, CLIENT_NAME, "client", case.client_cert, now=now,
                         via_intermediate=case.client_via_intermediate)


def build(case: Case, h: pki.Hierarchy, now: datetime, *, server_verifier: Verifier
          ) -> tuple[Client, rsa.RSAPrivateKey | None, Server, rsa.RSAPrivateKey]:
    """The model's client and server for a case, with the keys a real run needs."""
    s = server_credential(case, h, now)
    c = client_credential(case, h, now)
    client = Client(
        trusted=_cas(h, case.client_trusts),
        server_name=SERVER_NAME if case.expect_name else None,
        chain=(c.cert, *c.chain) if c else (),
        alpn=case.client_alpn,
        min_version=case.client_versions[0], max_version=case.client_versions[1],
        ciphers=case.client_ciphers,
        verifier=Verifier.OPENSSL,
    )
    server = Server(
        chain=(s.cert, *s.chain),
        require_client_cert=case.require_client_cert,
        trusted_client_cas=_cas(h, case.server_trusts),
        verify_client_san=case.verify_client_san,
        alpn=case.server_alpn,
        min_version=case.server_versions[0], max_version=case.server_versions[1],
        ciphers=case.server_ciphers,
        verifier=server_verifier,
    )
    return client, (c.key if c else None), server, s.key
