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
# # Asking a deployment questions
#
# The seeds simnet was built from keep asking the same few questions: where does a connection
# to the app really land, can anything reach the app around its Envoy, what TLS does each hop
# carry, how much memory does the sidecar need, and what does a configuration change change?
# `simnet.questions` answers them from the derived deployment, as tables
# (`.to_frame()`); `simnet.asserts` turns the answers into CI checks. See docs/analyze.md.

# %%
import pandas as pd
from simnet import questions as q

pd.set_option('display.width', 160)
pd.set_option('display.max_colwidth', 70)

# %% [markdown]
# ## Seed 000: "the port where the app listens" vs "the port where ingress connections land"
#
# The sidecar-patches prototype exposed `[8080, 10000]` and remapped the route to the proxy's
# port. Where does the router's connection to the route's port land, and what reaches app
# port 8080 without Envoy?

# %%
landing = q.capture('sidecar-patches', 'myapp', 10000)
landing

# %%
bypass = q.bypasses('sidecar-patches')
bypass.to_frame()[['source', 'app', 'port', 'path', 'needs']]

# %% [markdown]
# The unproxied mappings the seed kept on are a plain path around Envoy. Turning them off is a
# one-line change; `compare` says what it changes, and nothing else.

# %%
from simnet.questions import deployment_of

before = deployment_of('sidecar-patches').scenario
after = before.model_copy(update={'proxy': before.proxy.model_copy(update={'enable_unproxied_port_mappings': False})})
changes = q.compare(before, after)
changes.to_frame()

# %%
left_after = q.bypasses(after)
len(bypass), len(left_after)

# %% [markdown]
# ## Seed 002: how much additional memory does the sidecar need?
#
# Diego's `additional_memory_allocation_mb` is added to every container for Envoy. The seed's
# rule was 10 MB + 0.03 MB per connection; today's Envoy, as simnet calibrated it, needs more
# per connection. sidecar-buildpack allocates the seed's 16 MB:

# %%
headroom = q.memory_headroom('sidecar-buildpack')
headroom.to_frame()

# %%
from simnet.asserts import assert_memory_fits

try:
    assert_memory_fits('sidecar-buildpack')
except AssertionError as e:
    memory_failure = str(e)
print(memory_failure)

# %% [markdown]
# ## Seed 001: cf-for-k8s on Istio. What TLS does each hop carry, and is traffic captured?

# %%
tls = q.tls_path('cf-for-k8s')
tls.to_frame()

# %%
inbound = q.capture('cf-for-k8s', 'test-app-a', 8080)
outbound_as_proxy = q.capture('cf-for-k8s', 'test-app-a', 443, direction='outbound', uid=1337)
pd.DataFrame([inbound.__dict__, outbound_as_proxy.__dict__])

# %% [markdown]
# A process running as Istio's proxy uid (1337) leaves the pod uncaptured: `simnet analyze`
# reports an app doing so as SIM0004. And on Diego, where gorouter does TLS to the sidecar,
# who gets in with what:

# %%
reach = q.reachability('diego-route-integrity', source='router', target='billing:8080')
reach.to_frame()

# %% [markdown]
# ## Seed 003: BOSH with an Envoy add-on. Does a job's call to a `.boshy` name go through its VM's Envoy?

# %%
from simnet.model.capture import boshy_vips

host = 'example-httpbin.banana.sample-deployment.boshy'
vip = boshy_vips([host])[host]
boshy = q.capture('bosh-istio', 'example-httpbin-apricot', 9002, direction='outbound', dst=vip)
boshy

# %% [markdown]
# ## Rules that can never match
#
# A port listed twice in istio-iptables' exclusions gives a rule the first copy shadows:

# %%
from simnet.model.capture import istio_capture
from simnet.model.interception import INJECTED_FIELDS
from simnet.model.istio_config import IstioConfig

config = IstioConfig(**{**INJECTED_FIELDS, 'InboundPortsExclude': '15090,15021,15020,15090'})
shadowed = q.unreachable_rules(istio_capture(config).v4)
shadowed.to_frame()[['rule', 'text', 'by']]

# %% [markdown]
# ## What turning off backend TLS changes
#
# The legacy scenario is the default one with plain HTTP from gorouter to the apps:

# %%
legacy = q.compare('diego-route-integrity', 'diego-route-integrity-legacy')
legacy.to_frame()
