"""The scenario file schema: one deployment, its traffic and its faults.

Field names follow the real systems' own property names where they have one (the Diego rep's
``containers.proxy.*``, gorouter's ``router.backends.*``), so an operator can copy values from a
BOSH manifest. ``simnet schema`` publishes this as JSON Schema for editors.
"""

from __future__ import annotations

import math

from datetime import datetime
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from simnet.sweep.design import Sweep

def _iso_time(value: str | datetime) -> str:
    """An ISO 8601 moment with its time zone (``Z`` or an offset), as text; YAML's own
    timestamps (unquoted) are accepted too."""
    moment = value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time such as 2026-12-01T09:00:00Z"
                             ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!s} has no time zone: add Z (UTC) or an offset such as +01:00")
    return moment.isoformat()


Port = Annotated[int, Field(ge=1, le=65535, description="A TCP port, 1-65535.")]


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- latency distributions ---------------------------------------------------------------


class Constant(Strict):
    dist: Literal["constant"]
    value_ms: float = Field(ge=0)

    @property
    def mean(self) -> float:
        """The mean, in ms."""
        return self.value_ms


class Exponential(Strict):
    dist: Literal["exponential"]
    mean_ms: float = Field(gt=0)

    @property
    def mean(self) -> float:
        return self.mean_ms


class LogNormal(Strict):
    """Log-normal with the given median and shape: the usual shape of network and service time."""

    dist: Literal["lognormal"]
    median_ms: float = Field(gt=0)
    sigma: float = Field(default=0.5, ge=0, le=5)

    @property
    def mean(self) -> float:
        return self.median_ms * math.exp(self.sigma ** 2 / 2)


class Uniform(Strict):
    dist: Literal["uniform"]
    low_ms: float = Field(ge=0)
    high_ms: float = Field(ge=0)

    @property
    def mean(self) -> float:
        return (self.low_ms + self.high_ms) / 2

    @model_validator(mode="after")
    def _ordered(self) -> "Uniform":
        if self.high_ms < self.low_ms:
            raise ValueError("high_ms must be >= low_ms")
        return self


Latency = Annotated[Union[Constant, Exponential, LogNormal, Uniform], Field(discriminator="dist")]


def constant(ms: float) -> Constant:
    return Constant(dist="constant", value_ms=ms)


class Overhead(Strict):
    """Time the real components take to pass a request on, round trip, beyond the hop delays:
    what ``simnet calibrate hops`` measures on a machine (the load balancer with the client's
    own stack, the router, the sidecar Envoy with the app's server). The simulator adds half
    of each draw to its hop each way; the emulation sleeps none of it (its components spend it
    for real)."""

    load_balancer: Latency = Field(default_factory=lambda: constant(0.0))
    router: Latency = Field(default_factory=lambda: constant(0.0))
    sidecar: Latency = Field(default_factory=lambda: constant(0.0))


class OverheadBlock(Strict):
    overhead: Overhead


class HopCalibrationFile(Strict):
    """What ``simnet calibrate hops`` writes: a ``latency.overhead`` block for a scenario."""

    latency: OverheadBlock


class Latencies(Strict):
    """One-way latency per hop, and the cost of handshakes (charged on new connections only)."""

    client_to_ingress: Latency = Field(default_factory=lambda: constant(1.0))
    ingress_to_router: Latency = Field(default_factory=lambda: constant(0.2))
    router_to_sidecar: Latency = Field(default_factory=lambda: constant(0.3))
    sidecar_to_app: Latency = Field(default_factory=lambda: constant(0.05))
    tcp_connect: Latency = Field(
        default_factory=lambda: constant(0.3), description="TCP three-way handshake (one RTT)."
    )
    tls_handshake: Latency = Field(
        default_factory=lambda: constant(2.0),
        description="Full TLS handshake including the ECDHE/RSA crypto on both ends.",
    )
    overhead: Overhead = Field(
        default_factory=Overhead, description="Processing time of the real components, round "
        "trip, as `simnet calibrate hops` measured it (zero unless set).")


# --- platform --------------------------------------------------------------------------


class Cells(Strict):
    count: int = Field(ge=1, le=10_000)
    memory_mb: int = Field(ge=64, description="Memory each cell offers to containers.")
    cores: int = Field(
        default=4, ge=1, le=1024, description="CPU cores of a cell (or, on BOSH, of the VM). "
        "Envoy starts one worker thread per core when its command line sets no --concurrency, "
        "as the Diego executor's does not.")
    instance_identity_ca: str = Field(
        default="instance-identity",
        description="Name of the CA that signs instance identity certificates.",
    )


class EnvoyMemory(Strict):
    """Sidecar memory model: ``calibrated`` (today's Envoy as simnet measured it, per listener
    kind and port mappings), ``seed`` (seed 002's 2017 figures: 7.5 MB at start, ~30 KB per
    concurrent connection) or ``manual`` (``base_mb`` and ``per_connection_kb``; giving them
    alone means manual)."""

    model: Literal["calibrated", "seed", "manual"] = "calibrated"
    base_mb: float | None = Field(default=None, ge=0, description="Private MB at start (manual).")
    per_connection_kb: float | None = Field(
        default=None, ge=0, description="Private KB per concurrent connection (manual).")

    @model_validator(mode="before")
    @classmethod
    def _numbers_mean_manual(cls, data):
        if isinstance(data, dict) and "model" not in data and (
                "base_mb" in data or "per_connection_kb" in data):
            data = {**data, "model": "manual"}
        return data

    @model_validator(mode="after")
    def _numbers_for_manual_only(self) -> "EnvoyMemory":
        numbers = (self.base_mb, self.per_connection_kb)
        if self.model == "manual" and None in numbers:
            raise ValueError("model: manual needs both base_mb and per_connection_kb")
        if self.model != "manual" and numbers != (None, None):
            raise ValueError(f"base_mb and per_connection_kb are for model: manual, not {self.model}")
        return self


class Proxy(Strict):
    """The Diego rep's ``containers.proxy.*`` properties."""

    enabled: bool = True
    enable_unproxied_port_mappings: bool = True
    require_and_verify_client_certificates: bool = False
    trusted_ca_certificates: list[str] = Field(
        default_factory=list, description="Names of CAs whose client certificates are accepted."
    )
    verify_subject_alt_name: list[str] = Field(default_factory=list)
    enable_http2: bool = True
    additional_memory_allocation_mb: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        default=0,
        description="Added to every container's memory limit; `auto` recommends for N = "
        "expected_peak_connections under the memory model: the calibrated Envoy's memory at N "
        "plus 10%, or with `memory.model: seed` the seed's 10 + 0.03*N.",
    )
    expected_peak_connections: int = Field(
        default=100, ge=0, description="N for `auto`: peak router connections per instance."
    )
    memory: EnvoyMemory = Field(default_factory=EnvoyMemory)
    envoy_config_reload_duration_s: float = Field(default=5.0, ge=0, description=(
        "The executor's envoy_config_reload_duration: how long a stopping instance's "
        "credential manager waits for Envoy to load the guid-less certificate before the "
        "container stops."))

    @model_validator(mode="after")
    def _coherent(self) -> "Proxy":
        if not self.enabled and not self.enable_unproxied_port_mappings:
            raise ValueError(
                "enable_unproxied_port_mappings: false requires the proxy to be enabled"
            )
        if self.require_and_verify_client_certificates and not self.trusted_ca_certificates:
            raise ValueError(
                "require_and_verify_client_certificates needs trusted_ca_certificates"
            )
        return self


class Sidecar(Strict):
    """An extra process in the app container: shares its network namespace and memory quota."""

    name: str = Field(min_length=1)
    process_types: list[str] = Field(default_factory=lambda: ["web"])
    command: str = ""
    ports: list[Port] = Field(default_factory=list)  # 61443 and clashes: checked by the loader
    memory_mb: int = Field(default=0, ge=0, description="Share of the app's quota it uses.")
    env: dict[str, str] = Field(default_factory=dict)


class App(Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    instances: int = Field(default=1, ge=0, le=100_000)
    memory_mb: int = Field(default=256, ge=1, description="The app's requested memory quota.")
    memory_used_mb: float | None = Field(
        default=None, ge=0, description="What the app process itself uses; default half its quota."
    )
    ports: list[Port] = Field(default_factory=lambda: [8080], min_length=1)  # 61443: the loader
    process_type: str = "web"
    uid: int | None = Field(
        default=None, ge=0, le=4_294_967_294, description="The uid the app's processes run "
        "as; default the platform's: 2000 (vcap in a Diego or cf-for-k8s container), 1000 "
        "(vcap on a BOSH stemcell). Capture rules that match on the owner see it.")
    env: dict[str, str | int] = Field(default_factory=dict)
    sidecars: list[Sidecar] = Field(default_factory=list)
    service_time: Latency = Field(default_factory=lambda: constant(5.0))
    concurrency: int = Field(
        default=200, ge=1, le=100_000, description="Requests one instance serves at once (its "
        "worker threads or processes); a request holds a worker for its service_time. Default "
        "200: Tomcat's maxThreads, the Java buildpack's app server.")
    queue_limit: int = Field(
        default=100, ge=0, le=1_000_000, description="Requests that wait for a worker (the "
        "listen backlog); beyond it the connection is refused, which the router sees as a dial "
        "error. Default 100: Tomcat's acceptCount.")
    start_s: float = Field(
        default=0.0, ge=0, description="When `cf push` starts the app's instances; routes to it "
        "have no endpoints until then (and until the change has propagated).")


class Route(Strict):
    """A route mapping (``cf map-route``): ``host`` (and ``path``) to ``app`` on ``port``.

    Several mappings of one host and path are one route with several destinations. On Istio
    (cf-for-k8s) they may carry ``weight``s: all or none, summing to 100, as Cloud Controller's
    Route resource requires; without weights the RouteController splits 100/n.
    """

    host: str = Field(min_length=1)
    app: str
    port: Port = 8080
    path: str = ""
    weight: int | None = Field(default=None, ge=1, le=100, description="Istio only.")
    at_s: float = Field(
        default=0.0, ge=0, description="When the route is mapped; it takes effect after "
        "routers.route_propagation_delay_s.")


class BackendClientCert(Strict):
    """gorouter's ``router.backends.cert_chain``: presented when the sidecar requires mTLS."""

    ca: str = Field(description="Name of the CA that signed the router's client certificate.")
    san: str = Field(default="gorouter.service.cf.internal")


class BackendTLS(Strict):
    enabled: bool = True
    trusted_ca: str = Field(
        default="instance-identity", description="CA the router trusts for backend certificates."
    )
    client_cert: BackendClientCert | None = None
    cipher_suites: list[str] = Field(
        default_factory=lambda: ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"],
        description="TLS 1.2 suites the router offers (OpenSSL names); TLS 1.3 ignores them.",
    )
    max_tls_version: Literal["TLSv1.2", "TLSv1.3"] = Field(
        default="TLSv1.3",
        description="Highest version the router offers backends. gorouter sets none, so Go's "
        "default (TLS 1.3) applies; TLSv1.2 models an older router, and is what makes "
        "`cipher_suites` matter.",
    )
    max_conns: int = Field(
        default=500, ge=0, description="`router.backends.max_conns`: requests one router has "
        "in progress to one endpoint at most; an endpoint at it is skipped, and a route whose "
        "endpoints are all at it answers 503 (Connection Limit Reached). 0: no limit. gorouter's "
        "(Diego); on istio and bosh an Envoy dials the instances, with no such cap.")


class Routers(Strict):
    count: int = Field(default=2, ge=1, le=1000)
    max_attempts: int = Field(default=3, ge=1, le=100)
    backends: BackendTLS = Field(default_factory=BackendTLS)
    keep_alive_to_backends: bool = True
    max_idle_conns_per_backend: int = Field(default=100, ge=0)
    route_propagation_delay_s: float = Field(
        default=1.0, ge=0, description="Time for a control-plane change (a route mapped, an "
        "instance started or stopped) to reach every router: on cf-for-k8s, Route -> "
        "RouteController -> VirtualService -> istiod -> the ingress gateway's Envoy."
    )
    balancing: Literal["round-robin", "least-connection"] = "round-robin"
    cores: int = Field(default=2, ge=1, le=1024, description="CPU cores of one router VM: "
                       "requests and backend handshakes queue for them.")
    cpu_per_request_us: float = Field(
        default=150.0, ge=0, description="Router CPU one proxied request costs: an estimate "
        "(about 6,500 requests/s per core), not measured here, since gorouter cannot run; set "
        "it from your routers' CPU over their request rate.")
    cpu_per_handshake_us: float = Field(
        default=1000.0, ge=0, description="Router CPU one backend TLS handshake costs: an "
        "estimate of the client side (ECDHE, verifying the chain), not measured here.")
    dial_timeout_s: float = Field(
        default=5.0, gt=0, description="gorouter's `endpoint_dial_timeout`: a TCP connect that "
        "takes longer fails as a dial error (retried, pruned). On istio and bosh the dialing "
        "Envoy's cluster connect_timeout applies instead (10 s, 1 s), and the TLS-handshake "
        "and request timeouts below do not exist.")
    tls_handshake_timeout_s: float = Field(
        default=10.0, gt=0, description="gorouter's `tls_handshake_timeout`: a backend handshake "
        "that takes longer fails (retried, pruned).")
    request_timeout_s: float = Field(
        default=900.0, gt=0, description="`router.request_timeout_in_seconds` (gorouter's "
        "endpoint timeout): a backend that has not answered by then gets 502, not retried.")


class Ingress(Strict):
    kind: Literal["load_balancer", "istio_gateway", "none"] = "load_balancer"
    balancing: Literal["round-robin", "random"] = "round-robin"
    max_connections: int | None = Field(
        default=None, ge=1, description="Client requests the load balancer carries at once; "
        "one beyond it is answered 503 at the load balancer. Default: no limit.")
    max_rate_per_s: float | None = Field(
        default=None, gt=0, description="Requests per second the load balancer admits (a token "
        "bucket holding one second's worth); beyond it 503. Default: no limit.")


class Client(Strict):
    name: str = "clients"
    host: str = Field(description="Route host the clients request.")
    model: Literal["open", "closed"] = "open"
    rate_per_s: float | None = Field(default=None, gt=0, description="Poisson rate (open).")
    users: int | None = Field(default=None, ge=1, description="Concurrent users (closed).")
    think_time: Latency = Field(default_factory=lambda: constant(0.0))
    keep_alive: bool = True
    start_s: float = Field(default=0.0, ge=0)
    duration_s: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(
        default=None, gt=0, description="The client gives up on a request after this long and "
        "counts it as timed out (a closed-loop user then sends its next one); the platform "
        "still serves it. Default: the client waits for every answer.")

    @model_validator(mode="after")
    def _model_fields(self) -> "Client":
        if self.model == "open" and self.rate_per_s is None:
            raise ValueError("an open-loop client needs rate_per_s")
        if self.model == "closed" and self.users is None:
            raise ValueError("a closed-loop client needs users")
        return self


class KillFault(Strict):
    """Kill one instance at a time; Diego restarts it after ``restart_after_s``."""

    kind: Literal["kill"]
    at_s: float = Field(ge=0)
    app: str
    instance: int = Field(default=0, ge=0)
    restart_after_s: float | None = Field(default=5.0, ge=0)


class StopFault(Strict):
    """Stop one instance gracefully (``cf stop``, a scale-down) or, with ``evacuate``, start
    its replacement on another cell first and then stop it (a cell's evacuation).

    The rep's credential manager, signalled, writes an identity certificate without the
    instance guid and waits ``proxy.envoy_config_reload_duration_s`` for Envoy to load it
    before the container stops (cloudfoundry/executor depot/containerstore/credmanager.go,
    ``Runner`` on signal; proxy_config_handler.go ``Close``). New router handshakes meet a
    hostname error (503 class: retried elsewhere, pruned); connections already open still
    reach the app until it stops. The route is withdrawn as the instance stops.
    """

    kind: Literal["stop"]
    at_s: float = Field(ge=0)
    app: str
    instance: int = Field(default=0, ge=0)
    evacuate: bool = False


class MoveFault(Strict):
    """Move an instance to another cell; another app's new instance takes its place there.

    The stale route keeps pointing at the old address until the routers learn of the move.
    Garden's pools hand the newcomer fresh host ports (FIFO) and silk a fresh address
    (round-robin), so the stale route meets a closed port; ``reuse_address`` asks for the
    coincidence that the newcomer gets the old address and host ports: with backend TLS the
    SAN check stops delivery (503, endpoint pruned); without it, the request reaches the
    wrong app (seed 000: route integrity).
    """

    kind: Literal["move"]
    at_s: float = Field(ge=0)
    app: str
    instance: int = Field(default=0, ge=0)
    reused_by: str = Field(description="App whose new instance takes the place on the cell.")
    reuse_address: bool = Field(default=False, description=(
        "The newcomer gets the old container IP and host ports at once (a coincidence "
        "Garden's FIFO port pool and round-robin addresses make rare)."))


class CertificateFault(Strict):
    """An instance's identity certificate expires at ``at_s``: its rotation did not happen.

    The executor replaces the credential at its rotation point (validity minus 30 min); when
    that fails, new TLS handshakes from routers meet an expired certificate (gorouter:
    ExpiredOrNotYetValidCertFailure, retried on another endpoint and pruned, status 526), while
    connections already open stay up: the certificate is only checked in the handshake.
    ``rotated_after_s`` later a fresh certificate is in place (Envoy reloads it) and the route
    registration brings the endpoint back.
    """

    kind: Literal["expire_certificate"]
    at_s: float = Field(ge=0)
    app: str
    instance: int = Field(default=0, ge=0)
    rotated_after_s: float | None = Field(default=None, ge=0)


class RouterRestartFault(Strict):
    """A router (gorouter) process restarts. For ``down_s`` the load balancer cannot connect
    to it and answers 502; requests it was serving end with 502 too, and its idle backend
    connections close. It comes back with its routes (gorouter reports healthy only after
    loading them, ``start_response_delay_interval``) and no connections to backends."""

    kind: Literal["restart_router"]
    at_s: float = Field(ge=0)
    router: int = Field(default=0, ge=0, description="Which router (0-based).")
    down_s: float = Field(default=5.0, gt=0)


class LatencySpikeFault(Strict):
    """For ``duration_s`` every crossing of one hop takes ``extra_ms`` longer (a congested
    link, a noisy neighbour); spikes on the same hop add up."""

    kind: Literal["latency_spike"]
    at_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    hop: Literal["client_to_ingress", "router_to_sidecar", "sidecar_to_app"]
    extra_ms: float = Field(gt=0, le=600_000)


class Capture(Strict):
    """The platform's capture rules. ``istio``: istio-iptables fields (Istio's own ``Config``
    names, as in a pod's ``istio-init`` arguments) over the sidecar injector's defaults."""

    istio: dict[str, str | int | bool | list[str]] = Field(
        default_factory=dict, description="platform: istio -- istio-iptables Config fields, "
        "e.g. InboundPortsExclude: \"15090,15021,15020\"; see docs/capture.md.")


class CertificateFile(Strict):
    """A PEM file of certificates the deployment uses, and the role they play."""

    file: str = Field(min_length=1, description="Path, relative to the scenario file.")
    role: Literal["router_client", "router_ca", "instance_identity_ca", "trusted_ca"]


Fault = Annotated[Union[KillFault, StopFault, MoveFault, CertificateFault, RouterRestartFault,
                        LatencySpikeFault], Field(discriminator="kind")]


class Scenario(Strict):
    """A deployment, the traffic it receives and the faults it suffers, with a seed."""

    name: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
    description: str = ""
    platform: Literal["diego", "istio", "bosh"] = "diego"
    bosh_manifest: str | None = Field(
        default=None, description="platform: bosh -- a BOSH manifest (path relative to the "
        "scenario) whose jobs' expose_ports become the apps (`<job>-<group>`, instances, "
        "ports) and routes (`<job>.<group>.<deployment>.boshy`) the Pilot adapter serves; "
        "apps listed here with the same name add their other fields (service time, memory).")
    seed: int = 0
    duration_s: float = Field(default=10.0, gt=0, le=86_400)
    time_bin_s: float = Field(default=1.0, gt=0, description="Width of report time-series bins.")
    cells: Cells
    proxy: Proxy = Field(default_factory=Proxy)
    apps: list[App] = Field(min_length=1)
    routes: list[Route] = Field(default_factory=list)
    routers: Routers = Field(default_factory=Routers)
    ingress: Ingress = Field(default_factory=Ingress)
    clients: list[Client] = Field(default_factory=list)
    latency: Latencies = Field(default_factory=Latencies)
    faults: list[Fault] = Field(default_factory=list)
    capture: Capture = Field(default_factory=lambda: Capture())
    certificates: list[CertificateFile] = Field(
        default_factory=list, description="PEM files the deployment uses, for `simnet analyze` "
        "to check their validity against the run.")
    starts_at: Annotated[str | datetime, AfterValidator(_iso_time)] | None = Field(
        default=None, description="The wall-clock moment t=0 stands for (ISO 8601, e.g. "
        "2026-12-01T09:00:00Z); `simnet analyze` checks certificates against it, or against "
        "the time it runs when not given.")
    sweep: Sweep | None = Field(default=None, description="Variants to run with `simnet sweep`.")

    def app(self, name: str) -> App:
        return next(a for a in self.apps if a.name == name)
