"""``bcosnet app``'s arguments (the served app itself: tests/app/test_browser.py,
which starts it with the CLI and stops it with Ctrl-C)."""

from __future__ import annotations

import pytest

from bcosnet.cli import main


def test_without_a_model_or_main_job_it_says_how_to_give_one(tmp_path, monkeypatch,
                                                            capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no outputs/main here
    assert main(["app"]) == 2
    err = capsys.readouterr().err
    assert "no model given and no main job's folder at outputs/main" in err
    for way in ("bcosnet app outputs/main", "--checkpoint", "--model NAME [--weights W]"):
        assert way in err


def test_weights_need_a_model_name(capsys) -> None:
    assert main(["app", "--weights", "w.pt"]) == 2
    assert "--weights W needs --model NAME" in capsys.readouterr().err


def test_a_folder_without_networks_is_refused(tmp_path, capsys) -> None:
    assert main(["app", str(tmp_path)]) == 2
    assert "holds no trained network" in capsys.readouterr().err


def test_a_checkpoint_of_another_architecture(main_folder, capsys) -> None:
    ckpt = main_folder / "bcos" / "checkpoint.pt"
    assert main(["app", "--checkpoint", str(ckpt), "--model", "cifar_resnet20"]) == 2
    err = capsys.readouterr().err
    assert "fmnist_bcos" in err and "cifar_resnet20" in err


def test_help_names_the_flags(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["app", "--help"])
    out = capsys.readouterr().out
    for flag in ("OUTPUT_DIR", "--host", "--port", "--checkpoint", "--model", "--weights"):
        assert flag in out
