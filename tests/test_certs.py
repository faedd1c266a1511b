"""Key files written by ``fedcore certs``: owner-only, fresh files, never through a symlink."""

import os
import stat

import pytest

from fedcore.certs import write_node_keys, write_server_certs
from fedcore.cli import MAX_NODES


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_server_keys_are_owner_only_regular_files(tmp_path):
    files = write_server_certs(tmp_path, ["localhost"])
    for key in (files.ca_key, files.server_key):
        assert stat.S_ISREG(os.lstat(key).st_mode)
        assert _mode(key) == 0o600


def test_an_existing_world_readable_key_file_is_replaced_owner_only(tmp_path):
    stale = tmp_path / "server.key"
    stale.write_bytes(b"old key")
    stale.chmod(0o644)
    write_server_certs(tmp_path, ["localhost"])
    assert _mode(stale) == 0o600
    assert b"PRIVATE KEY" in stale.read_bytes()


def test_an_existing_world_readable_node_key_is_replaced_owner_only(tmp_path):
    stale = tmp_path / "node-1"
    stale.write_bytes(b"old key")
    stale.chmod(0o666)
    private, _ = write_node_keys(tmp_path, "node-1")
    assert _mode(private) == 0o600
    assert b"OPENSSH PRIVATE KEY" in private.read_bytes()


@pytest.mark.parametrize("name", ["ca.key", "server.key", "ca.crt", "server.pem"])
def test_a_symlink_at_a_target_path_is_replaced_and_its_target_untouched(tmp_path, name):
    outside = tmp_path / "outside"
    outside.write_bytes(b"not yours")
    outside.chmod(0o644)
    out = tmp_path / "certs"
    out.mkdir()
    (out / name).symlink_to(outside)
    write_server_certs(out, ["localhost"])
    assert stat.S_ISREG(os.lstat(out / name).st_mode)
    assert outside.read_bytes() == b"not yours"
    assert _mode(outside) == 0o644
    if name.endswith(".key"):
        assert _mode(out / name) == 0o600


def test_a_symlink_at_a_node_key_path_is_replaced_and_its_target_untouched(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"not yours")
    out = tmp_path / "keys"
    out.mkdir()
    (out / "node-1").symlink_to(outside)
    (out / "node-1.pub").symlink_to(outside)
    private, public = write_node_keys(out, "node-1")
    assert stat.S_ISREG(os.lstat(private).st_mode) and stat.S_ISREG(os.lstat(public).st_mode)
    assert _mode(private) == 0o600
    assert outside.read_bytes() == b"not yours"


def test_no_temporary_file_is_left_behind(tmp_path):
    write_server_certs(tmp_path, ["localhost"])
    write_node_keys(tmp_path, "node-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.crt",
        "ca.key",
        "node-1",
        "node-1.pub",
        "server.key",
        "server.pem",
    ]


# --- `fedcore certs`: never a silent new CA, a bounded number of key pairs ---------------------


def _certs(capsys, *argv):
    from fedcore.cli import main

    code = main(["certs", *argv])
    return code, capsys.readouterr().err


def _contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_certs_twice_into_one_folder_is_refused_and_keeps_the_ca(capsys, tmp_path):
    assert _certs(capsys, "--out", str(tmp_path), "--nodes", "2")[0] == 0
    before = _contents(tmp_path)
    code, err = _certs(capsys, "--out", str(tmp_path), "--nodes", "2")
    assert code == 2
    assert err.startswith("error: ") and "ca.crt" in err and "--force" in err
    assert _contents(tmp_path) == before


def test_an_existing_node_key_alone_is_refused_before_anything_is_written(capsys, tmp_path):
    (tmp_path / "node-1.pub").write_text("mine")
    code, err = _certs(capsys, "--out", str(tmp_path), "--nodes", "2")
    assert code == 2 and "node-1.pub" in err
    assert _contents(tmp_path) == {"node-1.pub": b"mine"}


def test_force_replaces_the_ca(capsys, tmp_path):
    _certs(capsys, "--out", str(tmp_path))
    old = (tmp_path / "ca.crt").read_bytes()
    assert _certs(capsys, "--out", str(tmp_path), "--force")[0] == 0
    assert (tmp_path / "ca.crt").read_bytes() != old


@pytest.mark.parametrize("nodes", ["-1", "0", str(MAX_NODES + 1), "100000000000", "two"])
def test_a_node_count_out_of_range_is_refused_at_parse_time(capsys, tmp_path, nodes):
    with pytest.raises(SystemExit) as info:
        _certs(capsys, "--out", str(tmp_path / "certs"), "--nodes", nodes)
    assert info.value.code == 2
    assert "--nodes" in capsys.readouterr().err
    assert not (tmp_path / "certs").exists()


def test_the_largest_node_count_is_accepted_by_the_parser():
    from fedcore.cli import _parser

    assert _parser().parse_args(["certs", "--out", "x", "--nodes", str(MAX_NODES)]).nodes == (
        MAX_NODES
    )
