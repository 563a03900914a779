"""What the Linux kernel actually does with a connection, for the netfilter differential.

``load_rules`` feeds an ``iptables-restore`` text to the real ``iptables-restore --noflush`` in a
namespace (through ``nsenter --net``, which is ``ip netns exec`` minus its mount namespace).
``kernel_outcome`` makes a real TCP connection (or sends one UDP datagram) in a ``Topology`` and
reports where it landed as the same ``Outcome`` the model (``simnet.model.netfilter``) predicts,
so the two compare field by field; ``probe`` returns the same with what was observed on the way
(SO_ORIGINAL_DST, the receiving namespace, the connect error).

Everything happens in this process, no child process: listeners are sockets created inside
``pod`` and ``peer`` (``setns`` on the calling thread) on every candidate port, on the wildcard
address, with ``IP_TRANSPARENT`` so TPROXY can hand them connections for any address. The
connecting socket of an outbound connection is created in ``pod`` by a short-lived thread that
first takes the connection's uid/gid (what the owner match reads is fixed when the socket is
created, see ``_make_socket``); an inbound one is created in ``peer`` and marked so that peer
routes it into pod through ``conn.in_if``. Every socket is closed before the call returns,
whatever happened, the client's first with an RST so conntrack forgets the 4-tuple.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import platform
import re
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass

from simnet.errors import Error
from simnet.model.addresses import DEFAULT_IF
from simnet.model.packet import Connection, Outcome
from simnet.real.netns import Namespace, NetnsError, Topology, setns

SOL_IP = 0
SOL_IPV6 = 41
IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20  # also the cmsg type (IP_ORIGDSTADDR)
IPV6_RECVORIGDSTADDR = 74  # likewise
IPV6_TRANSPARENT = 75
SO_ORIGINAL_DST = 80  # IP6T_SO_ORIGINAL_DST has the same number at SOL_IPV6
SO_MARK = 36
LISTEN_BACKLOG = 16
GRACE_S = 1.0  # after an accept, for the client side to see its handshake complete

_libc = ctypes.CDLL(None, use_errno=True)
_TPROXY_MARK = re.compile(r"--tproxy-mark\s+(\S+)")

# connect() errors that mean "the connection was not delivered": a dropped SYN (timeout), or an
# ICMP error some hop sent back (e.g. pod not forwarding). ECONNREFUSED is NOT one: with a
# listener on every candidate port it means the candidate set missed a port.
_NOT_DELIVERED = {errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EPERM}


class RulesError(NetnsError):
    """``iptables-restore`` rejected the rules; the message has its stderr and the numbered input."""


class ProbeError(Error, RuntimeError):
    """The probe itself is wrong (no listener where the connection went, a connection the
    topology cannot make): a bug in the test, never a netfilter verdict."""


# ----------------------------------------------------------------------------- rules


def _tproxy_marks(restore_text: str) -> list[str]:
    marks = []
    for line in restore_text.splitlines():
        if re.search(r"-j\s+TPROXY\b", line):
            m = _TPROXY_MARK.search(line)
            if m and m.group(1) not in marks:
                marks.append(m.group(1))
    return marks


def load_rules(ns: Namespace | Topology, restore_text: str, family: int = 4) -> None:
    """Load ``restore_text`` into ``ns`` with ``iptables-restore --noflush`` (6: ip6tables-restore).

    A ``Topology`` means its ``pod``. When a rule uses ``TPROXY --tproxy-mark``, the policy
    routing TPROXY needs is added as Istio does (fwmark -> table 133 -> local). On failure raises
    ``RulesError`` with iptables-restore's stderr, which names the failing line.
    """
    if isinstance(ns, Topology):
        ns = ns.pod
    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, got {family!r}")
    tool = "iptables-restore" if family == 4 else "ip6tables-restore"
    if not restore_text.endswith("\n"):
        restore_text += "\n"
    try:
        ns.run([tool, "--noflush"], stdin=restore_text, what=f"{tool} in {ns.name}")
    except NetnsError as exc:
        raise RulesError(str(exc)) from None
    for mark in _tproxy_marks(restore_text):
        ns.ensure_tproxy_routing(mark, family)


# ----------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class KernelProbe:
    """One real connection: the ``Outcome`` plus what was observed, for diagnostics.

    ``sockname`` is the address the receiving socket saw the connection (datagram) addressed
    to; ``original_dst`` is SO_ORIGINAL_DST read in the receiving namespace (TCP only; ``None``
    without a NAT/conntrack entry there). ``client_error`` names the errno when the connection
    was not delivered (``ETIMEDOUT``: nothing arrived before the timeout).
    """

    outcome: Outcome
    accepted_in: str | None = None
    listener_port: int | None = None
    sockname: tuple[str, int] | None = None
    peername: tuple[str, int] | None = None
    original_dst: tuple[str, int] | None = None
    client_sockname: tuple[str, int] | None = None
    client_error: str | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class _Delivery:
    role: str
    port: int
    sockname: tuple[str, int]
    peername: tuple[str, int]
    original_dst: tuple[str, int] | None
    sock: socket.socket | None  # the accepted TCP socket, closed by the caller


def _addr(sockaddr) -> tuple[str, int]:
    return str(ipaddress.ip_address(sockaddr[0])), int(sockaddr[1])


def _original_dst(sock: socket.socket, family: int) -> tuple[str, int] | None:
    try:
        if family == 4:
            raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, 16)
            return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack("!H", raw[2:4])[0]
        raw = sock.getsockopt(SOL_IPV6, SO_ORIGINAL_DST, 28)
        return (str(ipaddress.ip_address(raw[8:24])), struct.unpack("!H", raw[2:4])[0])
    except OSError:
        return None


def _close_hard(sock: socket.socket) -> None:
    """Close a TCP socket with an RST (SO_LINGER 0): no TIME_WAIT, and conntrack forgets the
    4-tuple when the RST comes from the client side."""
    try:
        if sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _sock_type(proto: str) -> int:
    return socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM


def _listen(ns: Namespace, family: int, proto: str, ports: Iterable[int],
            stack: ExitStack) -> list[tuple[socket.socket, int]]:
    """Wildcard listeners with IP_TRANSPARENT (TPROXY only hands packets to transparent
    sockets) in ``ns``; UDP ones also report each datagram's destination (ORIGDSTADDR: the
    address and port in its header as received, i.e. after NAT)."""
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    out = []
    with ns.entered():
        for port in ports:
            s = socket.socket(af, _sock_type(proto))
            stack.callback(s.close)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == 4:
                s.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
                if proto == "udp":
                    s.setsockopt(SOL_IP, IP_RECVORIGDSTADDR, 1)
                s.bind(("0.0.0.0", port))
            else:
                s.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if proto == "udp":
                    s.setsockopt(SOL_IPV6, IPV6_RECVORIGDSTADDR, 1)
                s.bind(("::", port))
            if proto == "tcp":
                s.listen(LISTEN_BACKLOG)
            s.setblocking(False)
            out.append((s, port))
    return out


def _receive(listener: socket.socket, port: int, role: str, family: int) -> _Delivery | None:
    """Take the connection (TCP: accept; UDP: the datagram) waiting on ``listener``."""
    if listener.type == socket.SOCK_STREAM:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return None
        return _Delivery(role, port, _addr(sock.getsockname()), _addr(sock.getpeername()),
                         _original_dst(sock, family), sock)
    try:
        _data, ancdata, _flags, peer = listener.recvmsg(64, socket.CMSG_SPACE(32))
    except BlockingIOError:
        return None
    dst = None
    for level, kind, data in ancdata:  # a sockaddr_in / sockaddr_in6
        if family == 4 and (level, kind) == (SOL_IP, IP_RECVORIGDSTADDR):
            dst = socket.inet_ntop(socket.AF_INET, data[4:8]), struct.unpack("!H", data[2:4])[0]
        elif family == 6 and (level, kind) == (SOL_IPV6, IPV6_RECVORIGDSTADDR):
            dst = str(ipaddress.ip_address(data[8:24])), struct.unpack("!H", data[2:4])[0]
    if dst is None:
        raise ProbeError("a datagram arrived without its destination (no ORIGDSTADDR)")
    return _Delivery(role, port, dst, _addr(peer), None, None)


# Per-thread credential changes: raw syscalls, because glibc's setuid()/setgid()/setgroups()
# (and so os.setuid) apply to every thread of the process.
_SYSCALLS = {  # setgroups, setresuid, setresgid
    "x86_64": (116, 117, 119),
    "aarch64": (159, 147, 149), "riscv64": (159, 147, 149), "loongarch64": (159, 147, 149),
}


def _become(uid: int, gid: int) -> None:
    """Give the calling thread (only) the credentials of a process started as ``uid``/``gid``
    with no supplementary groups."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        raise ProbeError(f"no per-thread credential syscalls known for {platform.machine()}")
    setgroups, setresuid, setresgid = numbers
    L = ctypes.c_long
    for args, what in (((setgroups, L(0), ctypes.c_void_p(None)), "setgroups"),
                       ((setresgid, L(gid), L(gid), L(gid)), "setresgid"),
                       ((setresuid, L(uid), L(uid), L(uid)), "setresuid")):
        if _libc.syscall(*args) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")


def _make_socket(ns: Namespace, family: int, proto: str, uid: int | None, gid: int | None,
                 bind: tuple[str, int] | None, spoof: bool) -> socket.socket:
    """A socket living in ``ns``, created (and bound) with the credentials of ``uid``/``gid``.

    What netfilter and routing see of a socket's owner is fixed when it is created: the owner
    match and ``meta skuid/skgid`` read the credentials of the socket's file (fsuid, fsgid,
    supplementary groups) and ``sk_uid`` is the creator's fsuid. So a short-lived thread enters
    ``ns``, drops to ``uid``/``gid`` and creates the socket; then it ends, its credentials with
    it. ``None`` for both: this thread as it is (root). The caller owns the returned socket.
    """
    af = socket.AF_INET if family == 4 else socket.AF_INET6

    def create() -> socket.socket:
        s = socket.socket(af, _sock_type(proto))
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if spoof:  # bind and route from any source address (FREEBIND alone does not route)
                s.setsockopt(*((SOL_IP, IP_TRANSPARENT) if family == 4
                               else (SOL_IPV6, IPV6_TRANSPARENT)), 1)
            if bind:
                s.bind(bind)
        except BaseException:
            s.close()
            raise
        return s

    if uid is None and gid is None:
        with ns.entered():
            return create()
    result: dict[str, object] = {}

    def as_user() -> None:
        try:
            setns(ns.fd)  # this thread only, and it ends right after
            _become(uid or 0, gid or 0)
            result["sock"] = create()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result["error"] = exc

    worker = threading.Thread(target=as_user, name=f"simnet-probe-uid{uid}")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["sock"]  # type: ignore[return-value]


class _Client:
    """The sending side: a non-blocking socket of this process (see ``_make_socket``), marked
    ``mark`` (SO_MARK, set as root whatever the socket's owner), connecting (TCP) or having sent
    one datagram (UDP, connected so that ICMP errors come back to it)."""

    def __init__(self, sock: socket.socket, dst: tuple[str, int], mark: int):
        self.sock = sock
        self.error = 0
        self.tcp = sock.type == socket.SOCK_STREAM
        try:
            if mark:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
            sock.setblocking(False)
            err = sock.connect_ex(dst)
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
            if not self.tcp:
                try:
                    sock.send(b"simnet probe")
                except OSError as exc:  # e.g. EPERM: dropped by OUTPUT
                    self.error = exc.errno or errno.EIO
        except BaseException:
            sock.close()
            raise
        # TCP: POLLOUT when the handshake completes or fails; UDP: only errors (POLLERR)
        self.events = select.POLLOUT if self.tcp else 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def name(self) -> tuple[str, int] | None:
        try:
            return _addr(self.sock.getsockname())
        except OSError:
            return None

    def ready(self) -> tuple[int, tuple[str, int] | None, str]:
        """(the errno, 0 when connected; the socket's address; a description)."""
        err = self.error or self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return (err, self.name(), os.strerror(err) if err else "connected")

    def close(self) -> None:
        _close_hard(self.sock)


def _validate(topology: Topology, conn: Connection, ports: list[int]) -> None:
    """Refuse connections the topology cannot make as described (a bug in the caller, which
    would otherwise show up as a false model/kernel difference)."""
    if conn.proto not in ("tcp", "udp"):
        raise ProbeError(f"only TCP and UDP connections can be probed, not {conn.proto}")
    if conn.ctstate != "NEW":
        raise ProbeError(f"a real connection starts in ctstate NEW, not {conn.ctstate}")
    if conn.family == 6 and not topology.ipv6:
        raise ProbeError("IPv6 connection on a topology made with ipv6=False")
    if conn.sport and conn.sport in ports:
        raise ProbeError(f"source port {conn.sport} is also a listening port; pick another sport")
    if conn.src and ipaddress.ip_address(conn.src).version != conn.family:
        raise ProbeError(f"src {conn.src} and dst {conn.dst} are of different families")
    mine = {a for a in topology.pod_addrs if ipaddress.ip_address(a).version == conn.family}
    given = {a for a in conn.local_addrs if ipaddress.ip_address(a).version == conn.family}
    if {str(ipaddress.ip_address(a)) for a in given} != mine:
        raise ProbeError(f"local_addrs {conn.local_addrs} are not pod's addresses {sorted(mine)}; "
                         "build connections with topology.outbound()/inbound()")
    if conn.direction == "outbound":
        if conn.src and not topology.is_pod_local(conn.src):
            raise ProbeError(f"outbound src {conn.src} is not an address of pod "
                             f"({', '.join(topology.pod_addrs)} or loopback)")
        if not conn.mark and conn.out_if != topology.out_if(conn.dst):
            raise ProbeError(f"out_if {conn.out_if!r}, but pod routes {conn.dst} through "
                             f"{topology.out_if(conn.dst)!r}")
    elif conn.direction == "inbound":
        dst = ipaddress.ip_address(conn.dst)
        if dst.is_loopback or conn.dst in topology.peer_addrs:
            raise ProbeError(f"inbound dst {conn.dst} is peer's own address: it cannot reach pod")
        if conn.mark:
            raise ProbeError("an inbound connection cannot carry a mark "
                             "(it is cleared between namespaces)")
        in_if = conn.in_if or DEFAULT_IF
        if in_if not in topology.interfaces:
            raise ProbeError(f"in_if {conn.in_if!r} is not one of {sorted(topology.interfaces)}")
        if conn.in_addr and conn.in_addr != topology.address(in_if, conn.family):
            raise ProbeError(f"in_addr {conn.in_addr} is not pod's address on {in_if} "
                             f"({topology.address(in_if, conn.family)})")
    else:
        raise ProbeError(f"unknown direction {conn.direction!r}")


def probe(topology: Topology, conn: Connection, listen_ports: Iterable[int],
          timeout: float = 0.3) -> KernelProbe:
    """Make ``conn`` for real in ``topology`` and report where the kernel delivered it.

    Listeners (wildcard address, IP_TRANSPARENT) wait on ``listen_ports`` plus ``conn.dport`` in
    both namespaces. Outbound: a socket of pod owned by ``conn.uid``/``conn.gid`` (None = 0, no
    supplementary groups), marked ``conn.mark``, bound to ``conn.src``/``conn.sport``, connects
    to ``conn.dst:conn.dport``. Inbound: a socket of peer bound to ``conn.src`` (IP_TRANSPARENT:
    any source; empty: peer's address on the link), routed into pod through ``conn.in_if``.
    UDP sends one datagram instead of a handshake.

    Received in pod -> local, in peer -> not local; the destination is the address the
    receiving socket saw the connection addressed to, with the port of the listener that got
    it (for TPROXY: the original address and the on-port). Nothing received within ``timeout``
    (or an ICMP error back) -> DROP. Refused (no listener there) -> ProbeError.

    Conntrack remembers a flow's NAT decision: TCP probes reset their connection so the next
    probe of the same 4-tuple starts afresh, but a UDP flow keeps its entry (~30 s), so repeat a
    UDP 4-tuple in the same topology only after changing nothing that decides it.
    """
    family = conn.family
    ports = sorted({int(p) for p in listen_ports} | {conn.dport})
    _validate(topology, conn, ports)
    wildcard = "0.0.0.0" if family == 4 else "::"
    bind = (conn.src or wildcard, conn.sport) if (conn.src or conn.sport) else None
    dst = (conn.dst, conn.dport)
    start = time.monotonic()
    with ExitStack() as stack:
        listeners: dict[int, tuple[socket.socket, int, str]] = {}
        for role in ("pod", "peer"):
            for s, port in _listen(topology.namespace(role), family, conn.proto, ports, stack):
                listeners[s.fileno()] = (s, port, role)
        client: _Client | None = None
        delivery: _Delivery | None = None
        try:
            try:
                if conn.direction == "outbound":
                    sock = _make_socket(topology.pod, family, conn.proto, conn.uid, conn.gid,
                                        bind, spoof=False)
                    client = _Client(sock, dst, conn.mark)
                else:
                    sock = _make_socket(topology.peer, family, conn.proto, None, None, bind,
                                        spoof=bool(conn.src))
                    client = _Client(sock, dst, topology.peer_mark(conn.in_if or DEFAULT_IF))
            except OSError as exc:  # e.g. EACCES: a non-root uid binding a port below 1024
                raise ProbeError(f"cannot make {conn}: {exc}") from exc
            delivery, report = _wait(conn, ports, listeners, client, family, start + timeout)
            elapsed = time.monotonic() - start
            client_name = report[1] if report else client.name()
            if delivery is None:
                if report is not None and report[0] == 0 and client.tcp:
                    # The client saw the SYN-ACK, but the listener never got the final ACK
                    # (dropped on the way): accept() never returns, nothing is delivered.
                    return KernelProbe(Outcome("DROP", None, local=False),
                                       client_sockname=client_name, client_error="ACK_NOT_DELIVERED",
                                       elapsed_s=elapsed)
                err = report[0] if report is not None and report[0] else errno.ETIMEDOUT
                return KernelProbe(Outcome("DROP", None, local=False),
                                   client_sockname=client_name,
                                   client_error=errno.errorcode.get(err, str(err)),
                                   elapsed_s=elapsed)
            d = delivery
            return KernelProbe(
                Outcome("ACCEPT", (d.sockname[0], d.port), local=(d.role == "pod")),
                accepted_in=d.role, listener_port=d.port, sockname=d.sockname,
                peername=d.peername, original_dst=d.original_dst,
                client_sockname=client_name, elapsed_s=elapsed)
        finally:
            # The client resets first (so conntrack forgets the 4-tuple), then the accepted side.
            if client is not None:
                client.close()
            if delivery is not None and delivery.sock is not None:
                _close_hard(delivery.sock)


def _wait(conn: Connection, ports: list[int], listeners: dict[int, tuple[socket.socket, int, str]],
          client: _Client, family: int, deadline: float):
    """Poll until a listener receives the connection (and, for TCP, the client has seen its
    handshake complete), the client gets an error, or the deadline passes.

    Returns (the delivery or None, the client's report or None).
    """
    poller = select.poll()
    for fd in listeners:
        poller.register(fd, select.POLLIN)
    poller.register(client.fileno(), client.events)
    report = client.ready() if client.error else None
    delivery = None
    while True:
        if report is not None:
            err = report[0]
            if err == errno.ECONNREFUSED:
                raise ProbeError(
                    f"connection refused: no listener where the kernel sent {conn} "
                    f"(listening on {ports} in pod and peer); add the port to listen_ports")
            if err and err not in _NOT_DELIVERED:
                raise ProbeError(f"cannot make {conn}: {report[2]}")
            if err and delivery is None:
                return None, report  # not delivered (an ICMP error came back, or OUTPUT drop)
        if delivery is not None and (report is not None or not client.tcp):
            return delivery, report
        # once received, the client's side completes at once: allow a little past the deadline
        remaining = deadline - time.monotonic() + (GRACE_S if delivery else 0)
        if remaining <= 0:
            return delivery, report
        for fd, _ev in poller.poll(max(1, int(remaining * 1000) + 1)):
            if fd in listeners and delivery is None:
                delivery = _receive(*listeners[fd], family)
                if delivery is not None:
                    for other in listeners:
                        poller.unregister(other)
            elif fd == client.fileno() and report is None:
                report = client.ready()
                poller.unregister(fd)


def kernel_outcome(topology: Topology, conn: Connection, listen_ports: Iterable[int],
                   timeout: float = 0.3) -> Outcome:
    """The kernel's ``Outcome`` for ``conn`` (see ``probe``, which also returns diagnostics)."""
    return probe(topology, conn, listen_ports, timeout).outcome
