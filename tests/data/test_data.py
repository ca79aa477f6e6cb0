import collections
import hashlib
import io
import json
import os
import struct
import tarfile
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import sassl.data.decode as decode
from sassl.cli import main
from sassl.data import get_dataset
from sassl.data.sources import PACKAGES, Source, extract_deb, prepare_source, source_dir
from sassl.data.formats import read_pat, read_rcc
from sassl.data.objects import CLASSES, ObjectsConfig, identity
from sassl.data.registry import imagefolder
from sassl.data.sets import prepare_set, rebuild_puzzle, set_dir
from sassl.fetch import FetchError


# ----------------------------------------------------------------------------- formats on real package files

def _pat_bytes(w, h, bpp, pixels, name=b"test"):
    header = struct.pack(">5I", 24 + len(name) + 1, 1, w, h, bpp) + b"GPAT" + name + b"\0"
    return header + pixels


@pytest.mark.parametrize("bpp", [1, 2, 3, 4])
def test_read_pat_synthetic(tmp_path, bpp):
    px = bytes([10, 200, 30, 255][:bpp]) * 6
    (tmp_path / "x.pat").write_bytes(_pat_bytes(3, 2, bpp, px))
    name, img = read_pat(tmp_path / "x.pat")
    assert name == "test" and img.size == (3, 2) and img.mode == "RGB"
    want = {1: (10, 10, 10), 2: (10, 10, 10), 3: (10, 200, 30), 4: (10, 200, 30)}[bpp]
    if bpp == 2:  # grey 10 at alpha 200 over white
        want = tuple([round(10 * 200 / 255 + 255 * 55 / 255)] * 3)
    assert all(abs(a - b) <= 1 for a, b in zip(img.getpixel((0, 0)), want))
    (tmp_path / "short.pat").write_bytes(_pat_bytes(3, 2, bpp, px[:-1]))
    with pytest.raises(ValueError, match="truncated"):
        read_pat(tmp_path / "short.pat")
    (tmp_path / "bad.pat").write_bytes(b"\0" * 40)
    with pytest.raises(ValueError, match="not a GIMP pattern"):
        read_pat(tmp_path / "bad.pat")


def test_read_pat_real_gimp_files():
    prepare_source(PACKAGES["gimp-data"])
    root = source_dir(PACKAGES["gimp-data"]) / "usr/share/gimp/2.0/patterns"
    pats = sorted(root.rglob("*.pat"))
    assert len(pats) >= 50
    for p in pats:
        name, img = read_pat(p)
        assert img.mode == "RGB" and min(img.size) >= 8 and name
    _, java = read_pat(root / "Food" / "java.pat")
    a = np.asarray(java, np.float32)
    assert java.size == (64, 64) and a.std() > 10  # a real texture, not a flat fill


def test_read_rcc_real_and_puzzle_rebuild():
    prepare_source(PACKAGES["gcompris-qt-data"])
    files = read_rcc(source_dir(PACKAGES["gcompris-qt-data"]) / "usr/share/gcompris-qt/rcc/paintings.rcc")
    prefix = "gcompris/src/activities/paintings/resource/"
    boards = [k for k in files if k.startswith(prefix + "board/")]
    assert len(boards) >= 20
    qml = files[prefix + "board/board1_0.qml"].decode()
    title, img, coverage = rebuild_puzzle(qml, files, prefix + "image/")
    # the pieces, pasted at their centres, tile the painting without holes; the board's margin is cropped
    assert "Renoir" in title and coverage > 0.99
    assert 560 < img.width <= 702 and 400 < img.height <= 515
    a = np.asarray(img, np.float32)
    assert (a.min(axis=2) > 250).mean() < 0.02  # hardly any white left


def test_read_rcc_rejects_other_files(tmp_path):
    (tmp_path / "x.rcc").write_bytes(b"nope" * 10)
    with pytest.raises(ValueError, match="not a Qt resource"):
        read_rcc(tmp_path / "x.rcc")


def _make_deb(path, files):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", data.getvalue())]
    with open(path, "wb") as f:
        f.write(b"!<arch>\n")
        for name, body in members:
            f.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode())
            f.write(body + (b"\n" if len(body) % 2 else b""))


def test_extract_deb_and_prepare_source(tmp_path):
    files = {"usr/share/x/a.jpg": b"AAA", "usr/share/x/sub/b.png": b"B", "usr/share/other/c.txt": b"C"}
    _make_deb(tmp_path / "x.deb", files)
    assert extract_deb(tmp_path / "x.deb", ("usr/share/x/*",), tmp_path / "out") == ["usr/share/x/a.jpg", "usr/share/x/sub/b.png"]
    sha = hashlib.sha256((tmp_path / "x.deb").read_bytes()).hexdigest()
    src = Source("fake", "1.0", "deb", "pool/f/fake.deb", sha, ("usr/share/x/*",), "test")
    out = prepare_source(src, root=tmp_path / "cache", package_file=tmp_path / "x.deb")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == 2 and manifest["sha256"] == sha
    assert prepare_source(src, root=tmp_path / "cache") == out  # prepared: no package file needed, no-op
    (out / "manifest.json").unlink()  # a half-finished prepare is redone
    (out / "leftover").write_text("x")
    out2 = prepare_source(src, root=tmp_path / "cache", package_file=tmp_path / "x.deb")
    assert (out2 / "manifest.json").is_file() and not (out2 / "leftover").exists()
    bad = Source("fake2", "1.0", "deb", "pool/f/fake.deb", "0" * 64, ("usr/share/x/*",), "test")
    with pytest.raises(FetchError, match="does not match the pinned"):
        prepare_source(bad, root=tmp_path / "cache", package_file=tmp_path / "x.deb")
    (tmp_path / "no.deb").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a Debian package"):
        extract_deb(tmp_path / "no.deb", ("x",), tmp_path / "o2")


# ----------------------------------------------------------------------------- bundled sets and registry

def test_every_bundled_set_loads():
    from sassl.data.sets import SETS

    for name in SETS:
        split = "train" if name in ("objects", "elpv") else "all"
        ds = get_dataset(name, split=split)
        x, y = ds[0]
        assert x.ndim == 3 and x.shape[0] == 3 and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert -1 <= y < max(1, ds.num_classes)
        assert (set_dir(name) / "contact_sheet.png").is_file()
        assert json.loads((set_dir(name) / "manifest.json").read_text())["sources"]


def test_set_prepare_is_idempotent_and_redoes_half_finished():
    out = prepare_set("foolbox-cifar10")
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert prepare_set("foolbox-cifar10") == out and (out / "manifest.json").stat().st_mtime_ns == stamp
    (out / "manifest.json").unlink()
    (out / "junk").write_text("half-finished")
    prepare_set("foolbox-cifar10")
    assert (out / "manifest.json").is_file() and not (out / "junk").exists()


def test_a_set_built_by_two_processes_at_once_is_built_once(capsys):
    """Two builders of one bundled set at the same time (a study's lanes on a fresh machine): the second waits for
    the first (one line says so) and reads its set; the build runs once. Without the lock the second removed the
    first's half-built folder and the first read files as they were rewritten."""
    import shutil
    import threading
    import time

    from sassl.data.sets import data_root, load_index

    folder, calls = f"race-test-{os.getpid()}", []

    def slow_build(stage):
        calls.append(threading.get_ident())
        (stage / "images").mkdir()
        Image.new("RGB", (8, 8), (200, 10, 10)).save(stage / "images" / "a.png")
        time.sleep(1.0)  # long enough for the other builder to arrive meanwhile
        return {"classes": [], "items": [{"file": str((stage / "images" / "a.png").relative_to(data_root())),
                                          "label": -1, "split": "all", "group": "a"}], "meta": {}}
    try:
        outs = []
        threads = [threading.Thread(target=lambda: outs.append(prepare_set("photos", folder=folder, build=slow_build)))
                   for _ in range(2)]
        for t in threads:
            t.start()
            time.sleep(0.3)
        for t in threads:
            t.join(60)
        assert len(calls) == 1 and len(outs) == 2 and outs[0] == outs[1] == set_dir(folder)
        assert (set_dir(folder) / "manifest.json").is_file() and len(load_index(folder)["items"]) == 1
        assert f"is building the bundled set {folder}; waiting for it" in capsys.readouterr().out
    finally:
        shutil.rmtree(set_dir(folder), ignore_errors=True)
        (set_dir(folder).parent / f".{folder}.lock").unlink(missing_ok=True)


def test_objects_split_by_identity():
    tr, te, sh = (get_dataset("objects", split=s) for s in ("train", "test", "test_shift"))
    assert tr.num_classes >= 8 and tr.classes == list(CLASSES)
    assert not set(tr.meta["objects"]) & set(te.meta["objects"])
    assert set(te.meta["objects"]) == set(sh.meta["objects"])
    ids_tr = {identity(o.split("/")[1]) for o in tr.meta["objects"]}
    ids_te = {identity(o.split("/")[1]) for o in te.meta["objects"]}
    assert not ids_tr & ids_te
    assert not set(tr.meta["backgrounds"]) & set(tr.meta["shift_backgrounds"])
    for ds in (tr, te, sh):
        assert set(collections.Counter(ds.labels)) == set(range(len(CLASSES)))
    assert tuple(tr[0][0].shape) == (3, 96, 96)


def test_objects_variant_seeded():
    """objects:KEY=VALUE,... builds the benchmark with other parameters, once, seeded; more composites per object
    keep the split by object identity."""
    from sassl.data.registry import objects_config, splits_of

    assert objects_config("objects:size=32,per_object=1,seed=3") == ObjectsConfig(size=32, per_object=1, seed=3)
    a = get_dataset("objects:size=32,per_object=1,seed=3", split="test")
    b = get_dataset("objects:size=32,per_object=1,seed=3@test")
    assert torch.equal(a.images, b.images) and a.images.shape[-1] == 32
    assert splits_of("objects:size=32,per_object=1,seed=3") == ("train", "test", "test_shift")
    c = get_dataset("objects:size=32,per_object=1,seed=4", split="test")
    assert c.meta["test_objects"] != a.meta["test_objects"] or not torch.equal(c.images[:5], a.images[:5])
    two = get_dataset("objects:size=32,per_object=2,seed=3", split="test")
    assert len(two) == 2 * len(a) and two.meta["test_objects"] == a.meta["test_objects"]
    for bad, says in (("objects:per_objects=4", "KEY one of size, per_object"), ("objects:size=big", "size must be int"),
                      ("objects:size", "expected objects:KEY=VALUE")):
        with pytest.raises(ValueError, match=says):
            get_dataset(bad)
    assert identity("pig_golden2") == identity("pig_golden") == "pig_golden"


def test_elpv_split_stratified():
    tr, te = get_dataset("elpv", "train"), get_dataset("elpv", "test")
    assert len(tr) + len(te) == 2624 and tr.classes == ["p0", "p0.33", "p0.67", "p1"]
    ct, ce = collections.Counter(tr.labels), collections.Counter(te.labels)
    for k in range(4):
        assert abs(ce[k] / (ct[k] + ce[k]) - 0.25) < 0.02
    with pytest.raises(ValueError, match="no split 'val'; splits: test, train"):
        get_dataset("elpv", "val")


def test_unknown_dataset_lists_available():
    with pytest.raises(KeyError, match="paintings.*cifar10.*pbn.*imagefolder:PATH"):
        get_dataset("imagenet")


def test_torchvision_offline_error_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar10: no data under .*cifar-10-batches-py.*download=True"):
        get_dataset("cifar10", root=str(tmp_path))
    with pytest.raises(ValueError, match="split must be one of"):
        get_dataset("cifar10", split="val", root=str(tmp_path))


def test_pbn_fallback_is_loud_and_recorded(monkeypatch, tmp_path):
    monkeypatch.delenv("SASSL_PBN_DIR", raising=False)
    with pytest.warns(UserWarning, match="USING THE BUNDLED 'paintings'"):
        ds = get_dataset("pbn")
    assert "fallback" in ds.meta["source_used"] and len(ds) >= 30
    (tmp_path / "pbn").mkdir()
    Image.new("RGB", (40, 30), "red").save(tmp_path / "pbn" / "1.jpg")
    monkeypatch.setenv("SASSL_PBN_DIR", str(tmp_path / "pbn"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = get_dataset("pbn")
    assert len(ds) == 1 and str(tmp_path / "pbn") in ds.meta["source_used"]


# ----------------------------------------------------------------------------- user folders and bad input

@pytest.fixture
def messy_folder(tmp_path, photos, monkeypatch):
    monkeypatch.setattr(decode, "MAX_PIXELS", 300 * 300)
    root = tmp_path / "messy"
    good, other = root / "good", root / "other"
    good.mkdir(parents=True)
    other.mkdir()
    src = Image.open(photos[0]).convert("RGB").resize((64, 48))
    src.save(good / "plain.jpg")
    src.convert("CMYK").save(good / "cmyk.jpg")
    Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)).save(good / "sixteen.png")
    src.convert("P").save(good / "palette.png")
    src.convert("L").save(good / "grey.png")
    rgba = src.convert("RGBA")
    rgba.putalpha(0)
    rgba.save(other / "transparent.png")
    (other / "truncated.jpg").write_bytes((good / "plain.jpg").read_bytes()[:200])
    (other / "notes.txt").write_text("not an image")
    (other / "fake.png").write_text("not a png")
    Image.new("RGB", (4, 4)).save(other / "tiny.png")
    Image.new("RGB", (400, 400)).save(other / "huge.png")
    return root


def test_imagefolder_decodes_or_skips_every_bad_file(messy_folder):
    ds = imagefolder(messy_folder)
    assert ds.classes == ["good", "other"] and len(ds) == 10  # notes.txt left out by suffix
    with pytest.warns(UserWarning, match="skipping unusable image"):
        out = [ds[i] for i in range(len(ds))]
    assert all(x.shape[0] == 3 and x.dtype == torch.float32 for x, _ in out)
    assert len(ds.skipped) == 4  # truncated, fake, tiny, huge
    names = {ds.files[i].name for i in ds.skipped}
    assert names == {"truncated.jpg", "fake.png", "tiny.png", "huge.png"}
    t = [ds.files[i].name for i in range(len(ds))].index("transparent.png")
    assert torch.allclose(ds[t][0], torch.ones_like(ds[t][0]))  # alpha composited on white


def test_imagefolder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        get_dataset(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        get_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files"):
        get_dataset(f"imagefolder:{tmp_path / 'txt'}")


def test_flat_folder_is_unlabelled(tmp_path):
    for i in range(3):
        Image.new("RGB", (20, 20), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
    ds = get_dataset(f"imagefolder:{tmp_path}")
    assert ds.labels == [-1, -1, -1] and ds.classes == []


def test_cli_data(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("objects", "paintings", "cifar10", "pbn", "imagefolder:PATH"):
        assert name in out
    assert main(["data", "prepare", "opencv-art"]) == 0
    assert "contact_sheet.png" in capsys.readouterr().out
    assert main(["data", "prepare", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err


def _split_tree(root, layout: dict):
    """layout: {split: {class: n images}} -> files under root/split/class/."""
    for split, classes in layout.items():
        for c, n in classes.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(root / split / c / f"{i}.png")


def test_imagefolder_train_val_splits_share_one_class_map(tmp_path):
    """train/ and val/ are real splits; a class present in only one of them keeps the same index in both."""
    from sassl.data import held_out_split, splits_of

    _split_tree(tmp_path, {"train": {"cat": 2, "dog": 3}, "val": {"dog": 1, "eel": 1}})
    name = f"imagefolder:{tmp_path}"
    assert splits_of(name) == ("train", "val") and held_out_split(name) == "val"
    train, val = get_dataset(name, split="train"), get_dataset(f"{name}@val")
    assert train.classes == val.classes == ["cat", "dog", "eel"]
    assert sorted(train.labels) == [0, 0, 1, 1, 1] and sorted(val.labels) == [1, 2]
    assert len(get_dataset(name, split="all")) == 7
    with pytest.raises(ValueError, match=r"no split 'test'; splits: train, val"):
        get_dataset(name, split="test")
    with pytest.raises(ValueError, match="also asked for split"):
        get_dataset(f"{name}@val", split="train")


def test_pool_folders_have_no_held_out_split(tmp_path):
    """A class tree without split subfolders is one pool: it trains whole and says it has no test split."""
    from sassl.data import held_out_split, splits_of

    _split_tree(tmp_path, {"": {"a": 2, "b": 2}})
    name = f"imagefolder:{tmp_path}"
    assert splits_of(name) == ("all",) and held_out_split(name) is None
    assert len(get_dataset(name, split="train")) == 4  # training uses the whole pool
    with pytest.raises(ValueError, match="no split 'test'.*one pool"):
        get_dataset(name, split="test")


def test_bundled_splits_answered_without_catching_errors():
    from sassl.data import held_out_split, splits_of

    assert splits_of("objects") == ("train", "test", "test_shift")
    assert held_out_split("objects") == "test" and held_out_split("objects@test_shift") == "test_shift"
    assert splits_of("textures") == ("all",) and held_out_split("textures") is None
    assert splits_of("cifar10") == ("train", "test")  # no download needed to answer


def test_folder_index_is_cached_and_follows_changes(tmp_path, monkeypatch):
    """The index is walked once and read back while the folder is unchanged; adding a file to a class
    folder (a change two levels down) makes the next call walk again."""
    from sassl.data import index as idx

    monkeypatch.setenv("SASSL_CACHE", str(tmp_path / "cache"))
    for split, c, i in (("train", "a", 0), ("train", "b", 0), ("val", "a", 0)):
        (tmp_path / "d" / split / c).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20)).save(tmp_path / "d" / split / c / f"{i}.jpg")
    walks = []
    real_walk = idx.walk
    monkeypatch.setattr(idx, "walk", lambda root, **kw: walks.append(root) or real_walk(root, **kw))
    first = idx.folder_index(tmp_path / "d")
    again = idx.folder_index(tmp_path / "d")
    assert len(walks) == 1 and list(first) == list(again) == [tmp_path / "d" / p for p in
                                                               ("train/a/0.jpg", "train/b/0.jpg", "val/a/0.jpg")]
    assert idx.index_path((tmp_path / "d").resolve()).is_file()
    Image.new("RGB", (20, 20)).save(tmp_path / "d" / "train" / "b" / "1.jpg")
    ds = get_dataset(f"imagefolder:{tmp_path / 'd'}")  # train split, through the index
    assert len(walks) == 2 and len(ds) == 3 and ds.labels == [0, 1, 1] and ds.classes == ["a", "b"]


def test_atomic_file_writes_whole_or_not_at_all(tmp_path):
    from sassl.storage import atomic_file

    target = tmp_path / "sub" / "f.bin"
    with atomic_file(target) as tmp:
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing at the target until the block succeeds
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_bench_index_on_a_generated_imagenet_layout(tmp_path, monkeypatch):
    """`python -m sassl.bench index` at toy size: the generated train/ + val/ folder is read back whole,
    with one class map, and the user's SASSL_CACHE is restored afterwards."""
    from sassl.bench.index import bench_index

    monkeypatch.setenv("SASSL_CACHE", str(tmp_path / "mine"))
    row = bench_index(tmp_path / "in", train=30, val=6, classes=3)
    assert (row["files"], row["train"], row["val"], row["classes"]) == (36, 30, 6, 3)
    assert os.environ["SASSL_CACHE"] == str(tmp_path / "mine")
    assert len(list((tmp_path / "in" / "train").rglob("*.JPEG"))) == 30
