"""The Runtime interface: everything a step needs from the platform that runs a cell's serving stack.

Steps call these methods and never compare runtime names. An implementation is one module with one class
registered in `IMPLEMENTATIONS` (runtime/__init__.py):

- `local`: processes on this machine (GuideLLM mock servers, a router, Redis/Valkey), simulated serving;
- `kubernetes`: the cell's own stack deployed from our manifests, deleted at teardown;
- `existing`: an llm-d stack someone else installed, patched per cell and restored at teardown.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from llmd_bench.model.runtimes import simulated_runtime

if TYPE_CHECKING:
    from llmd_bench.measure.observe.sampler import Targets
    from llmd_bench.measure.served import ServedSource
    from llmd_bench.stack.context import StepContext


class Runtime:
    """One cell's serving stack on one platform. Subclasses implement the abstract methods."""

    name: ClassVar[str]

    @property
    def simulated(self) -> bool:
        """The serving layer is simulated (reports say so; results are never compared with a cluster's as real):
        a fact of the runtime, decided once in runtime/__init__.py (FACTS)."""
        return simulated_runtime(self.name)

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx

    # -- lifecycle -----------------------------------------------------------------------------------------
    def deploy(self) -> dict[str, Any]:
        """Bring the cell's stack up and ready: {"replicas": [url], "endpoint": url, "kv_backend": {...} | None}."""
        raise NotImplementedError

    def leftovers(self) -> list[str]:
        """What earlier runs left of this cell's stack (processes, objects, unrestored saved state), listed without
        touching it; deploy then stops, removes or refuses it, as the runtime does."""
        return []

    def redeploy(self) -> None:
        """A fresh stack for the next trial or level (trial_isolation: redeploy, level_isolation: restart)."""
        raise NotImplementedError

    def teardown(self) -> dict[str, Any]:
        """Stop or restore everything deploy changed and prove it; raises when something is left."""
        raise NotImplementedError

    # -- what the sweep talks to and watches -----------------------------------------------------------------
    def endpoint(self) -> str:
        """The URL the load generator sends requests to."""
        raise NotImplementedError

    def observation_targets(self) -> Targets:
        """Replica /metrics, the KV index, the EPP's metrics."""
        raise NotImplementedError

    def tokenizer_spec(self) -> str:
        """GuideLLM's --tokenizer for this cell."""
        return f"kind=hf_auto,model={self._cell_model()}"

    def guidellm_env(self) -> dict[str, str] | None:
        """The environment GuideLLM runs with (None: the step's own)."""
        return None

    def restart_router(self) -> Callable[[], None] | None:
        """How level_isolation: reset empties a router index kept in memory (None: nothing to do)."""
        return None

    def reset_refusals(self) -> list[str]:
        """Why this platform cannot show level_isolation: reset equivalent for this cell (empty: it can)."""
        return []

    # -- host recording (PCP) ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def host_recording(self) -> Iterator[dict[str, Any] | None]:
        """Record the serving hosts during the sweep (None: recorded from deploy to collect_pcp instead)."""
        yield None

    def host_archives(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(node -> {"archive", "metrics"}, the recording's record) of the serving hosts, recording stopped."""
        raise NotImplementedError

    def generator_archives(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """The load generator's host archives, or (None, status) when it shares the serving host."""
        raise NotImplementedError

    # -- what the stack is -------------------------------------------------------------------------------------
    def stack_metadata(self) -> dict[str, Any]:
        """What ran, captured after deploy and stored with the cell (shown in the report's versions section):
        {"platform": name, "simulated": bool, "replicas": int,
         "model_servers": [{"pod", "node", "image", "image_digest", "args": [...], "vllm_version"}],
         "epp": {"image", "image_digest", "config_sha256", "config"} | None,
         "nodes": {node: {"gpu_product", "gpu_count", "driver_version", "cuda_version"}},
         "unavailable": {key: reason}}.
        What a platform cannot tell is listed under `unavailable` with the reason, never guessed."""
        return {"platform": self.name, "simulated": self.simulated,
                "unavailable": {"stack": f"the {self.name} runtime records no stack metadata"}}

    # -- what the servers say they serve ----------------------------------------------------------------------
    def served_sources(self) -> list[ServedSource]:
        """Per model-server (and EPP) pod: its log since it started and its /metrics text, as the pod itself serves
        them (served.py compares them with the configuration). What cannot be collected goes in `unavailable`."""
        return []

    def epp_config_given(self) -> tuple[dict[str, Any] | None, str]:
        """(the EndpointPickerConfig this cell gave its EPP, or None when there is none, and why)."""
        return None, f"the {self.name} runtime runs no EPP"

    # -- helpers --------------------------------------------------------------------------------------------
    def _cell_model(self) -> str:
        assert self.ctx.cell is not None
        return self.ctx.cell.model
