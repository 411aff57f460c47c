"""What every study shares: the machine it ran on, and statistics over seeds."""

from __future__ import annotations

import os
import platform
from datetime import date

import numpy as np
from scipy import stats


def machine() -> str:
    """The machine and date, for every report."""
    import torch

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.machine()} x{os.cpu_count()} CPUs{gpu}, torch {torch.__version__}, {date.today()}"


def paired_difference(a: list[float], b: list[float]) -> dict:
    """Mean of the paired differences a - b (one pair per seed) with its 95 % t interval; `n` pairs.
    The interval is None with fewer than two pairs."""
    d = np.asarray(a, float) - np.asarray(b, float)
    out: dict = {"n": len(d), "mean": float(d.mean()) if len(d) else float("nan"), "ci95": None}
    if len(d) > 1:
        half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
        out["ci95"] = [out["mean"] - half, out["mean"] + half]
    return out
