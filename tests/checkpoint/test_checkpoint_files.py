"""Checkpoint files: weights_only reads, content checksums, atomic writes, damage-aware resume candidates."""

import logging
import os

import fastreid_clip  # noqa: F401  (before fastreid)
import pytest
import torch

from fastreid_clip.checkpoint import (CheckpointError, ClipCheckpointer, atomic_torch_save, atomic_write_text,
                                      content_digest, read_checkpoint, read_training_checkpoint)
from fastreid_clip.checkpoint.files import CHECKSUM_KEY


class _RunsCodeWhenUnpickled:
    """An object whose unpickling creates a marker file (what a malicious checkpoint would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _content(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(4, 3, generator=g), "b": torch.zeros(3, dtype=torch.bfloat16),
                      "step": torch.tensor(5)},
            "optimizer": {"state": {0: {"exp_avg": torch.randn(4, 3, generator=g)}},
                          "param_groups": [{"lr": 1e-3, "params": [0], "betas": (0.9, 0.999)}]},
            "lr_sched": {"last_epoch": 2, "base_lrs": [1e-3]}, "stage": "image", "epoch": 1}


def test_digest_depends_on_every_value_and_not_on_key_order():
    a = _content()
    assert content_digest(a) == content_digest(dict(reversed(list(a.items()))))
    b = _content()
    b["model"]["w"][2, 1] += 1e-6  # one float changes
    c = _content()
    c["optimizer"]["param_groups"][0]["lr"] = 2e-3
    d = _content()
    d["model"]["b"] = d["model"]["b"].float()  # same values, other dtype
    e = _content()
    e["epoch"] = 2
    digests = {content_digest(x) for x in (a, b, c, d, e)}
    assert len(digests) == 5
    assert content_digest({**a, CHECKSUM_KEY: "anything"}) == content_digest(a)  # its own entry is left out


def test_atomic_save_round_trip_records_and_verifies_checksum(tmp_path):
    path = str(tmp_path / "ckpt.pth")
    atomic_torch_save(_content(), path)
    data = read_checkpoint(path)
    assert data[CHECKSUM_KEY] == content_digest(_content())
    assert torch.equal(data["model"]["w"], _content()["model"]["w"])
    assert [f for f in os.listdir(tmp_path)] == ["ckpt.pth"]  # no temporary file left
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_wrong_checksum_is_damage(tmp_path):
    path = str(tmp_path / "ckpt.pth")
    data = _content()
    data[CHECKSUM_KEY] = content_digest(_content(seed=1))
    torch.save(data, path)
    with pytest.raises(CheckpointError, match=r"ckpt.pth' is damaged: its content checksum"):
        read_checkpoint(path)


def test_flipped_tensor_byte_is_detected(tmp_path):
    path = str(tmp_path / "ckpt.pth")
    data = _content()
    data["model"]["w"] = torch.full((256,), 1.5)  # a long, recognisable run of bytes in the file
    atomic_torch_save(data, path)
    raw = bytearray(open(path, "rb").read())
    needle = torch.full((8,), 1.5).numpy().tobytes()
    at = raw.find(needle)
    assert at >= 0
    raw[at + 3] ^= 0x01
    open(path, "wb").write(bytes(raw))
    with pytest.raises(CheckpointError, match="ckpt.pth"):  # the zip reader or our checksum refuses it
        read_checkpoint(path)


def test_empty_truncated_and_random_files_are_named(tmp_path):
    good = str(tmp_path / "good.pth")
    atomic_torch_save(_content(), good)
    empty, truncated, junk = (str(tmp_path / n) for n in ("empty.pth", "truncated.pth", "junk.pth"))
    open(empty, "wb").close()
    blob = open(good, "rb").read()
    open(truncated, "wb").write(blob[: len(blob) // 2])
    open(junk, "wb").write(os.urandom(5000))
    with pytest.raises(CheckpointError, match=r"empty.pth' is empty \(0 bytes\)"):
        read_checkpoint(empty)
    with pytest.raises(CheckpointError, match=r"truncated.pth' \([\d,]+ bytes\) cannot be read: it is a truncated"):
        read_checkpoint(truncated)
    with pytest.raises(CheckpointError, match=r"junk.pth' \(5,000 bytes\) cannot be read: it is not a torch"):
        read_checkpoint(junk)
    # --eval-only's reader gives the same reasons, naming the key
    with pytest.raises(CheckpointError, match=r"\(MODEL.WEIGHTS\) '.*empty.pth' is empty"):
        read_training_checkpoint(empty)


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "code_ran"
    path = str(tmp_path / "evil.pth")
    torch.save({**_content(), "extra": _RunsCodeWhenUnpickled(str(marker))}, path)
    with pytest.raises(CheckpointError, match="evil.pth' holds pickled objects other than tensors.*first: io.open"):
        read_checkpoint(path)
    assert not marker.exists()


def test_failed_write_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "last_checkpoint")
    atomic_write_text("model_a.pth", path)

    class Boom(RuntimeError):
        pass

    class Unsaveable:
        def __reduce__(self):
            raise Boom()

    with pytest.raises(Boom):
        atomic_torch_save({"x": Unsaveable()}, str(tmp_path / "model_a.pth"), checksum=False)
    assert open(path).read() == "model_a.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint"]  # neither a partial file nor a temporary one


def _checkpointer_dir(tmp_path):
    """Three resumable checkpoints, oldest to newest: a, b, c; last_checkpoint names c."""
    model = torch.nn.Linear(3, 2)
    ckpt = ClipCheckpointer(model, str(tmp_path), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    ckpt.checkpointables["lr_sched"] = torch.optim.lr_scheduler.StepLR(ckpt.checkpointables["optimizer"], 1)
    for i, name in enumerate("abc"):
        with torch.no_grad():
            model.weight.fill_(i)
        ckpt.save(f"model_{name}", stage="train", epoch=i)
        os.utime(tmp_path / f"model_{name}.pth", (1000 + i, 1000 + i))
    return ckpt


def test_resume_candidate_is_the_tagged_checkpoint(tmp_path):
    ckpt = _checkpointer_dir(tmp_path)
    path, data = ckpt.newest_valid_checkpoint()
    assert os.path.basename(path) == "model_c.pth" and data["epoch"] == 2


def test_damaged_tagged_checkpoint_falls_back_to_newest_valid(tmp_path, caplog_fastreid):
    ckpt = _checkpointer_dir(tmp_path)
    blob = open(tmp_path / "model_c.pth", "rb").read()
    open(tmp_path / "model_c.pth", "wb").write(blob[:100])  # truncated
    open(tmp_path / "model_b.pth", "wb").close()  # 0 bytes
    open(tmp_path / ".tmp-model_d.pth.123.abcd", "wb").write(b"partial")  # left by a kill during a save
    path, data = ckpt.newest_valid_checkpoint()
    assert os.path.basename(path) == "model_a.pth" and data["epoch"] == 0
    text = caplog_fastreid.text
    assert "model_c.pth" in text and "truncated" in text and "model_b.pth" in text and "0 bytes" in text
    assert "Falling back to" in text and "model_a.pth" in text
    assert not (tmp_path / ".tmp-model_d.pth.123.abcd").exists()


def test_no_valid_checkpoint_means_a_fresh_start_with_a_warning(tmp_path, caplog_fastreid):
    ckpt = _checkpointer_dir(tmp_path)
    for name in "abc":
        open(tmp_path / f"model_{name}.pth", "wb").close()
    assert ckpt.newest_valid_checkpoint() == (None, None)
    assert "No valid checkpoint" in caplog_fastreid.text


def test_weights_only_file_without_training_state_is_not_resumed(tmp_path, caplog_fastreid):
    ckpt = _checkpointer_dir(tmp_path)
    torch.save({"model": {"weight": torch.zeros(2, 3)}}, tmp_path / "model_z.pth")
    atomic_write_text("model_z.pth", str(tmp_path / "last_checkpoint"))
    path, _ = ckpt.newest_valid_checkpoint()
    assert os.path.basename(path) == "model_c.pth"
    assert "not a training checkpoint" in caplog_fastreid.text


@pytest.fixture
def caplog_fastreid(caplog):
    """Records of the fastreid_clip loggers (they hand their records to the ``fastreid`` logger)."""
    logger = logging.getLogger("fastreid")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
