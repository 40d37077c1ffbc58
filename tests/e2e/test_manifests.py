"""Every cell's Kubernetes manifests: valid against the official schemas (strict), the InferencePool
against its CRD, and the configuration differences where they must be and nowhere else.

The e2e tier of this topic (DAG runs, sweeps with real GuideLLM and the other long runs);
the rest is tests/unit/test_manifests.py.
"""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest
import yaml

from llmd_bench.model import catalog, configurations
from llmd_bench.model.campaign import Cell
from llmd_bench.model.errors import CampaignError
from llmd_bench.stack import manifests
from unit.test_manifests import (
    CRD,
    K8S_VERSION,
    LATER_CONFIGS,
    by_kind,
    campaign,  # noqa: F401  (fixtures these tests request)
    container,
    epp_config,
    render,
)


@pytest.fixture(scope="module")
def pool_schema():
    if not CRD.exists():
        pytest.skip("shared/schemas is not beside this checkout")
    crd = yaml.safe_load(CRD.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


def all_cells(campaign):
    """Every model with every configuration of the catalog (not only the campaign's four)."""
    for model in campaign.model_names:
        for config in configurations.catalog():
            for backend in ("vllm", "inference-sim"):
                yield Cell(model, config), backend


def needs_own_image(config_name: str, version: str) -> bool:
    """The llm-d release's model-server image lacks the configuration's connector (LMCache, a filesystem tier)."""
    offload = configurations.catalog()[config_name].model_server.kv_offload
    contract = catalog.entry(version).contract
    return offload is not None and ((offload.connector == "LMCacheConnectorV1" and not contract.lmcache_in_image)
                                    or (offload.filesystem is not None and contract.fs_tier.kind == "none"))


def expected_refusal(definition: configurations.Configuration, version: str) -> str | None:
    """What a catalog release refuses a configuration with (None: it renders): a piece that could not be read at the
    tag, a connector the image lacks, or a CPU-less filesystem tier where the release's tier needs a CPU primary."""
    entry = catalog.entry(version)
    if manifests.unverified_refusal(entry, definition, "vllm", version, "x"):
        return rf"refused for llm-d {version}: .*contract.unverified"
    offload = definition.model_server.kv_offload
    if offload is None:
        return None
    own = definition.model_server.image is not None
    if offload.filesystem is not None:
        kind = entry.contract.fs_tier.rendered(own)
        if kind == "none":
            return rf"llm-d {version}'s model-server image has no filesystem tier"
        if kind == "TieringOffloadingSpec" and not offload.cpu:
            return rf"llm-d {version}'s filesystem tier is vLLM .*TieringOffloadingSpec, whose fs tier sits behind a CPU"
    if not own and offload.connector == "LMCacheConnectorV1" and not entry.contract.lmcache_in_image:
        return rf"llm-d {version}'s model-server image has no lmcache package"
    return None


def test_every_manifest_of_every_cell_validates_strictly(campaign, pool_schema):
    count = 0
    rwx = campaign.serving.filesystem_offload.model_copy(update={"access_mode": "ReadWriteMany"})
    for cell, backend in all_cells(campaign):
        if backend == "vllm" and needs_own_image(cell.config, campaign.serving.llmd_version):
            continue  # refused, and rendered for every version with an image of its own below
        c = campaign.model_copy(update={"serving": campaign.serving.model_copy(
            update={"backend": backend, "filesystem_offload": rwx})})
        _, docs = render(c, cell.model, cell.config, replicas=2)
        for doc in docs:
            if doc["kind"] == "InferencePool":
                jsonschema.validate(doc["spec"], pool_schema["properties"]["spec"])
                assert doc["apiVersion"] == "inference.networking.k8s.io/v1"
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            count += 1
    for doc in manifests.render_namespace("bench"):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert count >= 16 * 2 * 6


def test_configuration_differences_are_where_they_belong(campaign):
    campaign = campaign.model_copy(update={"serving": campaign.serving.model_copy(update={"llmd_version": "v0.7.0"})})
    for cell, _ in all_cells(campaign):
        _, docs = render(campaign, cell.model, cell.config)
        vllm = container(docs, "vllm")
        args = " ".join(vllm["args"])
        kinds = {d["kind"] for d in docs}
        images = " ".join(c["image"] for d in by_kind(docs, "Deployment") for c in d["spec"]["template"]["spec"]["containers"])
        definition = configurations.catalog()[cell.config]
        offload = definition.model_server.kv_offload
        assert ("OffloadingConnector" in args) == (definition.offloads and offload.connector == "OffloadingConnector"), cell
        assert ("LMCacheConnectorV1" in args) == (definition.offloads and offload.connector == "LMCacheConnectorV1"), cell
        assert ("SharedStorageOffloadingSpec" in args) == (definition.filesystem_tier is not None), cell
        assert ("MultiConnector" in args) == (definition.filesystem_tier is not None and definition.cpu_tier), cell
        assert ("redis:" in images) == (definition.store_kind == "redis"), cell
        assert ("valkey/valkey:" in images) == (definition.store_kind == "valkey"), cell
        assert any(e["name"] == "LMCACHE_REMOTE_URL" for e in vllm["env"]) == (offload is not None and offload.remote is not None)
        cfg = epp_config(docs)
        scorers = {p["type"] for p in cfg["plugins"]}
        if definition.router.prefix_scorer == "precise":
            assert "precise-prefix-cache-scorer" in scorers and "prefix-cache-scorer" not in scorers
            assert "--kv-events-config" in vllm["args"] and "--prefix-caching-hash-algo" in vllm["args"]
        else:
            assert "prefix-cache-scorer" in scorers and "precise-prefix-cache-scorer" not in scorers
            assert "--kv-events-config" not in vllm["args"]
        assert kinds == {"ConfigMap", "Deployment", "Service", "InferencePool"} | (
            {"PersistentVolumeClaim"} if definition.filesystem_tier else set())


@pytest.mark.parametrize("version", catalog.known_versions())
def test_later_studies_configurations_render_strictly_for_every_llmd_version(campaign, pool_schema, version):
    """Every catalog llm-d version: the LMCache and filesystem configurations render and validate strictly (side
    services included) where the release's image has the connector, and are refused naming the missing piece
    where it does not; with a model_server.image of their own they render there too."""
    own_image = {"model_server": {"image": "registry.internal/vllm-with-connectors:1"}}
    own = {f"{name}-own": configurations.Configuration.model_validate(
        configurations.catalog()[name].model_dump() | {"model_server": configurations.catalog()[name].model_server.model_dump()
                                                        | own_image["model_server"]}) for name in LATER_CONFIGS}
    c = campaign.model_copy(update={"configurations": own, "configs": [*campaign.configs, *LATER_CONFIGS, *own]})
    for name in [*LATER_CONFIGS, *own]:
        refusal = expected_refusal(c.configuration(name), version)
        if refusal:
            with pytest.raises(CampaignError, match=refusal):
                render(c, "Qwen/Qwen3-8B", name, llmd_version=version)
            continue
        _, docs = render(c, "Qwen/Qwen3-8B", name, llmd_version=version)
        for doc in docs:
            if doc["kind"] == "InferencePool":
                jsonschema.validate(doc["spec"], pool_schema["properties"]["spec"])
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        definition = c.configuration(name)
        kinds = [d["kind"] for d in docs]
        assert ("PersistentVolumeClaim" in kinds) == (definition.filesystem_tier is not None)
        stores = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-kv")]
        assert len(stores) == (1 if definition.store_kind else 0)
