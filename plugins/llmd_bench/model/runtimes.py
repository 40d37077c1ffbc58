"""The runtime names a deployment chooses from (LLMD_BENCH_RUNTIME) and what each one means to the rest of the
package (simulated serving, in a cluster): facts of the campaign model, decided once here. Which implementation
runs a cell is runtime/'s to decide."""

from __future__ import annotations

from dataclasses import dataclass

RUNTIMES = ("local", "kubernetes")


@dataclass(frozen=True)
class RuntimeFacts:
    """What the rest of the package may know about a runtime, decided here once; nothing outside runtime/ compares
    runtime names (tests/{unit,integration}/test_layering.py)."""

    # the serving layer is simulated: reports and exports say so, its numbers are compared only with other simulated
    # runs', its GPUs are simulated, GuideLLM uses the offline tokenizer set-up made
    simulated: bool
    # the cells run in a Kubernetes cluster: steps run as pods, preflight checks the cluster first, results go
    # through object storage, the release is rendered (and refused) as a cluster would run it
    in_cluster: bool


# by runtime name (a deployment's LLMD_BENCH_RUNTIME, stored with every run) and implementation name
FACTS = {
    "local": RuntimeFacts(simulated=True, in_cluster=False),
    "kubernetes": RuntimeFacts(simulated=False, in_cluster=True),
    "existing": RuntimeFacts(simulated=False, in_cluster=True),
}
# a name no runtime has (an imported run's "imported", a CSV folder's "unknown"): neither simulated nor a cluster
UNKNOWN = RuntimeFacts(simulated=False, in_cluster=False)


def facts(name: str | None) -> RuntimeFacts:
    return FACTS.get(name or "", UNKNOWN)


def simulated_runtime(name: str | None) -> bool:
    """Whether runs of this runtime simulate the serving layer (the local runtime)."""
    return facts(name).simulated


def simulated_runtimes() -> list[str]:
    """Every runtime name whose serving is simulated (what the results store filters stored runs by)."""
    return [name for name, f in FACTS.items() if f.simulated]


def cluster_runtime(name: str | None) -> bool:
    """Whether this runtime runs cells in a Kubernetes cluster."""
    return facts(name).in_cluster
