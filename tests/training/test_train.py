import importlib.util
import json
import math
import shutil

import numpy as np
import pytest
import torch

from tiny import tiny_cfg as _cfg
from sassl.backbones import sincos_position_embedding
from sassl.eval.checkpoint import load_encoder
from sassl.learners import create_learner
from sassl.training.config import config_from_dict, learner_settings
from sassl.training.loop import pretrain


def test_config_validation_names_the_parameter():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['lerner'\]"):
        config_from_dict({"lerner": "simclr"})
    with pytest.raises(ValueError, match="parameter 'epochs': expected int"):
        config_from_dict({"epochs": "ten"})
    with pytest.raises(ValueError, match="learner: unknown 'swav'"):
        config_from_dict({"learner": "swav"})
    with pytest.raises(ValueError, match="backbone: unknown backbone 'vgg'; available: resnet18"):  # one check: check_backbone
        config_from_dict({"backbone": "vgg"})
    with pytest.raises(ValueError, match="time_budget: must be >= 0 minutes"):
        config_from_dict({"time_budget": -1})
    with pytest.raises(ValueError, match=r"weight_decay_end: must be >= 0 \(or -1"):
        config_from_dict({"weight_decay_end": -0.5})
    assert config_from_dict({"learner": "dino"}).weight_decay_end == 0.4  # DINO's row brings its schedule
    assert config_from_dict({"learner": "mocov3"}).weight_decay_end == -1.0
    with pytest.raises(ValueError, match="batch_size: must be >= 2"):
        config_from_dict({"batch_size": 1})
    with pytest.raises(ValueError, match=r"alpha: need 0 <= min <= max <= 1"):
        config_from_dict({"alpha": [0.5, 0.2]})
    assert config_from_dict({"alpha": [0, 1], "lr": 2}).lr == 2.0


def test_resume_reproduces_uninterrupted_run(tmp_path, tiny_folder, monkeypatch):
    monkeypatch.setenv("SASSL_PNG", "1")  # this run's curves.png is checked below
    full = _cfg(tmp_path, tiny_folder, name="full", style="batch", batch_size=16)
    r_full = pretrain(full, progress=False)
    # the same run stopped mid-epoch 2 (step 4 of 6), then resumed
    part = _cfg(tmp_path, tiny_folder, name="part", style="batch", batch_size=16, max_steps=4)
    pretrain(part, progress=False)
    ck = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 4
    # proof that a resume starts from the checkpoint, not from step 0 (training is deterministic, so the result
    # alone cannot tell): a copy whose checkpoint says step 5 and holds doubled conv weights trains one step,
    # and ends away from the uninterrupted run
    other = tmp_path / "other"
    shutil.copytree(tmp_path / "part", other / "part")
    forged = torch.load(other / "part" / "checkpoints" / "last.pt", weights_only=True)
    forged["step"] = 5
    forged["model"] = {k: v * 2 if k.startswith("backbone.") and v.ndim == 4 else v for k, v in forged["model"].items()}
    torch.save(forged, other / "part" / "checkpoints" / "last.pt")
    pretrain(_cfg(other, tiny_folder, name="part", style="batch", batch_size=16), resume=True, progress=False)
    forged_rows = [json.loads(l) for l in (other / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in forged_rows if "loss" in r] == [1, 2, 3, 4, 6]  # its rows kept, then one step
    # resumed with SASSL prepared one batch ahead and a persistent worker: the same result as in order, in-process
    r_part = pretrain(_cfg(tmp_path, tiny_folder, name="part", style="batch", batch_size=16, sassl_async=True,
                           num_workers=1), resume=True, progress=False)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    c = torch.load(other / "part" / "checkpoints" / "last.pt", weights_only=True)["model"]
    conv = next(k for k in a if k.startswith("backbone.") and a[k].ndim == 4)
    assert (c[conv] - a[conv]).abs().max() > 0.5 * a[conv].abs().max()  # the forged weights were trained on
    assert r_full["knn_top1"] == r_part["knn_top1"]
    rows = lambda run: [json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    losses = lambda run: [(r["step"], round(r["loss"], 5)) for r in rows(run) if "loss" in r]
    assert losses("full") == losses("part") and len(losses("full")) == 6
    assert [r["epoch"] for r in rows("part") if "epoch_seconds" in r] == [1, 2]
    assert rows("full")[0]["epoch"] == 0 and "knn_top1" in rows("full")[0]  # random-init baseline logged first
    run = tmp_path / "full"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["resolved"]["style_source_used"] == "batch" and "git_commit" in cfg["resolved"]
    assert (run / "figures" / "curves.html").is_file() and (run / "metrics.json").is_file()
    # the PNG needs plotly's kaleido and a Chrome/Chromium for it to drive; without them, say so instead of passing
    if importlib.util.find_spec("kaleido") is None:
        pytest.skip("SKIPPED LOUDLY (all else above passed): kaleido is not installed, so curves.png was not checked; "
                    "`pip install 'kaleido>=1'` and run again")
    if not (shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")):
        pytest.skip("SKIPPED LOUDLY (all else above passed): no Chrome/Chromium for kaleido, so curves.png was not "
                    "checked; `apt-get install chromium` (or `plotly_get_chrome`) and run again")
    assert (run / "figures" / "curves.png").stat().st_size > 10_000


def test_refuses_mismatched_or_existing_checkpoint(tmp_path, tiny_folder):
    pretrain(_cfg(tmp_path, tiny_folder, max_steps=1), progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(_cfg(tmp_path, tiny_folder, max_steps=1), progress=False)
    with pytest.raises(ValueError, match=r"different config.*'lr': \(2.0, 0.5\)"):
        pretrain(_cfg(tmp_path, tiny_folder, lr=0.5), resume=True, progress=False)


def test_impossible_batch_and_unknown_sources(tmp_path, tiny_folder):
    with pytest.raises(ValueError, match="batch_size: 64 is larger than"):
        pretrain(_cfg(tmp_path, tiny_folder, batch_size=64), progress=False)
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        pretrain(_cfg(tmp_path, tiny_folder, dataset="nope", name="x"), progress=False)
    with pytest.raises(FileNotFoundError, match="style source 'wikiart'"):
        pretrain(_cfg(tmp_path, tiny_folder, style="wikiart", name="y"), progress=False)


def test_cli_pretrain(tmp_path, tiny_folder, capsys):
    from sassl.cli import main

    common = ["pretrain", "--runs-dir", str(tmp_path), "--dataset", f"imagefolder:{tiny_folder}", "--image-size", "32",
              "--batch-size", "8", "--proj-hidden", "32", "--proj-dim", "16", "--num-workers", "0", "--style", "none"]
    assert main(common + ["--name", "cli", "--epochs", "1", "--max-steps", "2", "--small-images", "false"]) == 0
    out = capsys.readouterr().out
    assert "run folder:" in out and (tmp_path / "cli" / "checkpoints" / "last.pt").is_file()
    assert main(common + ["--name", "bad", "--alpha", "0.5", "0.2"]) == 2
    assert "alpha: need 0 <= min <= max <= 1" in capsys.readouterr().err
    assert main(common + ["--name", "cli", "--epochs", "1"]) == 2  # exists: needs --resume
    assert "--resume" in capsys.readouterr().err


def test_every_flag_has_a_help_line_from_its_config_field(capsys):
    """--help shows each field's own comment and default (one source: the dataclass)."""
    from sassl.cli import main
    from sassl.config import field_help
    from sassl.eval.evaluate import EvalConfig
    from sassl.training import PretrainConfig

    for cls in (PretrainConfig, EvalConfig):
        assert all(field_help(cls).values()), [k for k, v in field_help(cls).items() if not v]
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--epochs EPOCHS passes over the train split (default: 9)" in text
    assert "--alpha MIN MAX embedding blend range: z is alpha P(style) + (1 - alpha) P(content) (default: 0.1 0.3)" in text


def test_recipe_fills_defaults_and_flags_win(tmp_path):
    from sassl.recipes import RECIPES

    cfg = config_from_dict({"recipe": "imagenet-resnet50", "lr": 0.3, "dataset": "imagefolder:/x"})
    recipe = RECIPES["imagenet-resnet50"]
    assert (cfg.backbone, cfg.batch_size, cfg.proj_hidden, cfg.proj_dim, cfg.sync_bn, cfg.warmup_epochs) == \
        (recipe["backbone"], recipe["batch_size"], 4096, 256, True, 10.0)
    assert cfg.lr == 0.3 and cfg.dataset == "imagefolder:/x"  # given values win over the recipe
    assert config_from_dict({"recipe": "imagenet-resnet50", "backbone": "resnet18"}).backbone == "resnet18"
    with pytest.raises(ValueError, match="recipe: unknown 'imagenet'; available: imagenet-resnet50"):
        config_from_dict({"recipe": "imagenet"})


def test_cli_recipe_is_recorded_and_knn_can_be_off(tmp_path, tiny_folder):
    """The recipe's values land in config.json; flags override it; --knn-every 0 logs no kNN at all."""
    from sassl.cli import main

    assert main(["pretrain", "--recipe", "imagenet-resnet50", "--name", "r", "--runs-dir", str(tmp_path),
                 "--dataset", f"imagefolder:{tiny_folder}", "--backbone", "resnet18", "--image-size", "32",
                 "--batch-size", "8", "--proj-hidden", "32", "--num-workers", "0", "--style", "none",
                 "--max-steps", "2", "--knn-every", "0", "--device", "cpu"]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["recipe"] == "imagenet-resnet50" and saved["backbone"] == "resnet18" and saved["batch_size"] == 8
    assert (saved["proj_dim"], saved["lr"], saved["weight_decay"], saved["ema"]) == (256, 0.2, 1.5e-6, 0.996)
    assert saved["resolved"]["knn_monitor"] is None
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and not any("knn_top1" in r for r in rows)


def test_accumulated_micro_batches_equal_one_batch():
    """BYOL (no negatives) with BN frozen: 4 micro-batches of 2 give the same step as one batch of 8."""
    from sassl.learners import create_learner
    from sassl.optim import make_optimizer
    from sassl.training.step import train_step
    from sassl.views import Prepared

    def frozen_byol():
        torch.manual_seed(0)
        model = create_learner("byol", "resnet18", small_images=True, proj_hidden=32, proj_dim=16, pred_hidden=32)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        return model

    class IdentityViews:
        def finish(self, prep):
            return prep.crop1, prep.crop2, None

        def target_view(self, prep):
            return None

    torch.manual_seed(1)
    c1, c2 = torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32)
    after = []
    for n in (1, 4):
        model = frozen_byol()
        opt = make_optimizer(model, "sgd", 0.1, 1e-4)
        batch = [Prepared(a, b, None, None) for a, b in zip(c1.chunk(n), c2.chunk(n))]
        loss, _ = train_step(model, IdentityViews(), opt, batch, 0.1, 0.9)
        after.append((loss, {k: v.clone() for k, v in model.state_dict().items()}))
    torch.testing.assert_close(after[0][0], after[1][0], rtol=1e-5, atol=1e-6)
    for k, v in after[0][1].items():
        torch.testing.assert_close(after[1][1][k], v, rtol=1e-4, atol=1e-6, msg=k)
    with pytest.raises(ValueError, match=r"batch_size: 8 does not split into 1 processes x 3 micro-batches"):
        config_from_dict({"batch_size": 8, "accumulate": 3})


def test_grad_scaler_step_equals_plain_step():
    """The float16 path's GradScaler (GPUs without bfloat16), run in fp32 on the CPU: its scale is a power of
    two, so scaling the loss and unscaling the gradients before LARS gives the plain step."""
    from sassl.learners import create_learner
    from sassl.optim import make_optimizer
    from sassl.training.step import prepare_batch, train_step
    from sassl.views import TwoViews

    torch.manual_seed(2)
    c1, c2 = torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32)
    after = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)):
        torch.manual_seed(0)
        model = create_learner("mocov2", "resnet18", small_images=True, proj_hidden=32, proj_dim=16, pred_hidden=32)
        opt = make_optimizer(model, "lars", 0.5, 1e-6)
        views = TwoViews()
        batch = prepare_batch(views, c1, c2, torch.Generator().manual_seed(1))
        train_step(model, views, opt, batch, 0.5, 0.99, scaler=scaler)
        after.append({k: v.clone() for k, v in model.state_dict().items()})
    assert scaler.get_scale() == 2.0 ** 12  # finite gradients: no step skipped, no back-off
    for k, v in after[0].items():
        torch.testing.assert_close(after[1][k], v, rtol=1e-5, atol=1e-7, msg=k)


def test_compiled_step_equals_eager(tmp_path, tiny_folder, monkeypatch):
    """--compile: two steps through torch.compile give the eager run's weights, with no recompilation from
    step to step (the target's momentum stays out of the graph). The backend is dynamo's eager one: the same
    graph capture and guards (where the per-step recompilation happened), without code generation; aot_eager
    (AOTAutograd's backward tracing too) passed this test in 32 s, and inductor took 4 min 20 s for two steps
    of this tiny run on the 2-core AVX2 machine, too long for the suite."""
    import functools

    import torch._dynamo

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    kw = dict(max_steps=2, knn_every=0, learner="byol")
    # NOTE: dynamo's own patch, not monkeypatch: monkeypatch's undo deletes the entry from torch's config
    # module, and every later torch.compile in the process then fails ("error_on_recompile does not exist")
    with torch._dynamo.config.patch(error_on_recompile=True):
        pretrain(_cfg(tmp_path, tiny_folder, name="compiled", compile=True, **kw), progress=False)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    pretrain(_cfg(tmp_path, tiny_folder, name="eager", **kw), progress=False)
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True)["model"] for n in ("compiled", "eager"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_device_decode_trains_like_the_fast_path(tmp_path, jpeg_folder):
    """--decode device end to end on the CPU (JPEG bytes from a worker, decoded and cropped in the training
    process): the same steps as the fast path, up to the resize kernels' rounding (crops within one grey level,
    tests/data/test_loader.py, which a random-init network at batch 8 turns into ~2% of the loss)."""
    kw = dict(dataset=f"imagefolder:{jpeg_folder}", max_steps=2, knn_every=0, num_workers=1, image_size=48)
    losses = {}
    for decode in ("device", "fast"):
        pretrain(_cfg(tmp_path, None, name=decode, decode=decode, **kw), progress=False)
        rows = [json.loads(x) for x in (tmp_path / decode / "metrics.jsonl").read_text().splitlines()]
        losses[decode] = [r["loss"] for r in rows if "loss" in r]
    assert len(losses["device"]) == 2
    assert losses["device"] == pytest.approx(losses["fast"], rel=5e-2)
    with pytest.raises(ValueError, match="decode: expected one of fast, device, full"):
        config_from_dict({"decode": "gpu"})


def test_learner_defaults_sit_under_recipes_and_given_values():
    """Each learner brings its paper's heads, momentum, temperature and views (sassl.learners.LEARNERS);
    a recipe sits above them and given values above both; config.json records the resolved values."""
    from sassl.learners import LEARNERS

    for name, spec in LEARNERS.items():
        cfg = config_from_dict({"learner": name})
        assert {k: getattr(cfg, k) for k in spec.run} == spec.run, name
    assert config_from_dict({"learner": "byol", "proj_hidden": 512}).proj_hidden == 512
    vit = config_from_dict({"recipe": "imagenet-vit-b-mocov3"})
    assert (vit.learner, vit.backbone, vit.optimizer, vit.lr, vit.weight_decay, vit.warmup_epochs, vit.embed_size) == \
        ("mocov3", "vit_b_16", "adamw", 1.5e-4, 0.1, 40.0, 256)
    assert config_from_dict({"recipe": "imagenet-resnet50x4"}).backbone == "resnet50x4"
    with pytest.raises(ValueError, match="sassl_towers: simclr has one tower"):
        config_from_dict({"learner": "simclr", "sassl_towers": "online"})
    with pytest.raises(ValueError, match="embed_size: must be 0"):
        config_from_dict({"embed_size": 16})
    with pytest.raises(ValueError, match="image_size: 60 is not a multiple of the ViT patch size 16"):
        config_from_dict({"learner": "mocov3", "backbone": "vit_tiny", "image_size": 60})
    with pytest.raises(ValueError, match="small_images: vit_s_16 has no small-image stem"):
        config_from_dict({"backbone": "vit_s_16", "small_images": True})


def test_style_codes_embedded_at_one_size(tmp_path):
    """embed_size 0 follows the crop size: the bank's styles and the contents are embedded at image_size; a given
    embed_size sets both (the bank is built at it)."""
    from sassl.training.config import style_op

    for given, size in ((0, 48), (96, 96)):
        choice = style_op(config_from_dict({"style": "paintings", "image_size": 48, "embed_size": given}),
                          torch.device("cpu"), progress=False)
        assert choice.op.embed_size == size and choice.bank.meta["image_size"] == size


def test_vit_mocov3_run_and_strict_encoder_load(tmp_path, tiny_folder):
    """MoCo v3 with the tiny ViT through `pretrain` (AdamW, SASSL in-batch on the online tower only): a 3-layer
    projector ending in an affine-free BN; the patch projection stays at its random init while the rest of the
    backbone trains; the encoder loads strictly for evaluation and embeds images of another size."""
    cfg = _cfg(tmp_path, tiny_folder, name="vit", learner="mocov3", backbone="vit_tiny", style="batch",
               sassl_towers="online", epochs=1, max_steps=2, knn_every=0)
    assert cfg.optimizer == "adamw" and cfg.views == "mocov3"
    pretrain(cfg, progress=False)
    state = torch.load(tmp_path / "vit" / "checkpoints" / "last.pt", weights_only=True)["model"]
    torch.manual_seed(cfg.seed)  # the run's init
    fresh = create_learner("mocov3", "vit_tiny", False, image_size=32, **learner_settings(cfg))
    init = fresh.state_dict()
    assert sum(isinstance(m, torch.nn.Linear) for m in fresh.projector) == 3
    assert "projector.7.running_mean" in state and "projector.7.weight" not in state  # affine-free last BN
    assert torch.equal(state["backbone.conv_proj.weight"], init["backbone.conv_proj.weight"])
    assert torch.equal(state["backbone.encoder.pos_embedding"], sincos_position_embedding(2, 2, 192))  # not trained
    assert not torch.equal(state["backbone.encoder.layers.encoder_layer_0.mlp.0.weight"],
                           init["backbone.encoder.layers.encoder_layer_0.mlp.0.weight"])
    net, info = load_encoder("vit", runs_dir=str(tmp_path))
    assert info["backbone"] == "vit_tiny" and info["dim"] == 192
    assert all(torch.equal(v, state["backbone." + k]) for k, v in net.state_dict().items())
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 192)


def test_epochs_within_a_time_budget():
    from sassl.training.schedule import epochs_within

    # 16 min; epoch 1's steps end at 160 s; 125 s an epoch, 15 s a kNN pass (epochs 3, 6 and the last)
    assert epochs_within(960, 160, 125, 15, 1, 9, 3) == 7  # 160 + 6 * 125 + 3 * 15 = 955 s; 8 epochs: 1080 s
    assert epochs_within(1080, 160, 125, 15, 1, 9, 3) == 8
    assert epochs_within(1e9, 160, 125, 15, 1, 9, 3) == 9  # never more than asked for
    assert epochs_within(100, 160, 125, 15, 1, 9, 3) == 1  # over budget already: the epoch done is the last
    assert epochs_within(300, 160, 125, 15, 1, 9, 0) == 2  # no monitor: 160 + 125 = 285 s


def test_time_budget_ends_the_schedule_with_the_epochs_kept(tmp_path, tiny_folder, monkeypatch):
    import sassl.training.schedule

    rows = lambda run: [json.loads(l) for l in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    cfg = _cfg(tmp_path, tiny_folder, name="budget", epochs=3, time_budget=0.001)  # 60 ms: only epoch 1 fits
    result = pretrain(cfg, progress=False)
    assert [r["epochs_in_budget"] for r in rows("budget") if "epochs_in_budget" in r] == [1]
    assert result["epoch"] == 1 and result["step"] == 6 and "knn_top1" in result  # the last epoch has its kNN pass
    ck = torch.load(tmp_path / "budget" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["epochs"] == 1 and ck["step"] == 6
    assert pretrain(cfg, resume=True, progress=False) == result  # resumed: the choice holds, nothing more to train
    # 3 of 4 epochs kept after epoch 1: epoch 2's momentum schedule ends at step 18; behind the pace after
    # epoch 2, the run keeps 2 and ends there
    choices = iter([3, 2])
    monkeypatch.setattr(sassl.training.schedule, "epochs_within", lambda *a: next(choices))
    pretrain(_cfg(tmp_path, tiny_folder, name="cut", epochs=4, time_budget=5), progress=False)
    steps = [r for r in rows("cut") if "loss" in r]
    # the schedule ends with the 18 steps kept (BYOL's formula, written out), not the 24 first planned
    want = [1 - (1 - cfg.ema) * (math.cos(math.pi * s / 18) + 1) / 2 for s in range(6, 12)]
    assert [r["momentum"] for r in steps[6:]] == pytest.approx(want, abs=1e-12)
    assert [(r["epoch"], r.get("epochs_in_budget")) for r in rows("cut") if "epoch_seconds" in r] == [(1, 3), (2, 2)]


def test_bench_train_runs_the_real_step_of_any_backbone():
    """`python -m sassl.bench train --backbone ...` at toy size: MoCo v3 with the tiny ViT through the trainer's
    own step, each mode timed, the peak memory read; the table names the backbone."""
    from sassl.bench.train import bench_train, format_train_table

    rows = bench_train(batch=4, size=32, repeats=1, style="paintings", learners=("mocov3",), reference=False,
                       backbone="vit_tiny")
    (row,) = rows
    assert row["backbone"] == "vit_tiny" and row["learner"] == "mocov3"
    assert all(row[f"{k}_img_s"] > 0 for k in ("off", "sync", "async", "bf16", "sync_bf16"))
    assert 0.1 < row["peak_mem_gb"] < 24
    # bf16/fp32 is the per-round ratio (one round here: the rates' ratio); GFLOP/s is the traced FLOPs x rate
    assert row["bf16_vs_fp32"] == pytest.approx(row["bf16_img_s"] / row["off_img_s"])
    assert row["fp32_gflops"] == pytest.approx(row["gflop_per_image"] * row["off_img_s"]) and row["gflop_per_image"] > 0
    table = format_train_table(rows)
    assert "| mocov3 | vit_tiny | 4 | 32 |" in table and "mocov3: bf16/fp32" in table


def test_bench_train_dino_row_takes_its_local_crops_and_its_own_optimiser(monkeypatch):
    """`python -m sassl.bench train --learners dino`: DINO's step as the trainer runs it, its 8 local crops (3/7
    of the crop side) reaching the learner in every timed step, with AdamW (its row's), not the bench's LARS."""
    import sassl.bench.train as bench
    from sassl.learners.dino import DINO

    local, optimisers = [], []
    real_loss, real_opt = DINO.loss, bench.make_optimizer
    monkeypatch.setattr(DINO, "loss", lambda self, x1, x2, xt, loc=(): (local.append([tuple(v.shape) for v in loc]),
                                                                        real_loss(self, x1, x2, xt, loc))[1])
    monkeypatch.setattr(bench, "make_optimizer", lambda m, name, *a: (optimisers.append(name), real_opt(m, name, *a))[1])
    (row,) = bench.bench_train(batch=4, size=32, repeats=1, style="paintings", learners=("dino",), reference=False,
                               bf16=False)
    assert local and all(shapes == [(4, 3, 16, 16)] * 8 for shapes in local)
    assert set(optimisers) == {"adamw"} and row["optimizer"] == "adamw" and row["local_crops"] == 8
    assert all(row[f"{k}_img_s"] > 0 for k in ("off", "sync", "async"))
    assert "| dino (+8 local crops) | resnet18 | 4 | 32 |" in bench.format_train_table([row])


def test_bench_train_reference_row_runs_lightlys_step_through_the_trainers_step():
    """The lightly-built MoCo v2 reference is called the way train_step calls a learner (x1, x2, momentum,
    x1_target), so the reference row is measured, and its target tower moves."""
    pytest.importorskip("lightly")
    from sassl.backbones import create_backbone
    from sassl.bench.train import LightlyMoCoReference, bench_train

    rows = bench_train(batch=4, size=32, repeats=1, style="paintings", learners=(), reference=True)
    (ref,) = rows
    assert ref["learner"] == "mocov2 (lightly blocks)" and ref["off_img_s"] > 0 and ref["ours_vs_lightly"] > 0
    torch.manual_seed(0)
    bb, dim = create_backbone("resnet18", small_images=False, image_size=32)
    model = LightlyMoCoReference(bb, dim, 64, 32)
    before = [p.clone() for p in model.backbone_momentum.parameters()]
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    loss, logs = model(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32), None, None)
    assert loss.ndim == 0 and logs["per_image"].shape == (4,)
    moved = [p for p, b in zip(model.backbone_momentum.parameters(), before) if not torch.equal(p, b)]
    assert moved  # m = 0.99 toward the online weights


def test_dino_run_sets_the_teacher_temperature_each_step_and_keeps_its_center(tmp_path, tiny_folder, monkeypatch):
    """`sassl pretrain --learner dino --local-crops 3 --sassl-crops all` trains (a finite loss each step); every
    step's local views reach the learner; the trainer gives it each step's epoch (set_epoch: the teacher
    temperature's warm-up), and the center, a buffer, is in the checkpoint."""
    from sassl.learners.dino import DINO

    seen, local, adjusted = [], [], []
    real, real_loss, real_adjust = DINO.set_epoch, DINO.loss, DINO.adjust_gradients
    monkeypatch.setattr(DINO, "adjust_gradients", lambda self: (adjusted.append(self.epoch), real_adjust(self))[1])
    monkeypatch.setattr(DINO, "set_epoch", lambda self, epoch: (seen.append(epoch), real(self, epoch))[1])
    monkeypatch.setattr(DINO, "loss", lambda self, x1, x2, xt, loc=(): (local.append([tuple(v.shape) for v in loc]),
                                                                        real_loss(self, x1, x2, xt, loc))[1])
    result = pretrain(_cfg(tmp_path, tiny_folder, learner="dino", proj_hidden=32, proj_dim=64, knn_every=0,
                           local_crops=3, sassl_crops="all", style="batch"), progress=False)
    assert seen == [0] * 6 + [1] * 6 and result["step"] == 12 and adjusted == seen  # after each step's backward
    assert local == [[(8, 3, 16, 16)] * 3] * 12  # every step's 3 local views (3/7 of 32 px -> 16) reach the learner
    state = torch.load(tmp_path / "t" / "checkpoints" / "last.pt", weights_only=True)
    assert state["model"]["center"].shape == (64,) and state["model"]["center"].abs().sum() > 0
    rows = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r)
    # DINO's weight decay, 0.04 -> 0.4: its utils.cosine_scheduler (no warm-up), one value per step, on the decayed
    # group only
    its = np.arange(12)
    dino_wd = 0.4 + 0.5 * (0.04 - 0.4) * (1 + np.cos(np.pi * its / len(its)))
    assert np.allclose([r["weight_decay"] for r in rows if "loss" in r], dino_wd, rtol=1e-12)
    groups = state["optimizer"]["param_groups"]
    assert groups[0]["weight_decay"] == pytest.approx(dino_wd[-1]) and groups[1]["weight_decay"] == 0.0
