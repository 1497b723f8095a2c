"""`netdissect lwta convert|sparsity|explain` on the command line."""

from netdissect.cli import main
from netdissect.data.imageio import write_rgb
from netdissect.data.synthetic import SyntheticConcepts

SMALL = "module:netdissect.lwta.nets:small_resnet"


def test_convert_sparsity_explain(tmp_path, capsys):
    out = tmp_path / "conv.safetensors"
    assert main(["lwta", "convert", "--model", SMALL, "--U", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Replaced 9 activation modules" in text and "layer4.act2: ReLU -> LWTA(U=2)" in text
    spec = f"lwta:{SMALL}?U=2"
    assert main(["lwta", "sparsity", "--model", spec, "--weights", str(out), "--data", "synthetic:n=3,size=32"]) == 0
    assert "0.5000" in capsys.readouterr().out
    image = tmp_path / "img.png"
    write_rgb(image, SyntheticConcepts(n=1, size=32)[0].image)
    card = tmp_path / "card.html"
    assert main(["lwta", "explain", "--model", spec, "--weights", str(out), "--image", str(image), "--layer",
                 "layer2", "--html", str(card), "--top", "3"]) == 0
    assert "16 blocks" in capsys.readouterr().out and "<table>" in card.read_text()
    assert main(["lwta", "explain", "--model", spec, "--image", str(image), "--layer", "layer9"]) == 2
    assert "layer9" in capsys.readouterr().err
