# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Capacity planning: memory for the Envoy sidecar
#
# Diego runs an Envoy beside every app instance, inside the app's memory quota. The rep's
# `containers.proxy.additional_memory_allocation_mb` adds memory to every container so Envoy
# does not eat the app's share; the cell never overcommits for it. Seed 002 (2017) measured an
# old Envoy at 5-10 MB at start and ~30 KB per concurrent connection, never given back, and
# suggested **10 + 0.03 * N** MB for N peak router connections per instance.
#
# simnet measured today's Envoy on the real binary (`simnet memory calibrate`). This notebook
# puts the two side by side and answers the planner's questions: what to set, what it costs
# the foundation, and what happens when it is too small. Every number comes from simnet
# (`simnet.model.memory`, `simnet.planning`, the simulator); change the parameters below and
# run it again.

# %%
KIND = "mtls"  # the sidecar's listener: Diego's is "tls", or "mtls" with client certificates
PEAK_CONNECTIONS = 2000  # N: peak concurrent router connections to one instance
CELLS, CELL_MEMORY_MB = 100, 32 * 1024  # the foundation's Diego cells
INSTANCES, QUOTA_MB = 2400, 1024  # app instances and the quota each asks for

# %%
from matplotlib.figure import Figure
from IPython.display import Image

from simnet import planning
from simnet.model.memory import SEED, listener_kind, packaged_calibration
from simnet.report import figures


def show(fig: Figure) -> Image:
    """Display a figure as the PNG the report would write (same style, same bytes)."""
    return Image(figures.png_bytes(fig))


cal = packaged_calibration()
print(f"Envoy {cal.envoy_version}, measured {cal.measured_on} on {cal.machine.get('cpu')} "
      f"({cal.machine.get('arch')}, kernel {cal.machine.get('kernel')})")
print(f"seed 002: {SEED.base_mb} MB + {SEED.per_connection_kb:g} KB per connection; "
      f"each further port mapping today: {cal.per_mapping_kb:.0f} KB")

# %% [markdown]
# ## 1. Measured against modelled
#
# The private memory (`Private_Dirty`: what the container's limit charges) of a real Envoy
# holding N connections, per listener kind: dots are readings, lines the fitted model
# (base + KB per connection, held at the high-water mark). The grey band is seed 002's Envoy,
# the dotted line the seed's allocation rule.

# %%
show(figures.memory_calibration(cal))

# %%
errors = planning.fit_errors(cal)
print(f"{'kind':<6} {'base MB':>8} {'KB/conn':>8} {'kept after close':>17} {'worst fit error':>16}")
for kind, k in cal.kinds.items():
    worst = max((e for e in errors if e.kind == kind), key=lambda e: abs(e.relative_error))
    print(f"{kind:<6} {k.base_mb:>8.2f} {k.per_connection_kb:>8.2f} {k.retained_fraction:>17.0%} "
          f"{worst.relative_error:>+15.1%} (at {worst.connections:,})")

# %% [markdown]
# ## 2. The seed's rule against today's Envoy
#
# How much room the seed's 10 + 0.03 * N MB leaves over the calibrated Envoy's memory at N.
# Below zero the rule is too small: the container's limit is reached before N connections.
# Today's Envoy starts at about 14 MB, above the rule's 10, so every kind is short at low N;
# the kinds under 30 KB per connection catch up later, mTLS never does.

# %%
with figures.style():
    fig = Figure(figsize=(figures.WIDTH_IN, figures.HEIGHT_IN), layout="constrained")
    ax = fig.add_subplot()
    ns = list(range(0, 6001, 100))
    for kind in cal.kinds:
        rows = [planning.compare_rules(n, [kind], cal)[0] for n in ns]
        ax.plot(ns, [-r.seed_short_mb for r in rows], color=figures.KIND_COLOURS[kind],
                linewidth=1.5, label=kind)
    ax.axhline(0, color="#212529", linewidth=1.0)
    ax.axvline(PEAK_CONNECTIONS, color=figures.QUOTA_COLOUR, linestyle=(0, (5, 3)), linewidth=1.0)
    ax.set_title("Seed rule (10 + 0.03 N MB) minus today's Envoy memory at N")
    ax.xaxis.set_major_formatter(lambda v, _p: f"{v:,.0f}")
    ax.set_xlabel("peak concurrent connections N")
    ax.set_ylabel("MB to spare (below 0: the rule is too small)")
    ax.legend(loc="lower left", ncols=5)
show(fig)

# %%
for kind in cal.kinds:
    n = planning.seed_rule_suffices_from(cal.footprint(kind))
    print(f"{kind:<6} seed rule too small " + ("at every N" if n is None else f"below N = {n:,}"))

# %% [markdown]
# ## 3. The allocation to set for a peak of N connections
#
# `recommended_allocation_mb`: the calibrated memory at N plus a 10% margin for the model's
# error, rounded up. The seed's rule beside it; `short` is how far the rule falls below what
# Envoy takes.

# %%
rules = planning.compare_rules(PEAK_CONNECTIONS, calibration=cal)
print(f"N = {PEAK_CONNECTIONS:,} peak connections per instance")
print(f"{'kind':<6} {'Envoy MB':>9} {'recommended':>12} {'seed rule':>10} {'short':>7}")
for r in rules:
    short = f"{r.seed_short_mb:>6.1f}" if r.seed_too_small else "     -"
    print(f"{r.kind:<6} {r.predicted_mb:>9.1f} {r.recommended_mb:>12} {r.seed_rule_mb:>10} {short:>7}")
chosen = next(r for r in rules if r.kind == KIND)

# %%
with figures.style():
    fig = Figure(figsize=(figures.WIDTH_IN, figures.HEIGHT_IN), layout="constrained")
    ax = fig.add_subplot()
    x = range(len(rules))
    ax.bar([i - 0.2 for i in x], [r.recommended_mb for r in rules], width=0.4,
           color=[figures.KIND_COLOURS[r.kind] for r in rules], label="recommended (calibrated + 10%)")
    ax.bar([i + 0.2 for i in x], [r.seed_rule_mb for r in rules], width=0.4,
           color=figures.SEED_COLOUR, label="seed rule 10 + 0.03 N")
    ax.plot(list(x), [r.predicted_mb for r in rules], linestyle="none", marker="_",
            markersize=28, markeredgewidth=2, color="#212529", label="Envoy's memory at N")
    for i, r in zip(x, rules):
        ax.annotate(f"{r.recommended_mb}", (i - 0.2, r.recommended_mb), ha="center",
                    xytext=(0, 2), textcoords="offset points", fontsize=8)
        ax.annotate(f"{r.seed_rule_mb}", (i + 0.2, r.seed_rule_mb), ha="center", xytext=(0, 2),
                    textcoords="offset points", fontsize=8,
                    color=figures.ERROR_COLOUR if r.seed_too_small else "#212529")
    ax.set_xticks(list(x), [r.kind for r in rules])
    ax.set_title(f"additional_memory_allocation_mb for N = {PEAK_CONNECTIONS:,} "
                 "(red: the seed's rule is too small)")
    ax.set_ylabel("MB per container")
    ax.legend(loc="upper left", markerscale=0.5)
show(fig)

# %% [markdown]
# ## 4. What it costs the foundation
#
# Every container reserves its quota plus the additional allocation, and the cells never
# overcommit. For the foundation above, with the chosen kind and N:

# %%
options = {"none": 0, "seed rule": chosen.seed_rule_mb, "recommended": chosen.recommended_mb}
costs = {name: planning.foundation_cost(CELLS, CELL_MEMORY_MB, INSTANCES, QUOTA_MB, mb)
         for name, mb in options.items()}
print(f"{CELLS} cells of {CELL_MEMORY_MB:,} MB, {INSTANCES:,} instances of {QUOTA_MB} MB, "
      f"{KIND} sidecars at N = {PEAK_CONNECTIONS:,}")
print(f"{'allocation':<12} {'MB':>5} {'extra GB':>9} {'instances that fit':>19} {'cells needed':>13}")
for name, c in costs.items():
    print(f"{name:<12} {c.additional_mb:>5} {c.extra_gb:>9.1f} {c.fit_with:>19,} "
          f"{c.cells_needed():>13}")

# %%
with figures.style():
    fig = Figure(figsize=(figures.WIDTH_IN, figures.HEIGHT_IN), layout="constrained")
    ax = fig.add_subplot()
    extras = list(range(0, 2 * chosen.recommended_mb + 1))
    ax.step(extras, [planning.foundation_cost(CELLS, CELL_MEMORY_MB, INSTANCES, QUOTA_MB, mb).fit_with
                     for mb in extras], where="post", color=figures.PALETTE[0], linewidth=1.5,
            label="instances the cells hold")
    ax.axhline(INSTANCES, color=figures.QUOTA_COLOUR, linestyle=(0, (5, 3)), linewidth=1.1,
               label=f"instances to run ({INSTANCES:,})")
    for name, colour in (("seed rule", figures.SEED_COLOUR), ("recommended", figures.OK_COLOUR)):
        c = costs[name]
        ax.axvline(c.additional_mb, color=colour, linewidth=1.3,
                   label=f"{name}: {c.additional_mb} MB, {c.extra_gb:.0f} GB reserved")
    ax.set_title(f"Instances of {QUOTA_MB} MB that {CELLS} cells of {CELL_MEMORY_MB // 1024} GB hold")
    ax.set_xlabel("additional_memory_allocation_mb")
    ax.set_ylabel("instances")
    ax.legend(loc="upper right")
show(fig)

# %% [markdown]
# ## 5. When the allocation is too small
#
# A small foundation in the simulator: four apps with mTLS sidecars, each app using all of its
# quota (the case the allocation is for: Envoy must fit in the additional memory), under
# different loads. First a run with room to spare shows the peak N the load reaches; then the
# same traffic (same seed) at several allocations. A sidecar that passes its container's limit
# is OOM-killed: its connections fail (502), gorouter prunes the endpoint, the instance
# restarts a second later, and the route-emitter registers it again after the scenario's
# route propagation delay; until then its app may have no endpoint left (503).

# %%
from simnet.scenario.load import load_text

# Each app holds every request for ~2 s on an event loop (concurrency 2000, far above its
# load): connections pile up in the sidecars, which is what this section is about.
SCENARIO = """
name: allocation-too-small
seed: 1
duration_s: 15
cells: {count: 4, memory_mb: 8192}
proxy:
  require_and_verify_client_certificates: true
  trusted_ca_certificates: [router-ca]
apps:
  - {name: light, instances: 2, memory_mb: 512, memory_used_mb: 512, service_time: {dist: lognormal, median_ms: 2000, sigma: 0.3}, concurrency: 2000}
  - {name: medium, instances: 2, memory_mb: 512, memory_used_mb: 512, service_time: {dist: lognormal, median_ms: 2000, sigma: 0.3}, concurrency: 2000}
  - {name: busy, instances: 2, memory_mb: 512, memory_used_mb: 512, service_time: {dist: lognormal, median_ms: 2000, sigma: 0.3}, concurrency: 2000}
  - {name: busiest, instances: 2, memory_mb: 512, memory_used_mb: 512, service_time: {dist: lognormal, median_ms: 2000, sigma: 0.3}, concurrency: 2000}
routes:
  - {host: light.example.com, app: light}
  - {host: medium.example.com, app: medium}
  - {host: busy.example.com, app: busy}
  - {host: busiest.example.com, app: busiest}
routers: {count: 2, backends: {client_cert: {ca: router-ca}}}
clients:
  - {host: light.example.com, rate_per_s: 50}
  - {host: medium.example.com, rate_per_s: 150}
  - {host: busy.example.com, rate_per_s: 300}
  - {host: busiest.example.com, rate_per_s: 600}
"""
scenario, _ = load_text(SCENARIO)
roomy = planning.allocation_sweep(scenario, [500])[0]
run_n = roomy.peak_connections
run_rule = planning.compare_rules(run_n, [listener_kind(scenario.proxy)], cal)[0]
print(f"with room to spare: peak {run_n} connections, Envoy at {roomy.peak_envoy_mb:.1f} MB, "
      f"{roomy.oom_kills} OOM kills")
print(f"for N = {run_n}: seed rule {run_rule.seed_rule_mb} MB, "
      f"recommended {run_rule.recommended_mb} MB")

# %%
allocations = sorted({0, 10, 20, 25, 30, 35, run_rule.seed_rule_mb, run_rule.recommended_mb,
                      run_rule.recommended_mb + 10})
sweep = planning.allocation_sweep(scenario, allocations)
print(f"{'MB':>4} {'OOM kills':>10} {'errors':>7} {'error rate':>11} {'peak conns':>11}")
for p in sweep:
    print(f"{p.additional_mb:>4} {p.oom_kills:>10} {p.errors:>7,} {p.error_rate:>11.1%} "
          f"{p.peak_connections:>11}")

# %%
with figures.style():
    fig = Figure(figsize=(figures.WIDTH_IN, figures.HEIGHT_IN + 0.6), layout="constrained")
    kills, rate = fig.subplots(2, 1, sharex=True)
    xs = [p.additional_mb for p in sweep]
    kills.plot(xs, [p.oom_kills for p in sweep], marker="o", color=figures.ERROR_COLOUR,
               linewidth=1.4)
    rate.plot(xs, [100 * p.error_rate for p in sweep], marker="o", color=figures.ERROR_COLOUR,
              linewidth=1.4)
    for ax in (kills, rate):
        ax.axvline(run_rule.seed_rule_mb, color=figures.SEED_COLOUR, linewidth=1.3,
                   label=f"seed rule for N = {run_n}: {run_rule.seed_rule_mb} MB")
        ax.axvline(run_rule.recommended_mb, color=figures.OK_COLOUR, linewidth=1.3,
                   label=f"recommended: {run_rule.recommended_mb} MB")
    kills.set_title(f"What a too-small allocation does ({scenario.duration_s:g} s simulated, "
                    f"{sum(a.instances for a in scenario.apps)} instances, mTLS sidecars)")
    kills.set_ylabel("OOM kills")
    kills.legend(loc="upper right")
    rate.set_ylabel("error responses (%)")
    rate.set_xlabel("additional_memory_allocation_mb")
show(fig)
