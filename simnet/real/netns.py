"""Linux network namespaces for the kernel side of the netfilter differential, behind a small API.

``Namespace`` is one named namespace (``ip netns add simnet-<pid>-<n>-<role>``) that is always
removed: on ``with`` exit (also when the body raised), at interpreter exit (``atexit``), and by
``sweep_leftovers()``, which removes the namespaces of test processes that died without cleaning
up. ``Topology`` is the fixed two-namespace network of one test case: ``pod`` (whose rules are
under test) and ``peer`` (the rest of the world), joined by two veth pairs. Nothing leaves the
machine: ``peer`` owns every address (AnyIP), so whatever ``pod`` sends ends there.
``CellTopology`` is a Diego cell for the reachability check: ``router`` -- ``cell`` (forwarding,
holding Garden's NetIn rules) -- ``container``.

Setup is tuned for a fresh topology per hypothesis example: one ``ip -batch`` in the root
namespace creates both namespaces and both veth pairs, sysctls are written from this process
(``setns`` on the calling thread, see ``Namespace.entered``), then one ``ip -n NAME -batch`` per
namespace, run concurrently, sets addresses and routes. Removal is an in-process
``umount2(MNT_DETACH)`` + ``unlink`` of ``/run/netns/NAME``, exactly what ``ip netns del`` does.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import ipaddress
import itertools
import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Self

from simnet.errors import Error
from simnet.model.addresses import (
    BENCHMARK_NET,
    CONTAINER_GATEWAY,
    ROUTER_IP,
    AddressPlan,
)

NETNS_DIR = "/run/netns"
PREFIX = "simnet"
CLONE_NEWNET = 0x40000000
MNT_DETACH = 2
IP_TIMEOUT_S = 30.0

_NAME_RE = re.compile(rf"^{PREFIX}-(\d+)-\d+-[A-Za-z0-9_.]+$")
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count(1)
_live: dict[str, Namespace] = {}
_live_lock = threading.Lock()
_owner_pid = os.getpid()


class NetnsError(Error, RuntimeError):
    """A namespace could not be created, configured, entered or removed; says which and why."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int) -> None:
    """Move the calling thread (only it) into the network namespace open at ``fd``."""
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def _run(argv: list[str], stdin: str | None, what: str) -> None:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=IP_TIMEOUT_S,
                          check=False)
    if proc.returncode != 0:
        raise NetnsError(_command_failure(what, argv, stdin, proc.returncode,
                                          proc.stderr + proc.stdout))


def _command_failure(what: str, argv: list[str], stdin: str | None, rc: int, output: str) -> str:
    listing = ""
    if stdin:
        listing = "\n--- input ---\n" + "\n".join(
            f"{n:4d}  {line}" for n, line in enumerate(stdin.splitlines(), 1))
    return f"{what} failed (exit {rc}): {' '.join(argv)}\n--- output ---\n{output.strip()}{listing}"


def _batch(netns: str | None, family: int | None = None) -> list[str]:
    fam = [f"-{family}"] if family else []
    return ["ip", *fam, *(["-n", netns] if netns else []), "-batch", "-"]


def ip_batch(lines: Iterable[str], netns: str | None = None, family: int | None = None) -> None:
    """Run ``ip [-4|-6] [-n NETNS] -batch -`` on ``lines``; a failure names the failing line."""
    text = "".join(f"{line}\n" for line in lines)
    _run(_batch(netns, family), text, f"ip -batch in {netns or 'the root namespace'}")


def _ip_batches(jobs: Iterable[tuple[str | None, int, list[str]]]) -> None:
    """Several ``ip [-6] -n NAME -batch`` (namespace, family or 0, lines) run concurrently."""
    procs = []
    try:
        for netns, family, lines in jobs:
            argv = _batch(netns, family or None)
            text = "".join(f"{line}\n" for line in lines)
            p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
            procs.append((p, argv, text, netns))
            try:
                p.stdin.write(text)
                p.stdin.close()
            except BrokenPipeError:  # it stopped at an error: reported below
                pass
        failures = []
        for p, argv, text, netns in procs:
            out = p.stdout.read()
            p.stdout.close()
            rc = p.wait(timeout=IP_TIMEOUT_S)
            if rc != 0:
                failures.append(_command_failure(f"ip -batch in {netns}", argv, text, rc, out))
        if failures:
            raise NetnsError("\n\n".join(failures))
    finally:
        for p, *_ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def _delete(name: str) -> None:
    """What ``ip netns del`` does: detach the nsfs bind mount, remove the file (both idempotent)."""
    path = _path(name).encode()
    if _libc.umount2(path, MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):  # EINVAL: not mounted (half-created)
            raise NetnsError(f"cannot unmount {path.decode()}: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    """Names of the namespaces under ``/run/netns`` (what ``ip netns list`` shows)."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def sweep_leftovers() -> list[str]:
    """Remove every ``simnet-<pid>-*`` namespace whose process is gone; return their names.

    A test process killed by a signal cannot run its cleanup, so each test session calls this at
    start and end. Namespaces of live processes (including this one) are left alone; so is a
    dead process's namespace whose pid was since reused, until that process is gone too.
    """
    removed = []
    for name in list_namespaces():
        m = _NAME_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            _delete(name)
            removed.append(name)
    return removed


def _cleanup_at_exit() -> None:
    if os.getpid() != _owner_pid:  # a forked child must never remove its parent's namespaces
        return
    with _live_lock:
        left = list(_live.values())
    for ns in left:
        try:
            ns.close()
        except Exception:  # noqa: BLE001, S110 - best effort at interpreter exit
            pass


atexit.register(_cleanup_at_exit)


class Namespace:
    """One named network namespace, ``simnet-<pid>-<n>-<role>``, removed whatever happens.

    ``fd`` is an open handle on it (for ``setns``), ``entered()`` runs a block inside it on the
    calling thread, ``socket()`` makes a socket that lives in it, ``run()`` a command inside it.
    """

    def __init__(self, role: str = "ns"):
        if not re.fullmatch(r"[A-Za-z0-9_.]+", role):
            raise ValueError(f"namespace role must be [A-Za-z0-9_.]+, got {role!r}")
        self.role = role
        self.name = f"{PREFIX}-{os.getpid()}-{next(_counter)}-{role}"
        self.path = _path(self.name)
        self._fd: int | None = None
        self.tproxy_routes: set[tuple[int, str]] = set()

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    # -- lifetime ----------------------------------------------------------------------------

    def open(self) -> Self:
        """Create the namespace with its loopback up."""
        create_namespaces([self])
        try:
            self.ip("link set lo up")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove the namespace (idempotent). Sockets made in it must be closed by their owners."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        _delete(self.name)
        with _live_lock:
            _live.pop(self.name, None)

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def exists(self) -> bool:
        return os.path.exists(self.path)

    @property
    def fd(self) -> int:
        """A read-only descriptor of the namespace file, opened once (close-on-exec)."""
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError as exc:
                raise NetnsError(f"namespace {self.name} does not exist") from exc
        return self._fd

    # -- working inside it -------------------------------------------------------------------

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block with the calling thread inside this namespace, then move it back.

        Only this thread moves (``setns`` is per thread); sockets created in the block stay in
        this namespace for their whole life.
        """
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns(self.fd)
            try:
                yield
            finally:
                setns(home)
        finally:
            os.close(home)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
               proto: int = 0) -> socket.socket:
        """A new socket living in this namespace."""
        with self.entered():
            return socket.socket(family, type, proto)

    def sysctls(self, values: Mapping[str, int | str]) -> None:
        """Write ``net.*`` sysctls of this namespace (keys as ``sysctl`` spells them)."""
        with self.entered():
            for key, value in values.items():
                if not key.startswith("net."):
                    raise ValueError(f"only net.* sysctls are per namespace: {key}")
                path = "/proc/sys/" + key.replace(".", "/")
                try:
                    with open(path, "w") as f:
                        f.write(f"{value}\n")
                except OSError as exc:
                    raise NetnsError(f"sysctl {key}={value} in {self.name}: {exc}") from exc

    def sysctl(self, key: str) -> str:
        """Read one ``net.*`` sysctl of this namespace."""
        with self.entered(), open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()

    def ip(self, *lines: str, family: int | None = None) -> None:
        """Run ``ip`` commands (one per argument, without the leading ``ip``) in one batch here."""
        ip_batch(lines, self.name, family)

    def run(self, argv: list[str], stdin: str | None = None, what: str | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a command inside this namespace (``nsenter --net``: like ``ip netns exec`` without
        the private mount namespace, which nothing here needs); raise with its output on failure."""
        full = ["nsenter", f"--net={self.path}", "--", *argv]
        proc = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode != 0:
            raise NetnsError(_command_failure(what or argv[0], full, stdin, proc.returncode,
                                              proc.stderr + proc.stdout))
        return proc

    def ensure_tproxy_routing(self, mark: str, family: int = 4, table: int = 133) -> None:
        """Istio's TPROXY policy routing: packets marked ``mark`` (``value[/mask]``) are local
        (``ip rule add fwmark MARK lookup 133; ip route add local default dev lo table 133``)."""
        if (family, mark) in self.tproxy_routes:
            return
        lines = [f"rule add fwmark {mark} lookup {table}"]
        if not any(f == family for f, _ in self.tproxy_routes):
            lines.append(f"route add local default dev lo table {table}")
        self.ip(*lines, family=family)
        self.tproxy_routes.add((family, mark))


def create_namespaces(namespaces: Iterable[Namespace], root_lines: Iterable[str] = ()) -> None:
    """Create several namespaces, then ``root_lines`` (e.g. veth pairs), in one root ``ip -batch``.

    They are registered for cleanup before creation, and removed again if the batch fails.
    """
    namespaces = list(namespaces)
    if not os.path.isdir(NETNS_DIR):
        os.makedirs(NETNS_DIR, exist_ok=True)
    with _live_lock:
        for ns in namespaces:
            _live[ns.name] = ns
    try:
        ip_batch([f"netns add {ns.name}" for ns in namespaces] + list(root_lines))
    except BaseException:
        for ns in namespaces:
            ns.close()
        raise


# ----------------------------------------------------------------------------- topology


def sysctl_defaults(ifnames: Iterable[str], forwarding: bool,
                     accept_local: bool = False) -> dict[str, int]:
    """Sysctls fixed in both namespaces so results do not depend on the host.

    A new namespace copies the host's IPv4 ``all``/``default`` settings, and the host may set
    rp_filter, route_localnet or arp_ignore; the kernel defaults are restored here explicitly.
    IPv6 duplicate address detection is off so addresses are usable at once. ``accept_local``
    is for peer: with AnyIP every source address is "local" there, and without it packets
    from pod's TPROXY sockets (source = some foreign address) would be dropped as martians.
    """
    values: dict[str, int] = {"net.ipv4.ip_forward": int(forwarding)}
    for dev in ("all", "default", "lo", *ifnames):
        values.update({
            f"net.ipv4.conf.{dev}.rp_filter": 0,
            f"net.ipv4.conf.{dev}.route_localnet": 0,
            f"net.ipv4.conf.{dev}.arp_ignore": 0,
            f"net.ipv4.conf.{dev}.arp_filter": 0,
            f"net.ipv4.conf.{dev}.accept_local": int(accept_local),
        })
    for dev in ("all", "default", *ifnames):
        values[f"net.ipv6.conf.{dev}.accept_dad"] = 0
        values[f"net.ipv6.conf.{dev}.forwarding"] = int(forwarding)
    return values


class NamespaceGroup:
    """Namespaces created together and always removed together: a subclass sets ``namespaces``
    and defines ``open()`` (create them all, and remove them again if that fails); ``close()``
    and ``with`` remove every one of them, whatever happened.
    """

    namespaces: tuple[Namespace, ...]

    def open(self):  # pragma: no cover - every group defines it
        raise NotImplementedError

    def close(self) -> None:
        """Remove every namespace (and with them their veths, rules and routes); try all,
        report all failures."""
        errors = []
        for ns in self.namespaces:
            try:
                ns.close()
            except Exception as exc:  # noqa: BLE001 - try all, report all
                errors.append(exc)
        if errors:
            raise NetnsError("; ".join(map(str, errors)))

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


class Topology(AddressPlan, NamespaceGroup):
    """One test case's network: ``pod`` (rules under test) and ``peer``, joined by two veth pairs,
    at the addresses ``simnet.model.addresses.AddressPlan`` gives them.

    pod routes by default via peer's eth0 (IPv6: also its /64s, since neighbour discovery does
    not answer for AnyIP). peer treats every address as its own (AnyIP: a ``local 0.0.0.0/0
    dev lo`` route in its main table, below host routes to pod's addresses), so a connection
    pod sends anywhere is accepted in peer and never leaves the machine. A socket of peer
    marked ``peer_mark(in_if)`` is routed into pod through ``in_if`` (fwmark rule -> a table
    whose default route is pod's address on that link): that is how ``Connection.in_if`` is
    honoured; replies may come back on either link.

    ``forwarding`` sets ``ip_forward`` in pod (default off, the kernel default). The address
    helpers (``out_if``, ``outbound``, ``inbound``..., from ``AddressPlan``) need no root and no
    ``open()``.
    """

    def __init__(self, ipv6: bool = True, forwarding: bool = False):
        super().__init__(ipv6)
        self.forwarding = forwarding
        self.pod = Namespace("pod")
        self.peer = Namespace("peer")

    # -- lifetime ------------------------------------------------------------------------------

    def _pod_lines(self) -> list[str]:
        lines = ["link set lo up"] + [f"link set {link.name} up" for link in self.links]
        lines += [f"addr add {link.pod4}/{link.prefix4} dev {link.name}" for link in self.links]
        first = self.links[0]
        lines.append(f"route add default via {first.peer4} dev {first.name}")
        if self.ipv6:
            for link in self.links:
                net = ipaddress.ip_network(f"{link.pod6}/{link.prefix6}", strict=False)
                lines += [
                    f"addr add {link.pod6}/{link.prefix6} dev {link.name} nodad noprefixroute",
                    f"route add {link.peer6}/128 dev {link.name}",
                    f"route add {net} via {link.peer6} dev {link.name}",
                ]
            lines.append(f"route add ::/0 via {first.peer6} dev {first.name}")
        return lines

    def _peer_lines(self) -> list[str]:
        # AnyIP: a local 0/0 route in main, below host routes to pod's own addresses. A socket
        # marked with a link's ``table`` number (SO_MARK) is routed by that table instead, whose
        # only route goes into pod via pod's address on that link (see ``peer_mark``).
        lines = ["link set lo up"] + [f"link set {link.name} up" for link in self.links]
        for link in self.links:
            lines += [
                f"addr add {link.peer4}/{link.prefix4} dev {link.name} noprefixroute",
                f"route add {link.pod4}/32 dev {link.name}",
                f"route add default via {link.pod4} dev {link.name} onlink table {link.table}",
                f"rule add fwmark {link.table} lookup {link.table} pref {link.table}",
            ]
        lines.append("route add local 0.0.0.0/0 dev lo table main")
        if self.ipv6:
            for link in self.links:
                lines += [
                    f"addr add {link.peer6}/{link.prefix6} dev {link.name} nodad noprefixroute",
                    f"route add {link.pod6}/128 dev {link.name}",
                    f"route add ::/0 via {link.pod6} dev {link.name} onlink table {link.table}",
                ]
            lines.append("route add local ::/0 dev lo table main")
        return lines

    def _peer_lines6(self) -> list[str]:
        # ip rule takes its family from -4/-6 only, so IPv6 rules need their own batch.
        return [f"rule add fwmark {link.table} lookup {link.table} pref {link.table}"
                for link in self.links]

    def open(self) -> Topology:
        """Create both namespaces, the veth pairs, sysctls, addresses and routes."""
        veths = [f"link add {link.name} netns {self.pod.name} type veth "
                 f"peer name {link.name} netns {self.peer.name}" for link in self.links]
        create_namespaces([self.pod, self.peer], veths)
        try:
            ifnames = [link.name for link in self.links]
            self.pod.sysctls(sysctl_defaults(ifnames, self.forwarding))
            self.peer.sysctls(sysctl_defaults(ifnames, False, accept_local=True))
            jobs = [(self.pod.name, 0, self._pod_lines()), (self.peer.name, 0, self._peer_lines())]
            if self.ipv6:
                jobs.append((self.peer.name, 6, self._peer_lines6()))
            _ip_batches(jobs)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def namespaces(self) -> tuple[Namespace, Namespace]:
        return self.pod, self.peer

    def namespace(self, role: str) -> Namespace:
        """``pod`` or ``peer``."""
        return {"pod": self.pod, "peer": self.peer}[role]


# ----------------------------------------------------------------------------- a Diego cell


class CellTopology(NamespaceGroup):
    """A Diego cell in three namespaces: ``router`` -- ``cell`` -- ``container``.

    ========== ===================================  =====================================
    link       one end                              other end
    ========== ===================================  =====================================
    eth0 / r0  router eth0 ``router_ip``/32         cell r0 ``cell_ip``/32
    w0 / eth0  cell w0 ``gateway_ip``/32            container eth0 ``container_ip``/32
    ========== ===================================  =====================================

    Each end has a host route to the other. The cell forwards (``ip_forward=1``), as a Diego cell
    forwards to its containers; the container's default route is the cell. The router has no
    route to the container network: like gorouter it reaches a container only through the
    cell's host ports, i.e. the NetIn DNAT rules loaded into ``cell``. Addresses must be in
    198.18.0.0/15; the cell and container addresses are the derived instance's.
    """

    def __init__(self, cell_ip: str, container_ip: str, *, router_ip: str = ROUTER_IP,
                 gateway_ip: str = CONTAINER_GATEWAY):
        addresses = {"cell_ip": cell_ip, "container_ip": container_ip, "router_ip": router_ip,
                     "gateway_ip": gateway_ip}
        for what, address in addresses.items():
            if ipaddress.ip_address(address) not in BENCHMARK_NET:
                raise ValueError(f"{what} {address} is not in {BENCHMARK_NET}")
        if len(set(addresses.values())) != len(addresses):
            raise ValueError(f"addresses must differ: {addresses}")
        self.cell_ip, self.container_ip = cell_ip, container_ip
        self.router_ip, self.gateway_ip = router_ip, gateway_ip
        self.router = Namespace("router")
        self.cell = Namespace("cell")
        self.container = Namespace("container")

    @property
    def namespaces(self) -> tuple[Namespace, Namespace, Namespace]:
        return self.router, self.cell, self.container

    def open(self) -> CellTopology:
        """Create the namespaces, both veth pairs, sysctls, addresses and routes."""
        veths = [
            f"link add eth0 netns {self.router.name} type veth peer name r0 netns {self.cell.name}",
            f"link add w0 netns {self.cell.name} type veth peer name eth0 netns {self.container.name}",
        ]
        create_namespaces(self.namespaces, veths)
        try:
            self.router.sysctls(sysctl_defaults(["eth0"], False))
            self.cell.sysctls(sysctl_defaults(["r0", "w0"], True))
            self.container.sysctls(sysctl_defaults(["eth0"], False))
            _ip_batches([
                (self.router.name, 0, [
                    "link set lo up", "link set eth0 up",
                    f"addr add {self.router_ip}/32 dev eth0",
                    f"route add {self.cell_ip}/32 dev eth0"]),
                (self.cell.name, 0, [
                    "link set lo up", "link set r0 up", "link set w0 up",
                    f"addr add {self.cell_ip}/32 dev r0",
                    f"route add {self.router_ip}/32 dev r0",
                    f"addr add {self.gateway_ip}/32 dev w0",
                    f"route add {self.container_ip}/32 dev w0"]),
                (self.container.name, 0, [
                    "link set lo up", "link set eth0 up",
                    f"addr add {self.container_ip}/32 dev eth0",
                    f"route add {self.gateway_ip}/32 dev eth0",
                    f"route add default via {self.gateway_ip} dev eth0"]),
            ])
        except BaseException:
            self.close()
            raise
        return self

