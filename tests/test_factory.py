"""Settings to objects: the trainer a configuration describes."""

from elbogap.config import Config
from elbogap.factory import build, load_dataset, make_trainer
from elbogap.inference.iwae import IWAE


def test_a_refit_family_trains_with_the_runs_own_objective_warmup_and_binarization():
    """`evaluate --guide B --refit` and training share one trainer: same objective, particles, warm-up, binarization."""
    config = Config(objective="iwae", particles=4, kl_warmup=1.0, binarize="dynamic", train_size=100, test_size=20,
                    hidden_dims=[8], steps=5)
    data = load_dataset(config)
    model, guide = build(config, data, "diag")
    trainer = make_trainer(config, model, guide, data, seed=0, freeze_model=True)
    assert isinstance(trainer.svi.loss, IWAE) and trainer.svi.loss.num_particles == 4
    assert trainer.kl_warmup_steps == config.steps_per_epoch(100) and trainer.dynamic_binarize
    assert trainer.freeze_model


def test_a_family_with_its_own_defaults_takes_them_where_the_configuration_leaves_them_unset():
    """Models with global latents: 32 particles from lr 0.05; Pyro's autoregressive flows from lr 0.01; flags win."""
    import torch

    from elbogap.data import Dataset
    from elbogap.factory import for_data

    data = Dataset("rows", torch.zeros(5, 2), torch.zeros(0, 2), kind="global")
    normal, flow = for_data(Config(), data, "auto:AutoNormal"), for_data(Config(), data, "auto:AutoIAFNormal")
    assert (normal.lr, normal.particles, normal.schedule) == (0.05, 32, "converge")
    assert (flow.lr, flow.particles) == (0.01, 32)
    assert for_data(Config(lr=0.2), data, "auto:AutoIAFNormal").lr == 0.2
    assert for_data(Config(), data).lr == 0.05  # the kind's own, as the study's record shows it
    per_point = Dataset("rows", torch.zeros(5, 2), torch.zeros(1, 2))
    assert for_data(Config(), per_point, "iaf").lr == 0.003  # a VAE's families share the kind's defaults


def test_a_model_with_global_latents_compares_pyros_autoguides_where_guides_are_left_at_their_default():
    import torch

    from elbogap.data import Dataset
    from elbogap.factory import with_kind_guides
    from elbogap.protocols.global_latents import GUIDES

    rows = Dataset("rows", torch.zeros(5, 2), torch.zeros(0, 2), kind="global")
    assert with_kind_guides(Config(), rows).guides == list(GUIDES)
    assert with_kind_guides(Config(guides=["auto:AutoNormal"]), rows).guides == ["auto:AutoNormal"]  # chosen: kept
    per_point = Dataset("rows", torch.zeros(5, 2), torch.zeros(1, 2))
    assert with_kind_guides(Config(), per_point).guides == Config().guides
