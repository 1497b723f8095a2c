"""The top-level API: lazy names that stay what they are, whatever was imported first."""

from __future__ import annotations

import subprocess
import sys


def test_dissect_stays_the_function_after_the_cli_imported_the_pipeline():
    code = ("import netdissect, netdissect.cli.dissect, netdissect.pipeline, netdissect.cli; "
            "from netdissect.cli.dissect import run_demo; import inspect; "
            "print(inspect.isfunction(netdissect.dissect), netdissect.dissect.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "netdissect.pipeline"]


def test_importing_netdissect_and_its_cli_does_not_import_torch():
    code = "import sys, netdissect, netdissect.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_every_public_name_resolves():
    import netdissect

    for name in netdissect.__all__:
        assert getattr(netdissect, name) is not None, name
