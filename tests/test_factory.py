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
