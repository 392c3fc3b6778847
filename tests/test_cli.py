"""The first command: one network trained in this process, and one-line errors for bad input."""

import pytest

from pipeline.cli import main


def test_train_prints_one_line_per_epoch(capsys):
    code = main(["train", "--group", "trans1d", "--mode", "nom", "--epochs", "2", "--n-samples", "32",
                 "--channels", "2", "--set", "n=6", "--lr", "0.1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    epochs = [line for line in lines if line.startswith("epoch")]
    assert len(epochs) == 3  # the start and two epochs
    assert all("dist_E total=" in line and "A0=" in line and "travelled" in line for line in epochs)


@pytest.mark.parametrize("argv,message", [
    (["--group", "mirror"], "unknown group 'mirror'; accepted: rot, trans, trans1d, rototrans"),
    (["--mode", "both"], "unknown mode 'both'; accepted: equi, aug, nom"),
    (["--augment", "sampled:x"], "unknown augment 'sampled:x'; accepted: orbit, sampled:P"),
    (["--dtype", "float16"], "unknown dtype 'float16' (did you mean 'float64'?); accepted: float32, float64"),
    (["--experiment", "cnn", "--variant", "diag"], "unknown variant 'diag'; accepted: cross, skew, nonunitary"),
    (["--experiment", "mlp"], "unknown experiment 'mlp'; accepted: groups, cnn"),
    (["--set", "colour=red"], "unknown setting 'colour' for groups; accepted:"),
    (["--set", "epochs=many"], "bad value 'many' for epochs: expected int"),
    (["--set", "novalue"], "bad override 'novalue': expected key=value"),
    (["--experiment", "cnn", "--set", "cnn_channels=3,4"], "cnn_channels must be three positive integers"),
])
def test_bad_values_fail_with_one_line_naming_the_accepted_ones(capsys, argv, message):
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
