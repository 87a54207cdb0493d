"""What comes back from the sandbox is data: no pickles, no links, no giant files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from grader.child import wire
from grader.sandbox.exchange import ExchangeError, Unsupported, read_value


@pytest.fixture
def exchange(tmp_path):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def test_round_trip_of_nested_values(exchange):
    root, fd = exchange
    (root / "out").mkdir()
    value = {"ok": (1.5, [np.arange(3), {"b2": np.float64(2.0)}], "text", None, float("nan"), object())}
    wire.dump(value, str(root / "out"))
    back = read_value(fd, "out")["ok"]
    assert back[0] == 1.5 and isinstance(back, tuple)
    assert np.array_equal(back[1][0], np.arange(3))
    assert back[1][1]["b2"] == 2.0 and back[2] == "text" and back[3] is None and np.isnan(back[4])
    assert isinstance(back[5], Unsupported)


def test_a_pickled_array_is_refused(exchange):
    root, fd = exchange
    (root / "out").mkdir()
    np.save(root / "out" / "a0.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (root / "out" / "value.json").write_text(json.dumps({"ndarray": "a0.npy"}))
    with pytest.raises(ExchangeError, match="holds Python objects"):
        read_value(fd, "out")


def test_symbolic_links_are_not_followed(exchange, tmp_path_factory):
    root, fd = exchange
    secret = tmp_path_factory.mktemp("secret") / "answers.json"
    secret.write_text(json.dumps({"ok": "the hidden expected value"}))
    (root / "out").mkdir()
    (root / "out" / "value.json").symlink_to(secret)
    with pytest.raises(ExchangeError, match="no answer file"):
        read_value(fd, "out")
    (root / "linked").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(ExchangeError, match="no answer directory"):
        read_value(fd, "linked")


def test_array_names_cannot_escape_the_directory(exchange):
    root, fd = exchange
    (root / "out").mkdir()
    np.save(root / "stolen.npy", np.arange(3))
    (root / "out" / "value.json").write_text(json.dumps({"ndarray": "../stolen.npy"}))
    with pytest.raises(ExchangeError, match="bad array name"):
        read_value(fd, "out")


def test_an_oversized_answer_is_refused(exchange, monkeypatch):
    root, fd = exchange
    (root / "out").mkdir()
    monkeypatch.setattr("grader.sandbox.exchange.MAX_JSON_BYTES", 100)
    (root / "out" / "value.json").write_text(json.dumps({"str": "x" * 1000}))
    with pytest.raises(ExchangeError, match="too large"):
        read_value(fd, "out")


def test_garbage_json_is_refused(exchange):
    root, fd = exchange
    (root / "out").mkdir()
    (root / "out" / "value.json").write_text('{"eval": "__import__(\'os\')"}')
    with pytest.raises(ExchangeError, match="malformed"):
        read_value(fd, "out")


def test_zero_dimensional_arrays_keep_their_shape(exchange):
    """A correct b2 gradient returned as np.float64 or a 0-d array must not arrive as shape (1,)."""
    root, fd = exchange
    (root / "out").mkdir()
    wire.dump({"b2": np.array(2.5), "s": np.float32(1.0), "v": np.arange(3)[::2]}, str(root / "out"))
    back = read_value(fd, "out")
    assert back["b2"].shape == () and back["b2"] == 2.5
    assert back["s"].shape == () and back["v"].tolist() == [0, 2]


def test_an_array_header_that_lies_about_its_size_is_refused_before_allocating(exchange):
    root, fd = exchange
    (root / "out").mkdir()
    header = {"descr": "<f8", "fortran_order": False, "shape": (2 ** 40,)}  # 8 TiB promised
    with open(root / "out" / "a0.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)
    (root / "out" / "value.json").write_text(json.dumps({"ndarray": "a0.npy"}))
    with pytest.raises(ExchangeError, match="claims 8,796,093,022,208 bytes"):
        read_value(fd, "out")


@pytest.mark.parametrize("key", [{"list": [1, 2]}, {"ndarray": "a0.npy"}, {"dict": []}])
def test_dict_keys_must_be_strings_or_numbers(exchange, key):
    root, fd = exchange
    (root / "out").mkdir()
    np.save(root / "out" / "a0.npy", np.zeros(2))
    (root / "out" / "value.json").write_text(json.dumps({"dict": [[key, 1.0]]}))
    with pytest.raises(ExchangeError, match="keys must be strings or numbers"):
        read_value(fd, "out")
