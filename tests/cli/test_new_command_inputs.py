"""Bad inputs of the newer commands found by a new-user trial: one clear error, no traceback."""

import logging

import pandas as pd
import pytest

from netdissect.cli.common import print_table
from netdissect.cli.explain import class_names_for
from netdissect.errors import ConfigError
from netdissect.models.generators import load_generator


def test_an_empty_table_prints_a_line_instead_of_failing(capsys):
    print_table(pd.DataFrame({"layer": pd.Series([], dtype=str), "share": pd.Series([], dtype=float)}))
    assert capsys.readouterr().out.strip() == "(no rows)"


def test_a_missing_class_names_file_names_the_option_and_file(tmp_path):
    with pytest.raises(ConfigError, match=r"--classes .*missing\.txt: cannot read it"):
        class_names_for(3, tmp_path / "missing.txt")


def test_a_builtin_generator_without_weights_warns(caplog):
    with caplog.at_level(logging.WARNING):
        load_generator("mnist_dcgan")
    assert "random weights" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_generator("scene_gan")  # ships its weights
    assert "random weights" not in caplog.text
