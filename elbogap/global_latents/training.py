"""How a model with global latents trains: SVI on the whole data set (minibatches where the programs allow), its
particles drawn at once where the programs broadcast, and the ELBO checks ``--schedule converge`` reads."""

import torch

from elbogap import streams
from elbogap.global_latents.autoguides import AUTOGUIDES
from elbogap.global_latents.elbo import VectorizedModelELBO
from elbogap.global_latents.evaluation import draws_broadcast, guide_draws, plate_nesting
from elbogap.global_latents.guides import GlobalAutoGuide, GlobalProgramGuide
from elbogap.global_latents.model import GlobalLatentModel
from elbogap.inference.convergence import ConvergenceSettings, ConvergeSchedule
from elbogap.inference.train import Trainer


def batch_size(config, model: GlobalLatentModel, guide) -> int:
    """Rows per SVI step: minibatches only where the program subsamples its data plate and the guide follows it."""
    follows = isinstance(guide, GlobalProgramGuide) or (isinstance(guide, GlobalAutoGuide)
                                                        and AUTOGUIDES[guide.name].subsampling)
    if model.takes_index and (follows or not model.local_sites):
        return min(config.batch_size, model.num_data)
    return model.num_data


def global_trainer(config, model: GlobalLatentModel, guide, data, seed: int, freeze_model: bool, schedule, rule,
                   lr_decay: float, loss_scale: float) -> Trainer:
    """SVI on the whole data set (minibatches only where :func:`batch_size` allows them), rows in their order for a
    program that reads them by position, particles drawn at once where the programs broadcast (else the program
    scored by ``vmap``: :class:`~elbogap.global_latents.elbo.VectorizedModelELBO`)."""
    vectorize, nesting = particle_layout(model, guide, data.train) if config.particles > 1 else (False, 1)
    rows = batch_size(config, model, guide)
    trainer = Trainer(model, guide, data.train, rows, config.lr, config.objective, config.particles, seed,
                      freeze_model=freeze_model, lr_decay=lr_decay, jit=False, shuffle=model.takes_index,
                      schedule=schedule, convergence=rule, loss_scale=loss_scale, vectorize=vectorize,
                      max_plate_nesting=nesting)
    if config.particles > 1 and not vectorize and rows == model.num_data and config.objective == "elbo":
        plate = -(nesting + 1) if getattr(guide, "vectorizable", False) else None  # the guide alone broadcasts
        trainer.svi.loss = VectorizedModelELBO(model, config.particles, plate)  # the program scored by vmap
    return trainer


def converging_trainer(config, model: GlobalLatentModel, guide, data, seed: int, keep_start: bool = False) -> Trainer:
    """The trainer a run of ``guide`` gets (as :func:`~elbogap.factory.make_trainer` makes it), for a fit the run
    makes beside its own: until converged under ``--schedule converge`` (``keep_start``: its start is a fit, a level
    the rule keeps), else for the configured steps with the configured decay."""
    cap = config.total_steps(len(data.train))
    rule = ConvergenceSettings(tolerance=config.convergence_tol)
    schedule = (ConvergeSchedule(elbo_check(model, guide, data, config), rule, keep_start)
                if config.schedule == "converge" else None)
    lr_decay = 1.0 if schedule is not None else config.lr_decay ** (1 / max(cap, 1))
    return global_trainer(config, model, guide, data, seed, False, schedule, rule, lr_decay, len(data.train))


def particle_layout(model: GlobalLatentModel, guide, data: torch.Tensor) -> tuple[bool, int]:
    """Whether SVI's particles can be drawn at once under a plate (the guide and the program broadcast over it, as
    :func:`~elbogap.global_latents.evaluation.guide_draws` finds out by trying), and how deep the programs' plates
    nest (the particle plate goes left of them)."""
    with torch.random.fork_rng():
        return draws_broadcast(model, guide, data), plate_nesting(model, guide, data)




#: draws of q each ELBO check of ``--schedule converge`` scores: under a plate, or one guide trace each (fewer, as
#: they cost a trace each; the checks share their draws, so their differences are precise either way)
CHECK_DRAWS, CHECK_TRACES = 256, 64


def elbo_check(model, guide, data, config):
    """The ELBO of D in nats from ``CHECK_DRAWS`` draws of q (``CHECK_TRACES`` where they are drawn one trace at a
    time), the same draws at every call (the stream ``convergence_checks``), for ``--schedule converge``."""

    @torch.no_grad()
    def check() -> float:
        with torch.random.fork_rng():
            streams.seeded("convergence_checks", 0)
            count = CHECK_DRAWS if draws_broadcast(model, guide, data.train) else CHECK_TRACES
            return float(guide_draws(model, guide, data.train, count).log_w.double().mean())

    return check


