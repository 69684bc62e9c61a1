"""The Taxonomy tree: validation, roll-up, encoding, completion, (de)serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from cropscope.errors import DataError
from cropscope.taxonomy import Node, Taxonomy, read_taxonomy, write_taxonomy


def small() -> Taxonomy:
    return Taxonomy.from_paths(
        [("crop", "cereal", "wheat"), ("crop", "cereal", "barley"), ("crop", "oilseed", "rape"),
         ("grass", "meadow", "meadow")],
        levels=["cover", "group", "crop"],
        name="small",
    )


def test_sizes_paths_and_children() -> None:
    tax = small()
    assert tax.sizes == [2, 3, 4]
    assert tax.path("barley") == ["crop", "cereal", "barley"]
    assert tax.children("group", "cereal") == ["wheat", "barley"]
    assert tax.is_complete
    assert tax.find("meadow") == (2, 3)  # a name on two levels resolves to the finest


def test_rollup_labels_and_probabilities_sum_to_one() -> None:
    tax = small()
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(4), size=50).astype(np.float32)
    for dst in range(3):
        up = tax.rollup_proba(proba, -1, dst)
        assert up.shape == (50, tax.n_classes(dst))
        np.testing.assert_allclose(up.sum(axis=1), 1.0, atol=1e-6)
    cover = tax.rollup_proba(proba, -1, "cover")
    np.testing.assert_allclose(cover[:, 0], proba[:, :3].sum(axis=1), atol=1e-6)
    labels = np.array([0, 1, 2, 3, -1])
    assert tax.rollup_labels(labels, "crop", "group").tolist() == [0, 0, 1, 2, -1]
    assert tax.rollup_labels(labels, "crop", "cover").tolist() == [0, 0, 0, 1, -1]
    with pytest.raises(DataError, match="finer level"):
        tax.rollup_index("cover", "crop")


def test_encode_mixed_levels() -> None:
    tax = small()
    y = tax.encode(["barley", "cereal", None, "grass", "rape"])
    assert y.tolist() == [[0, 0, 1], [0, 0, -1], [-1, -1, -1], [1, -1, -1], [0, 1, 2]]
    assert tax.check_consistent(y).all()
    with pytest.raises(DataError, match="not in taxonomy"):
        tax.encode(["maize"])


def test_check_consistent_flags_contradictions() -> None:
    tax = small()
    assert tax.check_consistent(np.array([[0, 0, 0], [1, 2, 3], [0, 1, 3]])).tolist() == [
        True, True, False,
    ]


def test_validation_errors_are_clear() -> None:
    with pytest.raises(DataError, match="has no parent"):
        Taxonomy([Node(0, "a", "a"), Node(1, "b", "b", "zz")])
    with pytest.raises(DataError, match="duplicate codes"):
        Taxonomy([Node(0, "a", "a"), Node(0, "a", "b")])
    with pytest.raises(DataError, match="two parents"):
        Taxonomy.from_paths([("x", "leaf"), ("y", "leaf")])
    with pytest.raises(DataError, match="top-level"):
        Taxonomy([Node(0, "a", "a", "p")])


def test_complete_pads_shallow_leaves() -> None:
    tax = Taxonomy.from_paths([("crop", "wheat"), ("water",)], levels=["cover", "class"])
    assert not tax.is_complete
    full = tax.complete()
    assert full.is_complete and full.classes(-1) == ["wheat", "water"]
    assert full.path("water") == ["water", "water"]


def test_subtree_keeps_ancestors_of_chosen_leaves() -> None:
    sub = small().subtree(["wheat", "meadow"])
    assert sub.sizes == [2, 2, 2]
    assert sub.classes("group") == ["cereal", "meadow"]


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".csv"])
def test_round_trip_files(tmp_path, suffix: str) -> None:
    tax = small()
    path = write_taxonomy(tax, tmp_path / f"t{suffix}")
    back = read_taxonomy(path)
    assert back == tax


def test_nested_yaml_and_wide_csv(tmp_path) -> None:
    (tmp_path / "t.yaml").write_text(
        "name: mine\nlevels: [group, crop]\ntree:\n  cereal: [wheat, barley]\n  grass:\n"
    )
    tax = read_taxonomy(tmp_path / "t.yaml")
    assert tax.name == "mine" and tax.levels == ["group", "crop"]
    assert not tax.is_complete and tax.complete().classes(-1) == ["wheat", "barley", "grass"]
    (tmp_path / "w.csv").write_text(
        "l1_code,l1_name,l2_code,l2_name\n1,crop,11,wheat\n1,crop,12,maize\n2,water,21,lake\n"
    )
    wide = read_taxonomy(tmp_path / "w.csv")
    assert wide.levels == ["l1", "l2"] and wide.codes("l2") == ["11", "12", "21"]
    (tmp_path / "bad.csv").write_text("l1_name,l2_name\ncrop,wheat\nwater,wheat\n")
    with pytest.raises(DataError, match="only one parent"):
        read_taxonomy(tmp_path / "bad.csv")
    (tmp_path / "cyc.csv").write_text("code,name,parent\na,A,b\nb,B,a\n")
    with pytest.raises(DataError, match="cycle"):
        read_taxonomy(tmp_path / "cyc.csv")


# ---------------------------------------------------------------------------- issue 20
def test_yaml_alias_bomb_is_refused_before_it_expands(tmp_path) -> None:
    """Issue 20 item 10: an 888-byte YAML taxonomy needed more than 6 GB (aliases nested
    nine deep expand to 10^9 nodes). Aliases are refused while parsing, in bounded work."""
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    lines.append("tree: {crops: *i}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size < 1000
    with pytest.raises(DataError, match="aliases"):
        read_taxonomy(path)
    deep = tmp_path / "deep.yaml"
    deep.write_text("tree: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(DataError, match="nested deeper"):
        read_taxonomy(deep)


@pytest.mark.parametrize("name,content", [
    ("empty.csv", b""), ("binary.csv", bytes(range(256))), ("quote.csv", b'"a,b\n"c'),
    ("empty.yaml", b""), ("list.yaml", b"- a\n- b\n"), ("bad.yaml", b"tree: [a, {b\n"),
    ("tag.yaml", b"tree: !!python/object/apply:os.system [echo]\n"),
    ("deep.json", b"[" * 100_000), ("nodes.json", b'{"nodes": [1, 2]}'),
])
def test_damaged_taxonomy_files_are_one_data_error(tmp_path, name: str, content: bytes) -> None:
    """These raised csv.Error, EmptyDataError, UnicodeDecodeError or RecursionError."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        read_taxonomy(path)
    assert "\n" not in str(exc.value)


def test_levels_from_code_prefixes() -> None:
    """WorldCereal EWOC codes name their groups in their leading digits."""
    codes = ["1101060000", "1101010011", "1106000031", "2001020022", "1101060000"]
    tax = Taxonomy.from_code_prefixes(codes, [2, 4])
    assert tax.levels == ["prefix2", "prefix4", "code"]
    assert tax.classes(0) == ["11", "20"] and tax.classes(1) == ["1101", "1106", "2001"]
    assert tax.path("1106000031") == ["11", "1106", "1106000031"]
    labels = tax.encode(["1101010011", "2001020022"])
    assert [[tax.classes(k)[c] for k, c in enumerate(row)] for row in labels] == [
        ["11", "1101", "1101010011"], ["20", "2001", "2001020022"]]
    with pytest.raises(DataError, match="increasing"):
        Taxonomy.from_code_prefixes(codes, [4, 2])
    with pytest.raises(DataError, match="not longer than the longest prefix"):
        Taxonomy.from_code_prefixes(["1101", *codes], [2, 4])
    with pytest.raises(DataError, match="at least one"):
        Taxonomy.from_code_prefixes([], [2])


def test_prefix_taxonomy_from_the_option_text() -> None:
    """``--taxonomy prefixes:2,4`` builds the tree from the set's own class codes."""
    from cropscope.data.samples import attach_taxonomy
    from tests.conftest import make_toy_set

    ts = make_toy_set(n_per_class=4)
    ts = ts.replace(classes=["1101060000", "1101010011", "2001020022"])
    got = attach_taxonomy(ts, "prefixes:2,4")
    assert got.taxonomy is not None and got.taxonomy.sizes == [2, 2, 3]
    assert got.at_level("prefix2").label_names[:1] == [ts.label_names[0][:2]]
    with pytest.raises(DataError, match="prefix lengths such as"):
        attach_taxonomy(ts, "prefixes:two")
