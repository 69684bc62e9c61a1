from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cropscope.data.readers.table import read_table, write_table
from cropscope.data.registry import (
    DatasetSpec,
    RemoteFile,
    cache_dir,
    dataset_status,
    get_dataset,
    list_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from cropscope.errors import DataError, DatasetNotFoundError
from cropscope.remote import fetch, sha256_file
from tests.conftest import make_toy_set

BUILTIN = {
    "sits-matogrosso",
    "sits-matogrosso-4bands",
    "sits-matogrosso-ndvi",
    "tempcnn-formosat2",
    "ucr-crop",
}
REL_PATH = "toy/toy_long.csv"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An empty data directory and home (for the download cache), set in the environment."""
    data = tmp_path / "data"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CROPSCOPE_DATA_DIR", str(data))
    monkeypatch.setenv("HOME", str(home))
    return {"data": data, "home": home, "tmp": tmp_path}


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    """The "remote" file: a long CSV of a toy set, served through a file:// URL."""
    return write_table(make_toy_set(n_per_class=4, n_times=5), tmp_path / "remote" / "toy.csv")


def _register(name: str, url: str, sha: str, size: int | None) -> DatasetSpec:
    return register_dataset(
        DatasetSpec(
            name=name,
            description="toy set for registry tests",
            files=[RemoteFile(REL_PATH, url, sha, size)],
            reader=lambda root, split: read_table(root / REL_PATH),
            citation="none",
            license="CC0",
        )
    )


@pytest.fixture
def toy_spec(source_file: Path) -> Iterator[DatasetSpec]:
    spec = _register(
        "toy-test", source_file.as_uri(), sha256_file(source_file), source_file.stat().st_size
    )
    yield spec
    unregister_dataset(spec.name)


def test_builtin_datasets_are_registered_with_pinned_origins() -> None:
    specs = {s.name: s for s in list_datasets()}
    assert BUILTIN <= set(specs)
    assert [s.name for s in list_datasets()] == sorted(specs)
    for name in BUILTIN:
        spec = specs[name]
        assert spec.citation and spec.license and spec.description
        for rf in spec.files:
            assert re.fullmatch(r"[0-9a-f]{64}", rf.sha256)
            assert rf.url.startswith("https://raw.githubusercontent.com/")
            assert re.search(r"/[0-9a-f]{40}/", rf.url), rf.url  # pinned commit
            assert rf.size and rf.size > 0
            assert not Path(rf.path).is_absolute()
    assert specs["tempcnn-formosat2"].splits == ("train", "test")
    sits_url = specs["sits-matogrosso"].files[0].url
    assert sits_url.endswith("/data/samples_mt_9classes.rda")
    assert "8534ba25c3e346215d8b2d4707eb7724be7ddf7e" in sits_url


def test_importing_registry_does_not_import_readers() -> None:
    code = (
        "import sys, cropscope.data.registry, cropscope.data.readers; "
        "heavy = {'rdata', 'rasterio', 'rioxarray'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(DatasetNotFoundError) as exc:
        get_dataset("no-such-set")
    msg = _one_line(exc)
    assert "no-such-set" in msg and "sits-matogrosso" in msg and "ucr-crop" in msg
    with pytest.raises(DatasetNotFoundError):
        load_dataset("no-such-set")


def test_register_twice_needs_replace(toy_spec: DatasetSpec) -> None:
    with pytest.raises(DataError, match="already registered"):
        register_dataset(toy_spec)
    assert register_dataset(toy_spec, replace=True) is toy_spec


def test_split_validation() -> None:
    with pytest.raises(DataError, match="no split 'test'"):
        load_dataset("ucr-crop", split="test", download=False)
    with pytest.raises(DataError, match="validation"):
        load_dataset("tempcnn-formosat2", split="validation", download=False)


def test_download_via_file_url(dirs: dict[str, Path], toy_spec: DatasetSpec) -> None:
    assert dataset_status("toy-test") == "missing"
    ts = load_dataset("toy-test", progress=False)
    local = dirs["data"] / REL_PATH
    assert local.is_file()
    assert sha256_file(local) == toy_spec.files[0].sha256
    assert dataset_status("toy-test") == "local"
    assert dataset_status("toy-test", verify=True) == "local"
    expected = make_toy_set(n_per_class=4, n_times=5)
    np.testing.assert_allclose(ts.values, expected.values)
    assert ts.classes == expected.classes
    # second load reads the local copy, even with downloads off
    again = load_dataset("toy-test", download=False)
    np.testing.assert_array_equal(again.values, ts.values)


def test_checksum_mismatch_deletes_download(dirs: dict[str, Path], source_file: Path) -> None:
    _register("toy-bad-sha", source_file.as_uri(), "0" * 64, None)
    try:
        with pytest.raises(DatasetNotFoundError) as exc:
            load_dataset("toy-bad-sha", progress=False)
    finally:
        unregister_dataset("toy-bad-sha")
    msg = _one_line(exc)
    assert "checksum mismatch" in msg and source_file.as_uri() in msg
    folder = dirs["data"] / Path(REL_PATH).parent
    assert not (dirs["data"] / REL_PATH).exists()
    assert not folder.exists() or not any(folder.iterdir())  # no partial or temp file left


def test_offline_error_names_locations_and_url(dirs: dict[str, Path], source_file: Path) -> None:
    url = "http://127.0.0.1:9/cropscope/toy.csv"  # discard port: connection refused
    _register("toy-offline", url, sha256_file(source_file), None)
    try:
        with pytest.raises(DatasetNotFoundError) as exc:
            load_dataset("toy-offline", progress=False)
        msg = _one_line(exc)
        assert url in msg and str(dirs["data"]) in msg and str(cache_dir()) in msg
        assert REL_PATH in msg
        with pytest.raises(DatasetNotFoundError) as exc:
            load_dataset("toy-offline", download=False)
        msg = _one_line(exc)
        assert "download=True" in msg and str(dirs["data"]) in msg and REL_PATH in msg
    finally:
        unregister_dataset("toy-offline")


def test_read_only_data_dir_downloads_to_cache(
    dirs: dict[str, Path], toy_spec: DatasetSpec
) -> None:
    dirs["data"].mkdir()
    dirs["data"].chmod(0o555)
    try:
        ts = load_dataset("toy-test", progress=False)
    finally:
        dirs["data"].chmod(0o755)
    assert cache_dir() == dirs["home"] / ".cache" / "cropscope" / "data"
    assert (cache_dir() / REL_PATH).is_file()
    assert not (dirs["data"] / REL_PATH).exists()
    assert ts.n_samples == 12
    assert dataset_status("toy-test") == "local"  # found in the cache


def test_explicit_root_is_used_and_filled(dirs: dict[str, Path], toy_spec: DatasetSpec) -> None:
    root = dirs["tmp"] / "elsewhere"
    with pytest.raises(DatasetNotFoundError, match="elsewhere"):
        load_dataset("toy-test", root=root, download=False)
    load_dataset("toy-test", root=root, progress=False)
    assert (root / REL_PATH).is_file()
    assert not (dirs["data"] / REL_PATH).exists()
    assert dataset_status("toy-test", root=root) == "local"
    assert dataset_status("toy-test") == "missing"


def test_corrupt_local_file_is_detected_and_replaced(
    dirs: dict[str, Path], toy_spec: DatasetSpec
) -> None:
    local = dirs["data"] / REL_PATH
    local.parent.mkdir(parents=True)
    local.write_text("truncated")
    assert dataset_status("toy-test") == "corrupt"  # wrong size
    load_dataset("toy-test", progress=False)  # re-downloaded over the bad copy
    assert sha256_file(local) == toy_spec.files[0].sha256
    # same size, different content: only the checksum check notices
    data = bytearray(local.read_bytes())
    data[-2] = ord("9") if data[-2] != ord("9") else ord("8")
    local.write_bytes(bytes(data))
    assert dataset_status("toy-test") == "local"  # the quick status looks at sizes only
    assert dataset_status("toy-test", verify=True) == "corrupt"
    # issue 20 item 9: loading verifies the sha256, so the altered copy is never read
    with pytest.raises(DatasetNotFoundError, match="sha256 differs"):
        load_dataset("toy-test", download=False)
    load_dataset("toy-test", progress=False)  # re-downloaded over the altered copy
    assert sha256_file(local) == toy_spec.files[0].sha256


def test_local_checksums_are_cached_by_size_and_mtime(
    dirs: dict[str, Path], toy_spec: DatasetSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cropscope.remote as remote

    load_dataset("toy-test", progress=False)
    hashed: list[Path] = []
    real = remote.sha256_file
    monkeypatch.setattr(remote, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))
    load_dataset("toy-test", download=False)
    load_dataset("toy-test", download=False)
    assert hashed == []  # known from the cache (written when the download was verified)
    local = dirs["data"] / REL_PATH
    os.utime(local, ns=(local.stat().st_atime_ns, local.stat().st_mtime_ns + 10**9))
    load_dataset("toy-test", download=False)
    assert hashed == [local.resolve()]  # touched: hashed once more


def test_fetch_and_sha256_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "blob.bin"
    payload = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # several chunks
    src.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    assert sha256_file(src) == digest
    dest = fetch(src.as_uri(), tmp_path / "sub" / "copy.bin", digest.upper(), progress=True)
    assert dest.read_bytes() == payload
    with pytest.raises(DatasetNotFoundError, match="cannot download"):
        fetch((tmp_path / "absent.bin").as_uri(), tmp_path / "x.bin", digest, progress=False)
    assert not (tmp_path / "x.bin").exists()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["copy.bin"]


def test_file_without_url_must_be_local(dirs: dict[str, Path]) -> None:
    _register("toy-no-url", "", "0" * 64, None)
    try:
        with pytest.raises(DatasetNotFoundError) as exc:
            load_dataset("toy-no-url")
        msg = _one_line(exc)
        assert "no public download URL" in msg and REL_PATH in msg
    finally:
        unregister_dataset("toy-no-url")


def test_scenes_share_the_registry_but_do_not_load_as_samples() -> None:
    names = {spec.name: spec.kind for spec in list_datasets()}
    assert names["indian-pines-window"] == "scene" and names["sits-matogrosso"] == "samples"
    assert BUILTIN <= set(names)
    with pytest.raises(DataError, match="is a scene"):
        load_dataset("enmap-potsdam")
