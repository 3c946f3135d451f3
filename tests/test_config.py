import pytest

from elbogap.config import Config, read_study, resolve
from elbogap.errors import UsageError


def write(tmp_path, text):
    path = tmp_path / "study.toml"
    path.write_text(text)
    return path


def test_study_file_then_flags_override(tmp_path):
    study = write(tmp_path, 'guides = ["diag", "iaf"]\nlatent_dim = 3\nlr = 1\n')
    config = resolve({"lr": 0.01}, study)
    assert config.guides == ["diag", "iaf"] and config.latent_dim == 3 and config.lr == 0.01
    assert isinstance(resolve({}, study).lr, float)


@pytest.mark.parametrize(("text", "message"), [
    ("latent_dim = \n", "not valid TOML.*line 1"),
    ("latentdim = 3\n", "unknown key.*latentdim"),
    ('latent_dim = "3"\n', "latent_dim must be an integer"),
    ("seeds = [0, 0.5]\n", "seeds must be a list of integers"),
    ("figures = 1\n", "figures must be true or false"),
    ("steps = -5\n", "--steps must be at least 0"),
])
def test_bad_study_files_are_named(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        resolve({}, write(tmp_path, text))


def test_missing_study_file():
    with pytest.raises(UsageError, match="does not exist"):
        read_study("no/such/study.toml")


def test_epochs_override_steps():
    config = Config(epochs=2.5, batch_size=100)
    assert config.steps_per_epoch(1000) == 10 and config.total_steps(1000) == 25
    assert Config(steps=7).total_steps(1000) == 7
