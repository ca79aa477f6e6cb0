"""The tiny things several test files share: the documented study at a budget of seconds, and the config of a
training run on the tiny photo folder (conftest's tiny_folder)."""
from pathlib import Path

from sassl.training.config import PretrainConfig, config_from_dict

# the documented study (docs/studies.md), at a budget of seconds (2 steps, kNN only, no random-init baseline)
STUDY = """\
name = "tiny"
seeds = [0, 1]
primary = ["objects/knn"]

[pretrain]
learner = "mocov2"
max_steps = 2
batch_size = 8
image_size = 32
epochs = 1
num_workers = 0
knn_max_train = 400
knn_max_test = 200

[arms.baseline]
style = "none"

[arms.sassl]
style = "pbn"

[evaluate]
targets = ["objects"]
protocols = ["knn"]
seeds = [0]
max_per_split = 60
baseline = false

[[compare]]
arm = "sassl"
against = "baseline"
"""


def write_study(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def tiny_cfg(tmp_path, tiny_folder, **kw) -> PretrainConfig:
    """A run of 2 epochs at 32 px, batch 8, small heads, no SASSL, on `tiny_folder`; `kw` overrides."""
    base = dict(name="t", runs_dir=str(tmp_path), dataset=f"imagefolder:{tiny_folder}", image_size=32, batch_size=8,
                epochs=2, proj_hidden=64, proj_dim=32, num_workers=0, style="none", knn_k=5, small_images=False)
    return config_from_dict(base | kw)
