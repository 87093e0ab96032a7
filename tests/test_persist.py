"""A page's run survives a server restart (issue 16): saved to disk under the run id in its address
(dgm/ui/persist.py), found again by a new session with that address, continued exactly."""

from __future__ import annotations

import os
import time

import pytest
import torch

from conftest import at_iteration, open_page
from dgm.core import registry
from dgm.ui import persist


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(persist.ENV, str(tmp_path))
    return tmp_path


def _trainer(at, exp="demo"):
    return at.session_state[f"_live.{exp}"].trainer


def test_saved_state_is_read_back_only_for_the_same_run_and_settings(run_dir):
    exp = registry.get("demo")
    t = exp.make(exp.config(), seed=0, device="cpu")
    t.step(5)
    assert persist.save("abcdefgh12", "demo", "fp", t.checkpoint())
    back = persist.load("abcdefgh12", "demo", "fp")
    assert back["iteration"] == 5 and torch.equal(back["gen"], t.gen.get_state())
    assert persist.load("abcdefgh12", "demo", "other settings") is None
    assert persist.load("abcdefgh12", "gan", "fp") is None
    assert persist.load("../../etc/x", "demo", "fp") is None  # not an id: never a path
    (run_dir / "zzzzzzzz99.demo.pt").write_bytes(b"not a checkpoint")
    assert persist.load("zzzzzzzz99", "demo", "fp") is None  # a damaged file is no run


def test_the_folder_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv(persist.ENV, str(tmp_path / "cache" / "runs"))
    assert persist.save("abcdefgh12", "demo", "fp", {"iteration": 1})
    assert (tmp_path / "cache" / "runs").stat().st_mode & 0o077 == 0  # no one else reads a user's runs


def test_a_pickle_in_the_folder_is_never_executed(run_dir):
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(run_dir / "pwned"),))

    torch.save({"experiment": "demo", "fingerprint": "fp", "state": Boom()}, run_dir / "abcdefgh12.demo.pt")
    assert persist.load("abcdefgh12", "demo", "fp") is None
    assert not (run_dir / "pwned").exists()


def test_the_folder_keeps_the_newest_files(run_dir, monkeypatch):
    monkeypatch.setattr(persist, "KEEP", 3)
    for i in range(5):
        assert persist.save(f"run0000{i}x", "demo", "fp", {"iteration": i})
        t = time.time() - 100 + i  # older first
        os.utime(run_dir / f"run0000{i}x.demo.pt", (t, t))
    persist.save("run00009x", "demo", "fp", {"iteration": 9})
    old = time.time() - persist.MAX_AGE - 1
    os.utime(run_dir / "run00003x.demo.pt", (old, old))  # past the age limit
    persist.save("run00010x", "demo", "fp", {"iteration": 10})
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["run00004x.demo.pt", "run00009x.demo.pt",
                                                            "run00010x.demo.pt"]


def test_an_unwritable_folder_costs_the_save_not_the_run(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(persist.ENV, str(blocker / "runs"))  # a folder under a file cannot be made
    assert persist.save("abcdefgh12", "demo", "fp", {"iteration": 1}) is False


def test_a_new_session_with_the_address_continues_the_run_exactly(run_dir):
    """A server restart, as a page sees it: a new session (nothing in memory) opens the same address."""
    at = open_page("pages/demo.py", {"seed": "3"})
    rid = at.query_params[persist.PARAM]
    rid = rid[0] if isinstance(rid, list) else rid
    assert persist.valid_id(rid)
    for _ in range(2):
        at.button(key="demo.step").click().run()
    assert at_iteration(at) == 20
    assert (run_dir / f"{rid}.demo.pt").is_file()  # saved when the Step stopped

    again = open_page("pages/demo.py", {"seed": "3", persist.PARAM: rid})
    assert at_iteration(again) == 20
    assert any("continues from step 20" in w.value for w in again.warning), [w.value for w in again.warning]
    fork = again.query_params[persist.PARAM]
    fork = fork[0] if isinstance(fork, list) else fork
    assert fork != rid and (run_dir / f"{fork}.demo.pt").is_file()  # its own id, saved at once
    before = (run_dir / f"{rid}.demo.pt").read_bytes()
    again.button(key="demo.step").click().run()
    assert (run_dir / f"{rid}.demo.pt").read_bytes() == before  # the run it started from is left as it was
    assert persist.load(fork, "demo", again.session_state["_live.demo"].fingerprint)["iteration"] == 30

    straight = open_page("pages/demo.py", {"seed": "3"})  # the same run, never interrupted
    for _ in range(3):
        straight.button(key="demo.step").click().run()
    a, b = _trainer(again).checkpoint(), _trainer(straight).checkpoint()
    assert a["iteration"] == b["iteration"] == 30
    for k, sd in a["objects"].items():
        for name, v in sd.items():
            if torch.is_tensor(v):
                assert torch.equal(v, b["objects"][k][name]), (k, name)
    assert a["history"] == b["history"]


def test_other_settings_or_a_bad_id_start_a_new_run(run_dir):
    at = open_page("pages/demo.py", {"seed": "3"})
    rid = at.query_params[persist.PARAM]
    rid = rid[0] if isinstance(rid, list) else rid
    at.button(key="demo.step").click().run()
    other = open_page("pages/demo.py", {"seed": "4", persist.PARAM: rid})  # another seed: another run
    assert at_iteration(other) == 0
    bad = open_page("pages/demo.py", {"seed": "3", persist.PARAM: "<script>"})
    assert at_iteration(bad) == 0
    assert any("names no run" in w.value for w in bad.warning), [w.value for w in bad.warning]
    new = bad.query_params[persist.PARAM]
    assert persist.valid_id(new[0] if isinstance(new, list) else new)


# ---- your own data in a link (issue 18) ------------------------------------------------------------

def _kept_data(rng_seed: int = 0):
    """A data set kept on this server's disk as an upload would keep it, and never registered here: the name is
    new (a random digest), so only the file can bring it back."""
    import numpy as np

    digest = np.random.default_rng().bytes(5).hex()
    name = f"custom:{digest}"
    pts = torch.as_tensor(np.random.default_rng(rng_seed).normal(size=(300, 2)) * (1, 0.3), dtype=torch.float32)
    scaling = {"center": (1.0, 2.0), "scale": 0.5, "n_points": 300, "n_used": 0}
    assert persist.save_data(name, pts, "uploaded blobs.csv", scaling)
    return name, pts


def test_a_kept_data_set_reads_back_by_its_name_only(run_dir):
    name, pts = _kept_data()
    back = persist.load_data(name)
    assert torch.equal(back["points"], pts) and back["description"] == "uploaded blobs.csv"
    assert persist.load_data("custom:0123456789") is None  # not kept here
    for bad in ("custom:../../etc", "ring8", "custom:ABCDEF0123", name + "0"):
        assert persist.load_data(bad) is None and not persist.save_data(bad, pts, "x", {})
    (run_dir / f"{name.split(':')[1]}.data.pt").write_bytes(b"damaged")
    assert persist.load_data(name) is None


def test_a_link_to_your_own_data_opens_it_and_shares_it_again(run_dir):
    from dgm.core.userdata import EmpiricalKDE

    name, pts = _kept_data()
    at = open_page("pages/gan.py", params={"data": name, "seed": "0", "steps": "10"})
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    t = at.session_state["_live.gan"].trainer
    assert t.config.data == name and isinstance(t.data, EmpiricalKDE) and torch.equal(t.data.points, pts)
    assert at.query_params["data"] == "custom"
    captions = [c.value.replace("\\", "").replace("\u2060", "") for c in at.sidebar.caption]
    assert any("Using your data" in c and "(from a link: uploaded blobs.csv)" in c for c in captions), captions
    links = [c.value for c in at.code if "data=" in c.value]  # the Link popover's two links name the data again
    assert len(links) == 2 and all(f"data=custom%3A{name.split(':')[1]}" in v for v in links), links


def test_a_link_to_data_this_server_does_not_keep_says_so_and_uses_the_default(run_dir):
    at = open_page("pages/gan.py", params={"data": "custom:0123456789", "seed": "0"})
    assert not at.exception
    notes = " ".join(w.value for w in at.warning).replace("\\", "").replace("\u2060", "")
    assert "another server, or too long ago" in notes and "using 'ring8'" in notes
    assert at.session_state["_live.gan"].trainer.config.data == "ring8"
