"""The twin suite: a scenario the user names (``simnet conform --suite twin --scenario S``,
default the bundled default) simulated with several seeds and emulated on this machine's real
components, after ``simnet calibrate hops`` measured what those components add; every metric
``simnet validate`` holds must agree. Needs root (namespaces, netfilter); Diego scenarios."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("kernel_netns")]

CALIBRATION_S = 4.0
REPLICATIONS = 3


def test_the_simulation_agrees_with_its_emulated_twin(request, tmp_path):
    from simnet.lenses import calibrate_hops, derive, load, scaled, validate
    from simnet.scenario.load import bundled, scenario_path

    named = request.config.getoption("simnet_scenario")
    path = scenario_path(named) if named else bundled()
    s, _ = load(path)
    if s.platform != "diego":
        pytest.fail(f"{path.name}: {s.platform} scenarios cannot be emulated yet: only diego")
    duration = request.config.getoption("simnet_twin_duration")
    s = scaled(s, duration_s=min(duration, s.duration_s) if duration else None)
    calibration = calibrate_hops(s, CALIBRATION_S)
    s = s.model_copy(update={"latency": s.latency.model_copy(update={
        "overhead": calibration.overhead()})})
    out = validate(s, derive(s), tmp_path, replications=REPLICATIONS)
    table = "\n".join(f"  {c.metric}: simulated {c.simulated:.2f} ({c.simulated_low:.2f}.."
                      f"{c.simulated_high:.2f}), emulated {c.emulated:.2f}, {c.tolerance}"
                      for c in out.checks if not c.agrees)
    assert out.agrees, f"{path.name}: the emulation disagrees with the simulation on\n{table}"
