"""Checks of values a user gives (issue 20 item 10): option values by their declared types,
and the memory an input may ask for."""

from __future__ import annotations

import pytest

from cropscope.errors import DataError, ModelError, SettingsError
from cropscope.settings import check_memory, check_options, format_bytes, memory_limit

DEFAULTS = {"epochs": 10, "lr": 1e-3, "augment": True, "features": ["values"],
            "params": {}, "device": "auto", "patience": None, "lr_decay": 0.9,
            "min_samples_leaf": 1, "devices": 1, "dropout": 0.2}


@pytest.mark.parametrize("given,words", [
    ({"epochs": 0}, "'epochs' must be positive"),
    ({"epochs": -1}, "positive"),
    ({"epochs": 2.5}, "integer"),
    ({"epochs": None}, "number"),
    ({"epochs": True}, "number"),
    ({"lr": "abc"}, "'lr' must be a number, got 'abc'"),
    ({"lr": float("inf")}, "finite"),
    ({"lr": float("nan")}, "finite"),
    ({"augment": 1}, "true or false"),
    ({"features": "values"}, "list"),
    ({"params": [1]}, "mapping"),
    ({"patience": 0}, "positive"),
    ({"dropout": 1.5}, "[0, 1)"),
    ({"epochs": 10**20}, "at most 100,000"),
    ({"lr": 1e12}, "at most 2,147,483,647"),
])
def test_bad_option_values_are_refused(given: dict, words: str) -> None:
    with pytest.raises(SettingsError) as exc:
        check_options("model 'x'", DEFAULTS, given)
    assert words in str(exc.value)
    with pytest.raises(ModelError):
        check_options("model 'x'", DEFAULTS, given, error=ModelError)


@pytest.mark.parametrize("given", [
    {"epochs": 3}, {"lr": 1}, {"augment": False}, {"features": ["values", "diff"]},
    {"device": "cpu"}, {"patience": None}, {"patience": 3}, {"lr_decay": None},
    {"min_samples_leaf": 0.1}, {"devices": "auto"}, {"devices": [0, 1]},
    {"unknown": "left to the model"}, {"epochs": 100_000},
])
def test_good_option_values_pass(given: dict) -> None:
    check_options("model 'x'", DEFAULTS, given)


def test_models_and_segmentation_configs_check_their_options() -> None:
    from cropscope.models import create_model

    with pytest.raises(ModelError, match="'lr' must be a number"):
        create_model("tempcnn", lr="abc")
    with pytest.raises(ModelError, match="'epochs' must be positive"):
        create_model("tempcnn", epochs=0)
    with pytest.raises(ModelError, match="'n_estimators'"):  # inside an ensemble member
        create_model("ensemble", members=[{"model": "rf", "config": {"n_estimators": "x"}}])
    pytest.importorskip("torch")
    from cropscope.engine.segmentation import check_segmentation_options
    from cropscope.training.h2crop import h2crop_recipe

    with pytest.raises(ModelError, match="'lr' must be a number"):
        check_segmentation_options({"lr": "abc"})
    with pytest.raises(ModelError, match="'lr' must be a number"):
        h2crop_recipe(lr="abc")  # was a TypeError inside the config
    check_segmentation_options({"warmup_cap": None, "devices": "auto", "epochs": 2})


def test_memory_limit_and_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CROPSCOPE_MEMORY_LIMIT", raising=False)
    assert memory_limit() > 0
    for text, value in (("512M", 512 << 20), ("2g", 2 << 30), ("1.5GiB", 3 << 29),
                        ("4096", 4096)):
        monkeypatch.setenv("CROPSCOPE_MEMORY_LIMIT", text)
        assert memory_limit() == value
    monkeypatch.setenv("CROPSCOPE_MEMORY_LIMIT", "1M")
    check_memory(1 << 20, "fits")
    with pytest.raises(DataError) as exc:
        check_memory(3 << 20, "a cube (2 x 3)")
    assert str(exc.value) == ("a cube (2 x 3) would need 3.0 MiB of memory, more than the limit "
                              "of 1.0 MiB ($CROPSCOPE_MEMORY_LIMIT sets it)")
    for bad in ("-1G", "0", "lots", "nan", "inf"):
        monkeypatch.setenv("CROPSCOPE_MEMORY_LIMIT", bad)
        with pytest.raises(SettingsError, match="CROPSCOPE_MEMORY_LIMIT"):
            memory_limit()
    assert format_bytes(1536) == "1.5 KiB" and format_bytes(10) == "10 B"
