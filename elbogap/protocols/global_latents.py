"""The protocol of models with global latents, judged on the whole data set (:mod:`elbogap.global_latents.protocol`)."""

from elbogap.global_latents.autoguides import AUTOGUIDES, left_out_by_size
from elbogap.global_latents.protocol import build_for, curve_point, evaluate_global, run_bdmc
from elbogap.global_latents.second_start import second_fits_at_once, second_start
from elbogap.global_latents.stacked import stacker
from elbogap.global_latents.training import elbo_check, global_trainer
from elbogap.global_latents.warm_start import warm_start
from elbogap.protocols.base import Protocol

#: the families a study of a model with global latents compares where --guides is left at its default (elbogap's own
#: families model per-point latents): Pyro's Gaussian autoguides, mean field to full rank, and a flow
GUIDES = tuple(family.spec for family in AUTOGUIDES.values() if family.default)
#: the families that start from their own learning rate (Pyro's neural-network autoguides, a fifth of the kind's)
FAMILY_DEFAULTS = {family.spec: {"lr": family.lr} for family in AUTOGUIDES.values() if family.lr is not None}

#: one intra-op thread: these programs' tensors are small, and torch's threads cost more than they save (a 3x3
#: tril took 0.5 ms on two threads against 2 us on one; see elbogap.global_latents.evidence.one_thread)
#: trained until converged (see elbogap.inference.convergence) from a learning rate large enough for any
#: posterior scale in a few hundred steps, on 32 particles a step (drawn at once where the programs broadcast):
#: a gradient with a fraction of one draw's noise settles closer to the optimum at every learning rate, and a
#: crawl along a narrow valley shows sooner (on the logistic regression and random-effects examples, 8 particles
#: stopped 0.3 nats short or were capped; benchmarks/defaults.py); the ELBO and its tolerance are the whole data
#: set's, in nats
GLOBAL = Protocol("global", evaluate=evaluate_global, curve_point=curve_point, bdmc=run_bdmc, threads=1,
                  elbo_check=elbo_check,
                  defaults={"lr": 0.05, "steps": 20000, "schedule": "converge", "convergence_tol": 0.02,
                            "particles": 32},
                  whole_data_units=True, family_defaults=FAMILY_DEFAULTS,
                  guides=GUIDES, build=build_for, trainer=global_trainer, stacker=stacker,
                  warm_start=warm_start, second_start=second_start, second_fits=second_fits_at_once,
                  left_out_by_size=lambda model, guide_name: left_out_by_size(guide_name, model.latent_dim),
                  gradient_refusal="--gradient {gradient} is for models whose latents are per data point, and this "
                                   "model has global latents; use --gradient reparam")
