"""The analysis registry and the configuration schema describe the same options."""

from __future__ import annotations

import yaml

from effdepth.analyses import FORWARD, INTERVENTION, REGISTRY
from effdepth.config import DEFAULT_SCHEMA, load_config

# Options every analysis block takes that no job reads: which tasks and variants it runs (the workflow's
# scheduling) and, for erasure, the baseline task (an input file of the job, not a parameter).
SCHEDULING = {"tasks", "variants"}


def test_every_schema_option_is_declared_by_the_registry():
    schema = yaml.safe_load(DEFAULT_SCHEMA.read_text())["$defs"]["analyses"]["properties"]
    assert set(schema) == set(REGISTRY)
    for name, analysis in REGISTRY.items():
        declared = {
            "variant",
            *analysis.options,
            *analysis.extraction,
            *analysis.artefact_options,
            *([analysis.baseline] if analysis.baseline else []),
        }
        assert set(schema[name]["properties"]) - SCHEDULING == declared, name
        assert analysis.kind in (FORWARD, INTERVENTION)
        assert analysis.module().__name__ == f"effdepth.analyses.{name}"


def test_published_layer_skip_produces_whole_layer_skips_only():
    skip = REGISTRY["layer_skip"]
    options = {"variant": "published", "kinds": ["layer", "attention", "mlp"]}
    assert skip.kinds(options) == ("layer",)
    assert skip.kinds({**options, "variant": "correct"}) == ("layer", "attention", "mlp")
    assert REGISTRY["logit_lens"].kinds(options) == ()


def test_job_options_are_exactly_the_declared_keys():
    config = load_config("config.yaml")
    for name, options in config["analyses"].items():
        narrowed = REGISTRY[name].job_options(options)
        assert "tasks" not in narrowed and narrowed["variant"] == options["variant"], name
        assert set(narrowed) <= {"variant", *REGISTRY[name].options}, name
