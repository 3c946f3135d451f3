"""What a protocol is: what a run asks of its kind of study."""

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Protocol:
    """What is evaluated, on which data and with which estimators, for one kind of study.

    :param str name: the key it is registered under in :data:`elbogap.protocols.PROTOCOLS`.
    :param evaluate: ``(model, guide, data, config, seed, phases=None, progress=False, run_dir=None) ->
        metrics``, the evaluation after training (by split, or of the whole data set); ``run_dir`` is
        where the run keeps files beside its record. ``progress``, a bool or a
        :class:`~elbogap.progress.Progress`, hears of each phase and its counts.
    :param curve_point: ``(model, guide, data, config) -> metrics``, the cheap evaluation during
        training.
    :param bdmc: ``(model, data, config, seed, run_dir, progress=False) -> summary``, the BDMC
        sandwich of ``--bdmc``, also written to the run directory.
    :param threads: torch's intra-op threads while the run trains and evaluates, where the
        kind of study knows better than the caller (None: leave them).
    :param elbo_check: ``(model, guide, data, config) -> check``, where ``check()`` is the ELBO now on fixed
        draws, in the units of ``--convergence-tol``: what ``--schedule converge`` reads between its windows.
    :param elbo_terms: ``(model, guide, data, config) -> terms``, where ``terms()`` is the ELBO's terms now (per
        training row) on the fixed draws ``elbo_check`` scores: what the trend rule of ``--schedule fixed`` compares
        at its window's ends (None: the rule reads the minibatch losses).
    :param whole_data_units: whether the ELBO the convergence rules read (and ``--convergence-tol``) is the whole
        data set's, the training loss per row times N; else per point, as the loss is.
    :param defaults: the settings left to the kind of model (``lr``, ``steps``, ``schedule``,
        ``convergence_tol``), for a configuration that leaves them unset (:func:`~elbogap.factory.for_data`).
    :param family_defaults: ``{guide spec: settings}``, where a family needs other defaults than the kind's (a
        neural network's smaller learning rate); a configuration's own settings still win.
    :param guides: the families a study compares where ``--guides`` is left at its default, if not the default's.
    :param build: ``(config, data, guide_name) -> (model, guide)``, where the kind builds its own (None: elbogap's
        per-point models, families and programs, :func:`~elbogap.factory.build`).
    :param check_data: ``(config, data) -> None``, once before any run: refuses in one line data the model cannot
        score on some row (None: the kind's loading sees every row already).
    :param trainer: ``(config, model, guide, data, seed, freeze_model, schedule, rule, lr_decay, loss_scale) ->
        Trainer``, where the kind trains otherwise than on minibatches of rows with the configuration's batch size.
    :param warm_start: ``(config, data, runs, seeds, run_dirs, progress, should_stop) -> [dict | None]``, where the
        kind starts some families elsewhere than where they are built (``runs``: each run's model and guide; per run,
        the start's record, kept as the run's ``warm_start``), their plateau rule keeping that start as the level to
        beat (None: no family is; ``should_stop()``: a stop request, which leaves every run unstarted).
    :param second_start: ``(config, data, model, guide, trainer, seed, run_dir, progress, after_step) -> dict |
        None``, after a run's training: where the kind trains some families from a second start and keeps the better
        fit in ``guide`` (the record, kept as the run's ``second_start``; None: the run's fit is its own).
    :param second_fits: ``(config, data, runs, seeds, run_dirs, progress, should_stop) -> None``, after the seeds
        ``seeds`` of one family trained at once (``runs``: each run's model and guide): their second fits trained at
        once too, where each run's ``second_start`` reads them (None: no family trains twice).
    :param stacker: ``(config, data, guide_name, runs, seeds) -> Stack``, the kind's stacked training of one family's
        seeds (:class:`~elbogap.inference.stacking.NotStackable` where they cannot be); None: one run at a time.
    :param stack_from: the fewest seeds that train as a stack.
    :param gradient_refusal: the one line that refuses a ``--gradient`` other than ``reparam`` (``{gradient}``
        filled in), where the kind takes only the reparameterized gradient.
    :param left_out_by_size: ``(model, guide_name) -> why``, where a study whose ``--guides`` is left at its default
        leaves out a family the model's size prices out (None: why not; the field None: no family is).
    """

    name: str
    evaluate: Callable[..., dict]
    curve_point: Callable[..., dict]
    bdmc: Callable[..., dict]
    #: torch's intra-op threads for the run (None: as the caller set them); one where every tensor is small
    threads: int | None = None
    elbo_check: Callable[..., Callable[[], float]] | None = None
    elbo_terms: Callable[..., Callable[[], object]] | None = None
    defaults: dict = field(default_factory=dict)
    whole_data_units: bool = False
    family_defaults: dict = field(default_factory=dict)
    guides: tuple[str, ...] = ()
    build: Callable[..., tuple] | None = None
    check_data: Callable[..., None] | None = None
    trainer: Callable[..., object] | None = None
    gradient_refusal: str | None = None
    stacker: Callable[..., object] | None = None
    stack_from: int = 2
    warm_start: Callable[..., dict | None] | None = None
    second_start: Callable[..., dict | None] | None = None
    second_fits: Callable[..., None] | None = None
    left_out_by_size: Callable[..., str | None] | None = None

    def defaults_for(self, guide_name: str | None = None) -> dict:
        """The kind's defaults, with those of the family ``guide_name`` over them."""
        return {**self.defaults, **self.family_defaults.get(guide_name, {})}
