"""A derived deployment made real: each sidecar's identity certificate and Envoy bootstrap
written, the bootstraps validated by the real Envoy, and on request an instance brought up
as a Diego cell does it (a cell and a container namespace, Garden's NetIn rules loaded into
the cell, the real Envoy running in the container with the derived bootstrap); everything is
torn down when the realization closes, also after an error.

What is realized is what derive produced: the instance's guid, addresses, proxy ports and
host ports, and the scenario's proxy settings, through ``model.envoy.sidecar_bootstrap`` and
``model.capture.diego_netin_rules``. Nothing here decides a port or a rule itself.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from simnet.errors import Error
from simnet.model import pki
from simnet.model.capture import diego_netin_rules
from simnet.model.deployment import Deployment
from simnet.model.envoy import CertFiles, sds_secret, sidecar_bootstrap
from simnet.model.placement import Instance
from simnet.model.platform import Diego
from simnet.real.envoy import EnvoyProcess, validate
from simnet.real.netfilter import load_rules
from simnet.real.netns import CellTopology
from simnet.real.tls import write_credential


class RealizeError(Error):
    """A deployment, or a part of it, that cannot be realized here."""


@dataclass
class RealSidecar:
    """One instance's sidecar: its credential files and bootstrap, and once started, the cell
    it runs in and its Envoy process."""

    instance: Instance
    cert_files: CertFiles
    bootstrap: dict
    cell: CellTopology | None = None
    envoy: EnvoyProcess | None = None


@dataclass
class Realization:
    """The real side of a deployment; use as a context manager (``with realize(d) as r``)."""

    deployment: Deployment
    directory: Path
    authorities: dict[str, pki.KeyPair]
    sidecars: dict[str, RealSidecar]
    _stack: ExitStack = field(default_factory=ExitStack, repr=False)
    _owned_directory: bool = field(default=False, repr=False)

    def ca_file(self, name: str) -> str:
        """The PEM file of the CA the scenario calls ``name`` (the identity CA, a router CA)."""
        path = self.directory / f"ca-{name}.crt"
        if not path.exists():
            path.write_bytes(pki.cert_pem(self.authorities[name]))
        return str(path)

    def router_client_files(self) -> tuple[str, str] | None:
        """gorouter's ``router.backends.cert_chain`` as files (certificate, key): issued by the
        CA the scenario names for it, with its SAN; None when the routers have none."""
        client_cert = self.deployment.scenario.routers.backends.client_cert
        if client_cert is None:
            return None
        now = datetime.now(timezone.utc) - timedelta(minutes=1)
        pair = pki.client_certificate(self.authorities[client_cert.ca], "gorouter",
                                      client_cert.san, now=now)
        return write_credential(self.directory, "router-client", pair)

    def validate(self) -> int:
        """``envoy --mode validate`` on each distinct bootstrap shape (instances with the same
        app ports have the same listeners); raises ``EnvoyError`` with Envoy's complaint.
        Returns how many bootstraps were validated."""
        seen = set()
        for sc in self.sidecars.values():
            if sc.instance.proxy.app_ports not in seen:
                seen.add(sc.instance.proxy.app_ports)
                validate(sc.bootstrap)
        return len(seen)

    def write_identity(self, guid: str, *, expired: bool = False, without_guid: bool = False,
                       now: datetime | None = None) -> None:
        """A new identity certificate for ``guid`` into its SDS file (realized with ``sds``),
        written beside it and moved into place, which is what a watching Envoy reloads on: the
        rep's credential manager rotating it, with ``expired`` one whose validity has ended
        (a rotation that came too late), with ``without_guid`` the one it writes when the
        instance stops (CN and DNS SAN empty: executor credmanager.go, on signal)."""
        sc = self.sidecars[guid]
        if sc.cert_files.sds_file is None:
            raise RealizeError(f"{guid} was realized without sds: its Envoy cannot reload")
        now = now or datetime.now(timezone.utc) - timedelta(minutes=1)
        validity = pki.DEFAULT_IDENTITY_VALIDITY
        issued = now - validity - timedelta(hours=1) if expired else now
        s = self.deployment.scenario
        pair = pki.instance_identity(self.authorities[s.cells.instance_identity_ca],
                                     "" if without_guid else guid, sc.instance.container_ip,
                                     now=issued, validity=validity)
        write_sds(sc.cert_files.sds_file, pair)

    def start(self, guid: str) -> RealSidecar:
        """Bring one instance up as its cell would: router, cell and container namespaces,
        the cell's NetIn rules for it, and its Envoy in the container (needs root)."""
        sc = self.sidecars[guid]
        if sc.envoy is not None:
            return sc
        inst = sc.instance
        sc.cell = self._stack.enter_context(CellTopology(inst.cell_ip, inst.container_ip))
        load_rules(sc.cell.cell, diego_netin_rules(inst))
        sc.envoy = self._stack.enter_context(EnvoyProcess(sc.bootstrap, namespace=sc.cell.container))
        return sc

    def close(self) -> None:
        """Stop every Envoy, remove every namespace (their rules go with them) and the files."""
        try:
            self._stack.close()
        finally:
            for sc in self.sidecars.values():
                sc.envoy = sc.cell = None
            if self._owned_directory:
                shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Realization:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_sds(path: str, pair: pki.KeyPair) -> None:
    """The identity's SDS file, replaced atomically (a rename into the watched directory)."""
    chain = pki.bundle_pem(pair.cert, *pair.chain).decode()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    tmp.write_text(json.dumps(sds_secret(chain, pki.key_pem(pair.key).decode())))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def realize(deployment: Deployment, directory: Path | None = None, *,
            guids: list[str] | None = None, now: datetime | None = None,
            sds: bool = False) -> Realization:
    """Write the credentials and bootstraps of the deployment's sidecars (those of ``guids``,
    default every instance with a proxy) into ``directory`` (default a private temporary one,
    removed on close). The CAs are made here, named as the scenario names them; each instance
    identity has CN and DNS SAN = its guid and IP SAN = its container IP, as Diego issues them.

    With ``sds`` each identity is also written as a file-based SDS secret in a directory of its
    own, which the bootstrap points Envoy at (as the executor does), so ``write_identity`` can
    rotate or expire it under a running Envoy.

    Diego sidecars only: cf-for-k8s pods and BOSH VMs get their Envoy config from a control
    plane (``real.ingress`` runs the ingress gateway's; the emulated twin will run the rest)."""
    if not isinstance(deployment.platform, Diego):
        raise RealizeError(f"realize covers Diego sidecars; {deployment.platform.name} "
                           "sidecars get their config from a control plane")
    s = deployment.scenario
    owned = directory is None
    directory = Path(tempfile.mkdtemp(prefix="simnet-realize-")) if owned else Path(directory)
    try:
        now = now or datetime.now(timezone.utc) - timedelta(minutes=1)
        client_cert = s.routers.backends.client_cert
        names = {s.cells.instance_identity_ca, *s.proxy.trusted_ca_certificates,
                 *([client_cert.ca] if client_cert else [])}
        cas = {name: pki.make_ca(name, now=now) for name in sorted(names)}
        trusted = None
        if s.proxy.trusted_ca_certificates:
            trusted = directory / "trusted.crt"
            trusted.write_bytes(pki.bundle_pem(*(cas[n] for n in s.proxy.trusted_ca_certificates)))
        wanted = set(guids) if guids is not None else None
        sidecars = {}
        for inst in deployment.instances:
            if inst.proxy is None or (wanted is not None and inst.guid not in wanted):
                continue
            pair = pki.instance_identity(cas[s.cells.instance_identity_ca], inst.guid,
                                         inst.container_ip, now=now)
            cert, key = write_credential(directory, inst.guid, pair)
            sds_file = None
            if sds:
                (directory / inst.guid).mkdir(exist_ok=True)
                sds_file = str(directory / inst.guid / "sds-id-cert-and-key.json")
                write_sds(sds_file, pair)
            files = CertFiles(cert, key, trusted_ca=None if trusted is None else str(trusted),
                              sds_file=sds_file)
            sidecars[inst.guid] = RealSidecar(inst, files, sidecar_bootstrap(
                inst.proxy, guid=inst.guid, proxy=s.proxy, cert_files=files,
                app_address=inst.container_ip))
        if wanted is not None and wanted - set(sidecars):
            raise RealizeError(f"no sidecar for {sorted(wanted - set(sidecars))}")
    except BaseException:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return Realization(deployment, directory, cas, sidecars, _owned_directory=owned)
