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
# # Exploring a scenario with simnet
#
# Load a bundled scenario, derive its Diego data plane, simulate it, and look at the numbers.
# The same functions `simnet run` uses (`simnet.lenses`).

# %%
from simnet.lenses import load_and_derive, deployment_facts
from simnet.scenario.load import bundled
from simnet.sim.run import simulate

scenario, deployment = load_and_derive(bundled('diego-route-integrity'))
deployment_facts(deployment)['instances'][:2]

# %%
metrics = simulate(deployment)
metrics.summary()['requests'], metrics.summary()['latency_ms']

# %% [markdown]
# Sweep one setting by hand: how does the route-propagation delay change what routers get wrong?

# %%
from simnet.model.deployment import derive

for delay in (0.0, 1.0, 5.0):
    s = scenario.model_copy(update={'routers': scenario.routers.model_copy(update={'route_propagation_delay_s': delay})})
    m = simulate(derive(s))
    print(f"delay {delay:>4} s: pruned {m.endpoints_pruned:>3}, retries {m.retries:>4}, outcomes {dict(m.outcomes)}")

# %% [markdown]
# Sidecar memory over time for each instance (the high-water rule: it never shrinks while Envoy lives).

# %%
import matplotlib.pyplot as plt
for inst in metrics.instances:
    plt.step(range(len(inst.memory_mb)), inst.memory_mb, where='post', label=f'{inst.app}/{inst.index}')
plt.xlabel(f'time bin ({scenario.time_bin_s} s)'); plt.ylabel('Envoy MB'); plt.legend();
