"""What every training run shares: a run folder with the resolved config, a resumable state
file apart from the inference weights, a metrics log, and the LR schedule.

Rerunning the same command on the same run folder resumes from `state.pt`; a different config
in that folder is refused rather than silently mixed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from training import config as config_io


class RunFolder:
    def __init__(self, root: Path | str, cfg: Any) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        cfg_path = self.root / "config.json"
        self.state_path = self.root / "state.pt"
        # A folder whose earlier start failed before its first checkpoint (a wrong --data, say)
        # holds a config that governs nothing: a corrected command takes it over.
        trained = self.state_path.exists() or (self.root / "model.pt").exists()
        extended_from = None
        if cfg_path.exists() and trained:
            old, new = json.loads(cfg_path.read_text()), json.loads(json.dumps(config_io.to_dict(cfg)))
            if old != new:
                # more steps for a run that is still improving: the one change that mixes nothing
                # (the schedule becomes the new total's: the LR rises to where the longer run has it)
                if {**old, "steps": None} != {**new, "steps": None} or new.get("steps", 0) <= old.get("steps", 0):
                    raise config_io.ConfigError(
                        f"{cfg_path} holds a different config; use another --out or delete the folder to start "
                        "over (only `steps` may be raised, to train a run further)"
                    )
                extended_from = old["steps"]
                config_io.save(cfg, cfg_path)
        else:
            config_io.save(cfg, cfg_path)
        self._log = (self.root / "log.jsonl").open("a")
        self._tb = _tensorboard(self.root / "tb")
        if extended_from is not None:
            self.log(extended_from, extended_to=new["steps"])

    def log(self, step: int, **values: float) -> None:
        self._log.write(json.dumps({"step": step, "time": round(time.time(), 3), **values}) + "\n")
        self._log.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def save_state(self, step: int, **objects: Any) -> None:
        """Atomically write the resumable state (modules/optimisers by state_dict)."""
        tmp = self.state_path.with_suffix(".tmp")
        payload = {"step": step}
        payload.update({k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in objects.items()})
        torch.save(payload, tmp)
        tmp.replace(self.state_path)

    def load_state(self, **objects: Any) -> int:
        """Restore objects from state.pt if present; returns the step to continue from."""
        if not self.state_path.exists():
            return 0
        payload = torch.load(self.state_path, map_location="cpu", weights_only=False)
        for k, v in objects.items():
            v.load_state_dict(payload[k])
        return int(payload["step"])

    def saved_step(self) -> int:
        """The step state.pt was saved after (0 without one): a run at its config's steps is finished."""
        if not self.state_path.exists():
            return 0
        return int(torch.load(self.state_path, map_location="cpu", weights_only=False)["step"])

    def snapshot_path(self, step: int) -> Path:
        """Where the EMA weights after `step` steps are kept (snapshots/stepNNNNNN.pt: the quality
        curve reads them, `--snapshot` exports one)."""
        return self.root / "snapshots" / f"step{step:06d}.pt"

    def save_snapshot(self, step: int, module: torch.nn.Module) -> None:
        path = self.snapshot_path(step)
        path.parent.mkdir(exist_ok=True)
        torch.save(module.state_dict(), path)

    def close(self) -> None:
        self._log.close()
        if self._tb is not None:
            self._tb.close()


def load_trained(run_dir: Path, cfg_type: type, build) -> tuple[torch.nn.Module, Any]:
    """(model in eval mode, its run config) from a finished run folder's config.json + model.pt."""
    cfg = config_io.load(cfg_type, Path(run_dir) / "config.json")
    model = build(cfg.model)
    model.load_state_dict(torch.load(Path(run_dir) / "model.pt", map_location="cpu"))
    return model.eval(), cfg


def _tensorboard(path: Path):
    """TensorBoard event files when the `tensorboard` package is installed; the JSONL log always."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


def warmup_cosine(step: int, warmup: int, total: int, floor: float = 0.05) -> float:
    """LR multiplier: linear warm-up, then cosine decay to `floor`."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
