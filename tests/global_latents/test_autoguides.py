"""The table of Pyro's autoguides: each entry a real autoguide, its claims consistent with one another."""

import pyro.infer.autoguide as pyro_autoguides

from elbogap.global_latents.autoguides import AUTOGUIDES, autoguide
from elbogap.protocols.global_latents import FAMILY_DEFAULTS, GUIDES


def test_every_entry_is_a_pyro_autoguide_and_containment_is_closed():
    for family in AUTOGUIDES.values():
        assert issubclass(getattr(pyro_autoguides, family.name), pyro_autoguides.AutoGuide), family.name
        for held in family.contains:
            assert held in AUTOGUIDES and not AUTOGUIDES[held].no_density
            assert set(AUTOGUIDES[held].contains) <= set(family.contains), (family.name, held)  # transitive
        if family.starts_at_mean_field:
            assert "AutoNormal" in family.contains and family.stacks  # its start is a stacked AutoNormal fit
    assert autoguide("auto:AutoNormal") is AUTOGUIDES["AutoNormal"] and autoguide("diag") is None


def test_a_study_compares_the_default_families_and_the_flows_start_from_their_own_rate():
    assert GUIDES == ("auto:AutoNormal", "auto:AutoMultivariateNormal", "auto:AutoLowRankMultivariateNormal",
                      "auto:AutoIAFNormal")
    assert FAMILY_DEFAULTS == {"auto:AutoIAFNormal": {"lr": 0.01}, "auto:AutoNormalizingFlow": {"lr": 0.01}}

