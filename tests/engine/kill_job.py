"""A short two-stage CLIP-ReID run that SIGKILLs itself at a chosen point (tests/engine/test_kill_resume.py).

    python kill_job.py OUT none                 # run to the end
    python kill_job.py OUT step:image:5         # kill before iteration 5 of stage 'image' (mid-epoch)
    python kill_job.py OUT save:model_image_0002.pth   # kill half-way through writing that checkpoint
    python kill_job.py OUT none --resume        # continue from OUT's checkpoints

A kill is a real ``SIGKILL`` of this process: no Python cleanup, no ``finally`` blocks, as when a machine or a
scheduler ends a job. Not collected by pytest.
"""

import io
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from conftest import TWO_STAGE_CONFIG, TWO_STAGE_SHORT, tiny_cfg  # noqa: E402


def _die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_step(stage_name: str, iteration: int) -> None:
    from fastreid_clip.engine import ClipTrainer

    original = ClipTrainer.run_step

    def run_step(self):
        if self.stages[self.stage_index].name == stage_name and self.iter == iteration:
            _die()
        return original(self)

    ClipTrainer.run_step = run_step


def kill_while_saving(basename: str) -> None:
    """``torch.save`` into a file for ``basename`` writes half of its bytes, syncs them, then the process dies."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        name = os.path.basename(f if isinstance(f, str) else os.readlink(f"/proc/self/fd/{f.fileno()}"))
        if basename not in name:
            return original(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        original(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        _die()

    torch.save = save


def main(output_dir: str, kill: str, resume: bool) -> None:
    from fastreid_clip.engine import ClipTrainer

    if kill.startswith("step:"):
        _, stage, iteration = kill.split(":")
        kill_at_step(stage, int(iteration))
    elif kill.startswith("save:"):
        kill_while_saving(kill.split(":", 1)[1])
    elif kill != "none":
        raise SystemExit(f"unknown kill point {kill!r}")
    cfg = tiny_cfg(output_dir, *TWO_STAGE_SHORT, config=TWO_STAGE_CONFIG)
    cfg.freeze()
    trainer = ClipTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--resume" in sys.argv[3:])
