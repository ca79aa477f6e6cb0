"""make_style_op: the one reader of a style setting (keywords, bank files, folders, dataset names)."""
import pytest
import torch

from sassl.stylizer import STYLE_KEYWORDS, SASSL, StyleBank, make_style_op
from sassl.stylizer.bank import StyleBankError


def test_keywords(stylizer):
    assert STYLE_KEYWORDS == ("none", "batch", "noise", "content")
    none = make_style_op("none", None)
    assert none.op is None and none.bank is None and none.used == "none (SASSL off)"
    for kw in ("batch", "noise", "content"):
        choice = make_style_op(kw, stylizer, p=0.5, alpha=(0.2, 0.4), layers=4)
        assert isinstance(choice.op, SASSL) and choice.op.source == kw and choice.used == kw
        assert choice.op.p == 0.5 and choice.op.alpha_range == (0.2, 0.4) and choice.op.layers == 4


def test_dataset_name_and_bank_file(stylizer, tmp_path):
    choice = make_style_op("paintings", stylizer, progress=False)
    assert choice.op.source == "bank" and len(choice.bank) == len(choice.op.bank) > 20
    assert choice.used == "bundled:paintings"
    path = choice.bank.save(tmp_path / "p.pt")
    again = make_style_op(str(path), stylizer)
    torch.testing.assert_close(again.op.bank, choice.op.bank)


def test_bank_built_with_other_weights_is_refused(stylizer, tmp_path):
    path = StyleBank(torch.randn(3, 100), {"count": 3, "weights_sha256": "0" * 64}).save(tmp_path / "other.pt")
    with pytest.raises(StyleBankError, match="embedded with predictor weights 000000000000.*rebuild the bank"):
        make_style_op(str(path), stylizer)


@pytest.mark.parametrize("style, error, msg", [
    ("wikiart", FileNotFoundError, "neither a folder, an image file, nor a dataset name"),
    ("", ValueError, "style: expected one of none, batch, noise, content"),
])
def test_bad_settings_name_themselves(stylizer, style, error, msg):
    with pytest.raises(error, match=msg):
        make_style_op(style, stylizer)


def test_ranges_checked_by_the_op_with_one_message(stylizer):
    with pytest.raises(ValueError, match=r"beta: need 0 <= min <= max <= 1, got \(0.5, 0.2\)"):
        make_style_op("noise", stylizer, beta=(0.5, 0.2))
