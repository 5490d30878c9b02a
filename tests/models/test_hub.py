"""Weights that carry their config: save_pretrained / from_pretrained folders
(config.json + model.safetensors, huggingface_hub's layout), the Hugging Face Hub
path offline (huggingface_hub's own cache in offline mode; no network call), and
torch.hub through the repository's hubconf.py."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import bcosnet
from bcosnet.training import train
from tests.training.helpers import tiny_config

ASSETS = Path(__file__).parents[1] / "assets"
REPO = Path(__file__).parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """fmnist_bcos trained one epoch on generated 12×12 images (float64): its export
    carries the full record (classes, preprocess, data set)."""
    return train(tiny_config(tmp_path_factory.mktemp("hub") / "run", epochs=1))


@pytest.fixture(scope="module")
def model(trained):
    return bcosnet.training.load_checkpoint_model(trained.weights)


def _images(model, n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    dtype = next(model.parameters()).dtype
    return torch.rand(n, 1, *model.model_info.image_size, generator=g, dtype=dtype)


def assert_same_model(a, b) -> None:
    """Every tensor equal (dtype included), the record equal, the logits equal."""
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    assert a.model_info == b.model_info
    assert a.model_info.to_dict() == b.model_info.to_dict()
    x = _images(a)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


# ----------------------------------------------------------------------------- folders
def test_round_trip_is_bit_for_bit(model, tmp_path) -> None:
    assert model.model_info.dataset is not None and model.model_info.preprocess is not None
    folder = model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                        "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_name"] == "fmnist_bcos" and config["model_options"] == {
        "width": 8, "temperature": 10.0}
    assert config["model_info"] == model.model_info.to_dict()
    back = bcosnet.from_pretrained(folder)
    assert_same_model(model, back)
    assert not back.training
    # the same folder as create_model weights, and its weights file alone
    assert_same_model(back, bcosnet.create_model("fmnist_bcos", weights=str(folder)))
    again = bcosnet.from_pretrained(back.save_pretrained(tmp_path / "again"))
    assert_same_model(model, again)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["model_info"]) == config["model_info"]


def test_the_saved_dtype_is_kept(model, tmp_path) -> None:
    wide = bcosnet.from_pretrained(model.save_pretrained(tmp_path / "m")).double()
    back = bcosnet.from_pretrained(wide.save_pretrained(tmp_path / "m64"))
    assert next(back.parameters()).dtype == torch.float64
    assert_same_model(wide, back)  # float64 values, not float32 roundings of them


def test_a_folder_of_the_previous_version_loads(tmp_path) -> None:
    """bcosnet 0.1 wrote no folders; what it recorded of a model is its export's
    metadata (name, options with the old spelling, classes; no record).  A folder
    whose config.json holds only that, with the 0.1 export as its weights, loads with
    the earlier-version warning and computes the logits 0.1 computed."""
    export = ASSETS / "v0.1.0_fmnist_bcos.safetensors"
    with safe_open(str(export), framework="pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    assert "model_info" not in meta
    folder = tmp_path / "v0.1"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(meta))
    shutil.copy(export, folder / "model.safetensors")
    ref = json.loads((ASSETS / "v0.1.0_fmnist_bcos_logits.json").read_text())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = bcosnet.from_pretrained(folder)
    said = " | ".join(str(w.message) for w in caught)
    assert "saved by an earlier bcosnet, without a model record" in said
    assert "option 'log10_temperature' is now 'temperature'" in said  # 0.1's option name
    assert m.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert m.model_info.dataset is None  # never a default data set
    with torch.no_grad():
        torch.testing.assert_close(m(torch.tensor(ref["x"]).view(ref["x_shape"])),
                                   torch.tensor(ref["logits"]), rtol=1e-5, atol=1e-5)
    # saved again, the folder now carries a full record and loads without a warning
    m.save_pretrained(tmp_path / "now")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same_model(m, bcosnet.from_pretrained(tmp_path / "now"))


def _edit_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("tamper, message", [
    (lambda f: (f / "config.json").write_text("{\"model_name\": \"fmnist_bcos\",,"),
     r"config.json is not valid JSON .* save the model again with model.save_pretrained"),
    (lambda f: _edit_config(f, lambda c: c.update(num_classes=7)),
     r"its model record says num_classes 4, the file's num_classes entry 7 .* damaged or was "
     r"edited"),
    (lambda f: _edit_config(f, lambda c: c["model_info"].update(classes=["x", "y"])),
     r"config.json and model.safetensors record different models \(field\(s\) classes\)"),
    (lambda f: _edit_config(f, lambda c: c["model_info"].update(kind="bcos_v3")),
     r"record different models \(field\(s\) kind\)"),
    (lambda f: (f / "config.json").write_text(json.dumps({"architectures": ["BertModel"]})),
     r"records no bcosnet model .*create_model\(NAME, weights="),
    (lambda f: (f / "model.safetensors").unlink(),
     r"has no model.safetensors: it is not a folder written by save_pretrained"),
])
def test_a_tampered_folder_is_a_clear_error(model, tmp_path, tamper, message) -> None:
    folder = model.save_pretrained(tmp_path / "m")
    tamper(folder)
    with pytest.raises(ValueError, match=message):
        bcosnet.from_pretrained(folder)


def test_a_record_edited_in_both_files_fails_on_its_own_checks(model, tmp_path) -> None:
    folder = model.save_pretrained(tmp_path / "m")
    _edit_config(folder, lambda c: c["model_info"].update(kind="bcos_v3"))
    state = load_file(str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    save_file(state, str(folder / "model.safetensors"),
              {k: json.dumps(config[k]) for k in ("model_name", "model_info")})
    with pytest.raises(ValueError, match=r"kind 'bcos_v3' is not 'bcos', 'bcos_v2' or "
                                         r"'standard' — the file's model record is damaged"):
        bcosnet.from_pretrained(folder)


def test_weights_that_do_not_fit_the_record_are_refused(model, tmp_path) -> None:
    folder = model.save_pretrained(tmp_path / "m")
    state = load_file(str(folder / "model.safetensors"))
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    dropped = sorted(state)[0]
    del state[dropped]
    save_file(state, str(folder / "model.safetensors"), meta)
    with pytest.raises(ValueError, match=rf"missing keys: {dropped}"):
        bcosnet.from_pretrained(folder)


def test_bad_sources_say_what_is_accepted(model, tmp_path, trained) -> None:
    with pytest.raises(ValueError, match="no folder saved by save_pretrained, no Hugging Face "
                                         "Hub repo"):
        bcosnet.from_pretrained(str(tmp_path / "no" / "such" / "folder"))
    with pytest.raises(ValueError, match="has no config.json: .* pass the file itself"):
        bcosnet.from_pretrained(trained.out_dir)  # a training run's folder
    assert_same_model(model, bcosnet.from_pretrained(trained.weights))  # ... its export
    with pytest.raises(ValueError, match="needs the model's record .* bcosnet.create_model"):
        bcosnet.models.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "x")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file; save_pretrained writes a folder"):
        model.save_pretrained(tmp_path / "file")
    with pytest.raises(ValueError, match="trained as 'fmnist_bcos', not 'resnet18'"):
        bcosnet.create_model("resnet18", weights=str(model.save_pretrained(tmp_path / "m")))


# ----------------------------------------------------------------------------- the Hub, offline
@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """huggingface_hub in offline mode (HF_HUB_OFFLINE: every HTTP request refused by
    its own hook) with an empty cache of its own; ``put(folder, repo)`` places a folder
    in that cache as the repo's ``main`` — huggingface_hub's documented cache layout."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def put(folder: Path, repo: str, commit: str = COMMIT) -> None:
        root = cache / f"models--{repo.replace('/', '--')}"
        shutil.copytree(folder, root / "snapshots" / commit, dirs_exist_ok=True)
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / "main").write_text(commit)

    return put


def test_hub_repos_load_from_huggingface_hubs_cache(model, tmp_path, hub_cache) -> None:
    hub_cache(model.save_pretrained(tmp_path / "m"), "someone/fmnist-bcos")
    assert_same_model(model, bcosnet.from_pretrained("someone/fmnist-bcos"))
    assert_same_model(model, bcosnet.from_pretrained("hf-hub:someone/fmnist-bcos"))
    assert_same_model(model, bcosnet.create_model("fmnist_bcos",
                                                  weights="hf-hub:someone/fmnist-bcos"))
    assert_same_model(model, bcosnet.create_model("hf-hub:someone/fmnist-bcos"))  # timm
    assert_same_model(model, bcosnet.create_model(
        "fmnist_bcos", weights=f"hf-hub:someone/fmnist-bcos@{COMMIT}"))
    with pytest.raises(ValueError, match="trained as 'fmnist_bcos', not 'resnet18'"):
        bcosnet.create_model("resnet18", weights="hf-hub:someone/fmnist-bcos")


def test_hub_errors_name_the_repo_and_what_to_do(model, tmp_path, hub_cache, monkeypatch
                                                 ) -> None:
    with pytest.raises(ValueError, match=r"could not get config.json of the Hugging Face Hub "
                                         r"repo 'someone/missing' .*HF_HUB_OFFLINE=1"):
        bcosnet.from_pretrained("someone/missing")
    with pytest.raises(ValueError, match="'hf-hub:not a repo' does not name a Hugging Face "
                                         "Hub repo: expected 'user/name'"):
        bcosnet.create_model("fmnist_bcos", weights="hf-hub:not a repo")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(ImportError, match=r"pip install 'bcosnet\[hub\]'"):
        bcosnet.from_pretrained("someone/fmnist-bcos")
    # folders need no huggingface_hub
    assert_same_model(model, bcosnet.from_pretrained(model.save_pretrained(tmp_path / "m")))


def test_push_to_hub_uploads_the_folder(model, hub_cache, monkeypatch) -> None:
    """huggingface_hub's HfApi stands in for the Hub: create_repo and upload_folder
    record their arguments and the upload lands in the offline cache."""
    calls = []

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kw):
        calls.append(("create_repo", repo_id, private, exist_ok))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, commit_message, revision=None, **kw):
        calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path)
                                                        .iterdir()), commit_message))
        hub_cache(Path(folder_path), repo_id)
        return f"https://huggingface.co/{repo_id}/commit/{COMMIT}"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = model.push_to_hub("someone/pushed", private=True)
    assert url.endswith(f"someone/pushed/commit/{COMMIT}")
    assert calls == [("create_repo", "someone/pushed", True, True),
                     ("upload_folder", "someone/pushed",
                      ["README.md", "config.json", "model.safetensors"],
                      "Upload bcosnet model")]
    assert_same_model(model, bcosnet.from_pretrained("someone/pushed"))


# ----------------------------------------------------------------------------- torch.hub
def _hubconf():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bcosnet_hubconf", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hubconf_exposes_every_registered_model() -> None:
    hubconf = _hubconf()
    public = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith("_")]
    assert public == bcosnet.list_models()  # what torch.hub.list shows
    assert "resnet50_v2" in hubconf.resnet50_v2.__doc__
    assert "bcos_v2_imagenet" in hubconf.resnet50_v2.__doc__
    assert all(isinstance(d, str) for d in hubconf.dependencies)


def test_torch_hub_load_is_bit_for_bit(model, tmp_path, trained) -> None:
    folder = model.save_pretrained(tmp_path / "m")
    for weights in (str(folder), str(trained.weights)):
        loaded = torch.hub.load(str(REPO), "fmnist_bcos", source="local", weights=weights)
        assert_same_model(bcosnet.create_model("fmnist_bcos", weights=weights), loaded)
    assert_same_model(model, torch.hub.load(str(REPO), "fmnist_bcos", source="local",
                                            weights=str(folder)))


@pytest.mark.parametrize("name, options", [
    ("cifar_resnet20", {"num_classes": 7}), ("standard_resnet18", {}),
    ("bcosified_fmnist_bcos", {"num_classes": 3}), ("vitc_ti_patch1_14_v2", {}),
    ("densenet121_v2", {"in_channels": 1}),
])
def test_torch_hub_builds_what_create_model_builds(name, options) -> None:
    torch.manual_seed(0)
    want = bcosnet.create_model(name, **options)
    torch.manual_seed(0)
    got = torch.hub.load(str(REPO), name, source="local", **options)
    assert type(got) is type(want) and got.model_info == want.model_info
    sw, sg = want.state_dict(), got.state_dict()
    assert list(sw) == list(sg) and all(torch.equal(sw[k], sg[k]) for k in sw)
