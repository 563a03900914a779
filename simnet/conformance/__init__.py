"""The conformance suite: the model's predictions checked against real components.

Each module here is a pytest module run by ``simnet conform`` (and by simnet's own CI through
it). Every test belongs to a *feature*, a behaviour of the real system the model reproduces;
``FEATURES`` names them, by suite, as the conformance report lists them.
"""

from __future__ import annotations

import os
from pathlib import Path

# Peer test data (Istio's capture goldens): $SIMNET_PEERS, else ../shared/peers beside a checkout.
PEERS = Path(os.environ.get("SIMNET_PEERS")
             or Path(__file__).resolve().parents[3] / "shared" / "peers")

SUITES: dict[str, tuple[str, ...]] = {
    "netfilter": ("test_kernel_differential",),
    "tls": ("test_tls_differential", "test_tls_envoy", "test_tls_go"),
    "envoy": ("test_real_envoy", "test_real_envoy_scenarios"),
    "memory": ("test_memory_real",),
    "cpu": ("test_cpu_real",),
    "routes": ("test_ingress_envoy", "test_bosh_real"),
    "twin": ("test_twin_validation",),
}
# suites ``all`` leaves out: the twin suite validates one scenario the user names, minutes of
# real time, where the others check components
OPT_IN = ("twin",)

# (module, test function) -> feature; a test not listed is its module's first feature
FEATURES: dict[tuple[str, str], str] = {
    ("test_twin_validation", "test_the_simulation_agrees_with_its_emulated_twin"):
        "emulated twin: the simulation's answers",
    ("test_kernel_differential", "test_generated_rulesets_agree_with_the_kernel"):
        "iptables evaluation: every match and target",
    ("test_kernel_differential", "test_istio_generated_rules_agree_with_the_kernel"):
        "capture rules (istio-iptables)",
    ("test_kernel_differential", "test_golden_rulesets_agree_with_the_kernel_on_every_rule"):
        "capture rules: Istio goldens, rule by rule",
    ("test_kernel_differential",
     "test_a_loopback_source_natted_off_the_host_is_dropped_like_the_kernel"):
        "iptables evaluation: every match and target",
    ("test_kernel_differential",
     "test_rules_the_model_calls_unreachable_count_no_packet_in_the_kernel"):
        "unreachable rules (kernel counters)",
    ("test_kernel_differential",
     "test_a_shadowed_istio_rule_counts_no_packet_while_its_first_copy_does"):
        "unreachable rules (kernel counters)",
    ("test_tls_differential", "test_every_defect_on_each_side"): "certificate defects (OpenSSL)",
    ("test_tls_differential", "test_missing_client_certificate_alert_depends_on_the_version"):
        "mTLS: missing client certificate",
    ("test_tls_differential", "test_model_predicts_openssl"): "TLS handshakes (OpenSSL)",
    ("test_tls_differential", "test_default_cipher_lists_are_this_openssls"): "cipher suites",
    ("test_tls_envoy", "test_router_certificate_defects"): "mTLS: client certificate (Envoy)",
    ("test_tls_envoy", "test_sidecar_certificate_defects"): "TLS termination (Envoy)",
    ("test_tls_envoy", "test_verify_subject_alt_name"): "SAN check",
    ("test_tls_envoy", "test_alpn"): "ALPN",
    ("test_tls_envoy", "test_model_predicts_envoy"): "TLS handshakes (Envoy)",
    ("test_tls_go", "test_go_toolchain_is_installed"): "TLS handshakes (Go, gorouter's client)",
    ("test_tls_go", "test_model_predicts_go_against_openssl"):
        "TLS handshakes (Go, gorouter's client)",
    ("test_tls_go", "test_go_check_order"): "TLS handshakes (Go, gorouter's client)",
    ("test_tls_go", "test_go_sends_no_certificate_envoy_did_not_ask_for"):
        "mTLS: client certificate (Envoy)",
    ("test_tls_go", "test_model_predicts_go_against_envoy"): "TLS handshakes (Envoy)",
    ("test_real_envoy", "test_envoy_binary_is_installed"): "derived sidecar config",
    ("test_real_envoy", "test_bootstrap_passes_envoy_validate"): "derived sidecar config",
    ("test_real_envoy", "test_validate_reports_envoys_complaint"): "derived sidecar config",
    ("test_real_envoy", "test_validate_reads_the_certificate_files"): "derived sidecar config",
    ("test_real_envoy", "test_router_reaches_app_through_sidecar"): "TLS termination (Envoy)",
    ("test_real_envoy", "test_tls12_only_ecdhe_rsa_gcm_ciphers"): "cipher suites",
    ("test_real_envoy", "test_router_rejects_sidecar_of_another_instance"): "SAN check",
    ("test_real_envoy", "test_mtls_requires_router_certificate"): "mTLS: client certificate (Envoy)",
    ("test_real_envoy", "test_circuit_breakers_as_envoy_applies_them"): "circuit breakers",
    ("test_real_envoy", "test_process_is_stopped_and_files_removed_even_when_body_raises"):
        "process cleanup",
    ("test_real_envoy", "test_start_failure_raises_with_envoy_log_and_leaves_nothing"):
        "process cleanup",
    ("test_real_envoy_scenarios", "test_the_diego_scenarios_are_covered"):
        "derived sidecar config",
    ("test_real_envoy_scenarios", "test_bundled_scenario_bootstraps_pass_envoy_validate"):
        "derived sidecar config",
    ("test_real_envoy_scenarios", "test_a_broken_bootstrap_is_refused_by_envoy"):
        "derived sidecar config",
    ("test_real_envoy_scenarios", "test_realize_starts_an_instance_as_its_cell_would"):
        "realized instance",
    ("test_memory_real", "test_packaged_calibration_is_for_the_installed_envoy"): "memory model",
    ("test_memory_real", "test_model_predicts_the_real_envoys_private_memory"): "memory model",
    ("test_cpu_real", "test_packaged_cpu_calibration_is_for_the_installed_envoy"): "CPU model",
    ("test_cpu_real", "test_every_request_and_new_connection_went_through_envoy"): "CPU model",
    ("test_cpu_real", "test_a_new_mtls_connection_costs_more_than_a_request"): "CPU model",
    ("test_cpu_real", "test_a_fresh_measurement_is_within_a_factor_of_3_of_the_packaged_calibration"):
        "CPU model",
    ("test_ingress_envoy", "test_each_host_reaches_its_app_with_the_cf_headers"):
        "route headers",
    ("test_ingress_envoy", "test_client_cf_headers_are_replaced_not_appended"): "route headers",
    ("test_ingress_envoy", "test_longest_context_path_wins"): "route matching",
    ("test_ingress_envoy", "test_unknown_and_mesh_only_hosts_get_404"): "route matching",
    ("test_ingress_envoy", "test_a_pod_with_another_identity_is_refused"): "SAN check",
    ("test_ingress_envoy", "test_weights_are_honoured"): "weighted routes",
    ("test_bosh_real", "test_vip_connections_reach_every_instance_round_robin"):
        "BOSH VIP capture and balancing",
}


def feature_of(module: str, function: str) -> str:
    """The feature a conformance test checks (``module`` and ``function`` by their names)."""
    return FEATURES.get((module, function), f"{module.removeprefix('test_')}")


def suite_of(module: str) -> str | None:
    return next((s for s, mods in SUITES.items() if module in mods), None)
