"""A user's own guide: any Pyro program ``guide(x)`` that samples the model's latent sites."""

import torch

from elbogap.errors import UsageError
from elbogap.guides.base import Guide
from elbogap.sites import latent_sites
from elbogap.user_model import call_scaled, check_guide_draws, load_params_state, params_state, trace_program


class ProgramGuide(Guide):
    r"""A guide program as the user wrote it, e.g. the ``guide`` method of a Pyro-tutorial VAE class.

    It must sample every latent site of the model (by the model's names); it may sample others
    (auxiliary variables), which then count in :math:`\log q`. elbogap knows no closed form of
    its density, so it is evaluated from traces (ELBO, IWAE and PSIS by Monte Carlo) and its
    family has no per-point optimum elbogap could find: the gap is reported whole, without the
    approximation/amortization split. A program that takes only ``x`` is scaled by
    ``num_data / len(x)`` for minibatches, like the model.

    :param program: the callable guide program.
    :param model: the (program) model it is paired with; its latent sites must all be sampled.
    :param example_x: a small batch of data, to check the program against the model.
    :param str spec: the ``file.py:name`` the program came from, for messages.
    """

    program = True
    jit_compatible = False
    density_anywhere = False

    def __init__(self, program, model, example_x: torch.Tensor, spec: str, owner=None):
        super().__init__(model.latent_dim)
        self.fn, self.spec = program, spec
        if isinstance(owner, torch.nn.Module) and owner is not getattr(model, "owner", None):
            self.owner = owner
        trace = trace_program(self.guide, example_x, spec, "guide")
        sampled = {name for name, site in trace.nodes.items() if site["type"] == "sample"}  # by name: plates too
        missing = [name for name in latent_sites(model) if name not in sampled]
        if missing:
            raise UsageError(f"the guide {spec} does not sample the model's latent site(s) {', '.join(missing)}; "
                             "a guide must sample every latent site of the model, by the same name")
        for name, shape in latent_sites(model).items():
            event = tuple(trace.nodes[name]["fn"].event_shape)
            if event != tuple(shape):
                raise UsageError(f"the guide {spec} samples {name!r} with event shape {event} per point, but the "
                                 f"model's {name!r} has {tuple(shape)}; declare its per-point dimensions with "
                                 f".to_event({len(shape)}) as the model does")
        check_guide_draws(model.model, trace, example_x, getattr(model, "spec", type(model).__name__), spec)
        self.param_names = [name for name, site in trace.nodes.items() if site["type"] == "param"]

    def optimum_start(self, x, index):
        return None  # no family elbogap could search: the gap is reported whole

    def guide(self, x, index=None, num_data=None):
        return call_scaled(self.fn, x, index, num_data)

    def distribution(self, x, index=None):
        raise UsageError(f"the guide {self.spec} is a program without a density elbogap can evaluate at any z; "
                         "this needs one of elbogap's own guides")

    def state_dict(self, *args, **kwargs):
        return params_state(self.param_names)

    def load_state_dict(self, state, strict: bool = True):
        load_params_state(state)
