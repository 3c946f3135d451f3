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
    ("seeds = [0, 1\n", "not valid TOML: Unclosed array.*close every"),  # tomllib names no line: none promised
    ("latent_dim = ", "not valid TOML: Invalid value.*fix the file's last line"),
    ("latentdim = 3\n", "unknown key.*latentdim"),
    ('latent_dim = "3"\n', r"latent_dim in study file \S+\.toml must be an integer, e\.g\. latent_dim = 2"),
    ("seeds = [0, 0.5]\n", r"seeds in study file \S+\.toml must be a list of integers, e\.g\. seeds = \[0, 1\]"),
    ("seeds = [0, -1]\n", "--seeds are non-negative integers, got -1"),
    ('model = "mine.py:model"\nlikelihood = "bernoulli"\n', "your program mine.py:model states its own: drop"),
    ("figures = 1\n", "figures in study file .* must be true or false, e.g. figures = true"),
    ("steps = -5\n", "--steps must be at least 0"),
    ('gradient = "dreg"\n', "use --objective iwae with dreg"),
    ('objective = "iwae"\ngradient = "stl"\n', "use --gradient dreg with iwae"),
])
def test_bad_study_files_are_named(tmp_path, text, message):
    with pytest.raises(UsageError, match=message):
        resolve({}, write(tmp_path, text))


def test_a_study_file_setting_another_commands_key_is_refused_not_ignored(elbogap, tmp_path):
    """``seed = 3`` in a compare study file ran seeds 0 and 1 without a word (a tester's): compare reads ``seeds``.
    A saved config.toml, which holds every setting (the other commands' at their defaults), still reruns."""
    status, stderr = elbogap("compare", "--config", str(write(tmp_path, 'seed = 3\nguides = ["diag"]\n')),
                             "--out", str(tmp_path / "out"))
    assert status == 2 and not (tmp_path / "out").exists()
    assert "seed = 3 in study file" in stderr and "not a setting of 'elbogap compare'" in stderr
    assert "takes seeds, e.g. seeds = [3]" in stderr and len(stderr.strip().splitlines()) == 1
    status, stderr = elbogap("train", "--config", str(write(tmp_path, "simulations = 50\n")),
                             "--out", str(tmp_path / "run"))
    assert status == 2 and "simulations = 50" in stderr and "remove it (see 'elbogap train --help')" in stderr
    saved = write(tmp_path, "\n".join(f"{key} = {value!r}".replace("'", '"').replace("True", "true")
                                      .replace("False", "false") for key, value in Config().to_dict().items()
                                      if value is not None) + "\n")
    assert resolve({}, saved, command=("compare", {"seeds", "guides"})).seeds == Config().seeds


def test_missing_study_file():
    with pytest.raises(UsageError, match="does not exist"):
        read_study("no/such/study.toml")


def test_epochs_override_steps():
    config = Config(epochs=2.5, batch_size=100)
    assert config.steps_per_epoch(1000) == 10 and config.total_steps(1000) == 25
    assert Config(steps=7).total_steps(1000) == 7


def test_every_setting_is_declared_once_and_the_flags_checks_and_resume_roles_follow():
    """The CLI's flags, the study file's bounds and --resume's comparison all come from ``setting(...)``."""
    import argparse
    from dataclasses import fields

    from elbogap.cli import build_parser
    from elbogap.config import EVALUATION, RUN_CONTROL, flag

    commands = next(action for action in build_parser()._actions
                    if isinstance(action, argparse._SubParsersAction)).choices
    options = {option: action for command in ("compare", "train", "calibrate")  # each setting is some command's flag
               for action in commands[command]._actions for option in action.option_strings}
    compare = {option for action in commands["compare"]._actions for option in action.option_strings}
    assert {"--guide", "--seed", "--simulations"}.isdisjoint(compare)  # flags only other commands read
    for declared in fields(Config):
        meta = declared.metadata
        action = options[f"--{flag(declared.name)}"]
        assert action.dest == declared.name and action.help.startswith(meta["help"])
        if meta["short"]:
            assert options[meta["short"]] is action
        if meta["least"] is not None and isinstance(getattr(Config(), declared.name), int | float):
            with pytest.raises(UsageError, match=f"--{flag(declared.name)} must be at least"):
                Config(**{declared.name: meta["least"] - 1}).validate()
        assert (declared.name in EVALUATION) == (meta["role"] == "evaluation")
        assert (declared.name in RUN_CONTROL) == (meta["role"] != "result")  # a checkpoint compares the rest


def test_a_checkpoint_from_before_a_setting_existed_had_its_default():
    """--resume compares settings; one the saved configuration lacks (it predates it) counts as its default."""
    from elbogap.config import differences

    saved = {name: value for name, value in Config().to_dict().items() if name != "gradient"}
    assert differences(saved, Config().to_dict()) == []
    assert differences(saved, Config(gradient="stl").to_dict()) == ["gradient"]
