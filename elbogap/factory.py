"""From settings to objects: the data set, model, guide and trainer a :class:`~elbogap.config.Config` describes."""

import torch

from elbogap import streams
from elbogap.config import Config
from elbogap.data import Dataset, load_data
from elbogap.device import resolve_device
from elbogap.errors import UsageError
from elbogap.global_latents.data import study_data
from elbogap.guides import ProgramGuide, build_guide
from elbogap.guides.autoguide import AutoGuideFamily
from elbogap.inference import Trainer
from elbogap.inference.convergence import ConvergenceSettings, ConvergeSchedule
from elbogap.inference.stl import stl_guide
from elbogap.inference.train import check_components
from elbogap.model import build_model
from elbogap.progress import as_progress
from elbogap.protocols import PROTOCOLS
from elbogap.user_model import (
    display_name,
    is_autoguide,
    is_user_model,
    load_user_model,
    resolve_program,
)


def guide_label(guide_name: str) -> str:
    """How a guide entry is named in results: itself, or ``stem.name`` for a program ``dir/stem.py:name``."""
    return display_name(guide_name) if is_user_model(guide_name) else guide_name.replace(":", "-")


def for_data(config: Config, data: Dataset, guide_name: str | None = None) -> Config:
    """``config`` with the settings it leaves to the kind of model (``lr``, ``steps``, ``schedule``,
    ``convergence_tol``, ``particles``: :data:`~elbogap.config.KIND_SETTINGS`) taken from that kind's protocol
    (:attr:`~elbogap.protocols.Protocol.defaults`), and to the family ``guide_name`` where it has its own
    (:attr:`~elbogap.protocols.Protocol.family_defaults`)."""
    return config.for_kind(PROTOCOLS[data.kind].defaults_for(guide_name))


def with_kind_guides(config: Config, data: Dataset) -> Config:
    """``config`` with the kind's own families (:attr:`~elbogap.protocols.Protocol.guides`) where ``--guides`` is
    left at its default, whose families model per-point latents only."""
    protocol = PROTOCOLS[data.kind]
    if protocol.guides and config.guides == Config().guides:
        return config.replace(guides=list(protocol.guides))
    return config


def load_dataset(config: Config) -> Dataset:
    """The data set a configuration names, subset and binarized as it says, on its device.

    For a user's program with global latents it is the whole data set D (``kind="global"``, see
    :func:`elbogap.global_latents.data.study_data`).
    """
    if is_user_model(config.model):
        return study_data(config).to(resolve_device(config.device))
    data = load_data(config.data, config.test_fraction, config.data_seed, config.data_dir, config.binarize,
                     config.train_size, config.test_size)
    return data.to(resolve_device(config.device))


def resolve_likelihood(config: Config, data: Dataset) -> str:
    """The configured likelihood, or Bernoulli for binary data and Gaussian otherwise."""
    binary = data.is_binary
    if config.likelihood is None:
        return "bernoulli" if binary and config.model == "vae" else "gaussian"
    if config.likelihood == "bernoulli" and not binary:
        raise UsageError(
            f"{data.name} is not binary but the likelihood is Bernoulli; "
            "use --binarize threshold|static|dynamic or --likelihood gaussian"
        )
    return config.likelihood


def build(config: Config, data: Dataset, guide_name: str):
    """A fresh model and guide for ``data`` as the configuration describes them.

    ``config.model`` and ``guide_name`` are built-in names or user programs (``file.py:name``);
    a class named as both model and guide is built once, so the pair shares one instance.
    """
    protocol = PROTOCOLS[data.kind]
    if protocol.build is not None:
        return protocol.build(config, data, guide_name)
    instances, modules, example = {}, {}, data.train[:3]
    if is_user_model(config.model):
        model = load_user_model(config.model, example, config.latent_dim, instances, modules)
    else:
        model = build_model(config.model, data.data_dim, config.latent_dim, config.hidden_dims,
                            config.activation, resolve_likelihood(config, data))
    model = model.to(resolve_device(config.device))
    return model, guide_for(config, model, len(data.train), guide_name, example, instances, modules)


def left_out_by_size(data: Dataset, model, guide_name: str) -> str | None:
    """Why a study whose ``--guides`` is left at its default leaves out ``guide_name`` on a model of this size
    (:attr:`~elbogap.protocols.Protocol.left_out_by_size`), or None where it does not."""
    rule = PROTOCOLS[data.kind].left_out_by_size
    return rule(model, guide_name) if rule is not None else None


def check_rows(config: Config, data: Dataset) -> None:
    """The model checked on every row of the data, once, before any run, where its kind asks for it
    (``Protocol.check_data``: a user's per-point program, whose first trace saw 3 rows)."""
    check = PROTOCOLS[data.kind].check_data
    if check is not None:
        check(config, data)


def guide_for(config: Config, model, num_data: int, guide_name: str, example: torch.Tensor | None = None,
              instances: dict | None = None, modules: dict | None = None):
    """A fresh guide of ``guide_name`` for ``model``, with the configuration's network settings, on its device.

    ``guide_name`` is a built-in family or a user's guide program (``file.py:name``; ``example``
    is a small batch to check it on).
    """
    if is_autoguide(guide_name):
        guide = AutoGuideFamily(guide_name.removeprefix("auto:"), model, num_data)
    elif is_user_model(guide_name):
        program, owner = resolve_program(guide_name, "guide", model.data_dim, model.latent_dim, instances, modules)
        guide = ProgramGuide(program, model, example, guide_name, owner)
    else:
        guide = build_guide(guide_name, model, num_data, config.hidden_dims, config.activation,
                            config.flow_depth, config.mixture_size, config.rank)
    return guide.to(resolve_device(config.device))


def check_gradient(config: Config, data: Dataset, guide, model=None) -> None:
    """Refuse, in one line and before any training, a ``--gradient`` (or, for a mixture, an objective) the guide's
    family or the model cannot take."""
    if getattr(guide, "components", None) and model is not None:
        check_components(model, config.objective)
    if config.gradient == "reparam":
        return
    refusal = PROTOCOLS[data.kind].gradient_refusal
    if refusal:
        raise UsageError(refusal.format(gradient=config.gradient))
    stl_guide(guide, config.gradient)


def warm_start(config: Config, data: Dataset, runs: list[tuple], seeds: list[int], run_dirs: list,
               progress=False, should_stop=lambda: None) -> list[dict | None]:
    """Start each run's guide (``runs``: its model and guide, built from its seed) where its kind of model starts
    it, if elsewhere than where it was built (:attr:`~elbogap.protocols.Protocol.warm_start`); per run, the start's
    record, or None; :class:`~elbogap.stopping.StopAsked` where ``should_stop()`` answered while it was fitted."""
    protocol = PROTOCOLS[data.kind]
    if protocol.warm_start is None:
        return [None] * len(runs)
    return protocol.warm_start(for_data(config, data), data, runs, seeds, run_dirs, as_progress(progress),
                               should_stop)


def make_trainer(config: Config, model, guide, data: Dataset, seed: int, freeze_model: bool = False,
                 rule: ConvergenceSettings | None = None, keep_start: bool = False) -> Trainer:
    """The SVI trainer a configuration describes: objective, particles, gradient estimator, learning rate and its
    schedule (with its convergence rule: ``rule``, or the defaults at ``--convergence-tol``; ``keep_start``: the
    guide starts from a fit of its own, a level the rule keeps), KL warm-up, binarization and compilation, for at
    most ``config.total_steps`` steps on the training split."""
    config = for_data(config, data)
    num_data = len(data.train)
    steps = config.total_steps(num_data)
    check_gradient(config, data, guide, model)
    protocol = PROTOCOLS[data.kind]
    rule = rule or ConvergenceSettings(tolerance=config.convergence_tol)
    schedule = (ConvergeSchedule(protocol.elbo_check(model, guide, data, config), rule, keep_start)
                if config.schedule == "converge" else None)
    lr_decay = 1.0 if schedule is not None else config.lr_decay ** (1 / max(steps, 1))
    scale = num_data if protocol.whole_data_units else 1.0  # the tolerance's units: per point, or the data set's
    if protocol.trainer is not None:
        return protocol.trainer(config, model, guide, data, seed, freeze_model, schedule, rule, lr_decay, scale)
    return Trainer(model, guide, data.train, config.batch_size, config.lr, config.objective, config.particles,
                   seed, freeze_model=freeze_model, lr_decay=lr_decay,
                   kl_warmup_steps=round(config.kl_warmup * config.steps_per_epoch(num_data)),
                   dynamic_binarize=data.dynamic, jit=config.jit, gradient=config.gradient, schedule=schedule,
                   convergence=rule, loss_scale=scale,
                   window_check=protocol.elbo_terms(model, guide, data, config) if protocol.elbo_terms else None)


def fit_family(model, config: Config, data: Dataset, family: str, seed: int):
    """A fresh guide of ``family`` fitted to a fixed ``model`` as the run's own training was (see :func:`make_trainer`).

    ``elbogap evaluate RUN_DIR --guide B --refit``: family B seen through the decoder trained with another guide.
    """
    streams.seeded("training", seed)
    config = for_data(config, data, family)
    guide = guide_for(config, model, len(data.train), family, data.train[:3])
    make_trainer(config, model, guide, data, seed, freeze_model=True).run(config.total_steps(len(data.train)))
    return guide
