"""Which connections reach the sidecar, decided by the capture rules the platform installs.

Nothing here assumes capture: each answer is a trace of the connection through the real rules
(``simnet.model.capture`` writes them as istio-iptables and the BOSH prototype do;
``simnet.model.packet_path`` evaluates them). So an app port Istio's rules leave alone, or a
BOSH VM without the Envoy add-on, shows up in the simulation as the platform would behave.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from simnet.model.capture import IstioConfig, bosh_vip_rules, boshy_vips, istio_capture
from simnet.model.netfilter import Ruleset, load
from simnet.model.packet import Connection, Outcome
from simnet.model.packet_path import CompiledRuleset, compile_ruleset
from simnet.scenario.schema import Scenario

# The sidecar injector's istio-iptables flags: capture every inbound port but Envoy's own
# (15090 Prometheus, 15021 health, 15020 merged metrics), and all outbound traffic.
INJECTED_FIELDS = {"InboundPortsInclude": "*", "InboundPortsExclude": "15090,15021,15020",
                   "OutboundIPRangesInclude": "*"}
ISTIO_INJECTED = IstioConfig(**INJECTED_FIELDS)
BOSH_JOB_UID = 1000  # BOSH jobs run as vcap, uid 1000 on stemcells
BOSH_PROXY_PORT = 15001
CONTAINER_APP_UID = 2000  # vcap in a cflinuxfs container (Diego, and cf-for-k8s's app images)


def istio_config(s: Scenario) -> IstioConfig:
    """The pod's istio-iptables configuration: the injector's flags, then the scenario's
    ``capture.istio`` fields (checked by the loader)."""
    if not s.capture.istio:
        return ISTIO_INJECTED
    return _istio_config(tuple((k, tuple(v) if isinstance(v, list) else v)
                               for k, v in s.capture.istio.items()))


@lru_cache(maxsize=8)
def _istio_config(fields: tuple) -> IstioConfig:
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in fields}
    return IstioConfig.from_mapping({**INJECTED_FIELDS, **given})


@dataclass(frozen=True)
class CapturedPath:
    """A connection's trace, and whether it ends at the sidecar listening on ``proxy_port``."""

    outcome: Outcome
    proxy_port: int

    @property
    def via_proxy(self) -> bool:
        o = self.outcome
        return o.verdict == "ACCEPT" and o.local and o.destination is not None \
            and o.destination[1] == self.proxy_port


@lru_cache(maxsize=64)
def compiled_rules(rules: str) -> CompiledRuleset:
    """Capture rules (iptables-restore text, empty for none) loaded and compiled, once per text."""
    return compile_ruleset(load(rules, "<capture rules>") if rules else Ruleset())


def istio_inbound(pod_ip: str, port: int, gateway_ip: str,
                  config: IstioConfig = ISTIO_INJECTED) -> CapturedPath:
    """The ingress gateway's connection to ``pod_ip:port`` through the pod's capture rules."""
    rules = compiled_rules(istio_capture(config).v4)
    conn = Connection("inbound", pod_ip, port, gateway_ip, in_if="eth0", in_addr=pod_ip,
                      local_addrs=(pod_ip,))
    return CapturedPath(rules.trace(conn), int(config.InboundCapturePort))


def bosh_vip(hosts: list[str]) -> dict[str, str]:
    """Each ``*.boshy`` route host's virtual IP, as the prototype's DNS agent hands them out."""
    return boshy_vips(sorted(set(hosts)))


def bosh_client(vm_ip: str, vip: str, port: int, envoy_addon: bool) -> CapturedPath:
    """A job's connection to a ``.boshy`` VIP through its VM's rules (none without the add-on)."""
    rules = compiled_rules(bosh_vip_rules(BOSH_PROXY_PORT) if envoy_addon else "")
    conn = Connection("outbound", vip, port, vm_ip, uid=BOSH_JOB_UID, gid=BOSH_JOB_UID,
                      out_if="eth0", local_addrs=(vm_ip,))
    return CapturedPath(rules.trace(conn), BOSH_PROXY_PORT)
