"""What the Label Studio benchmarks share: a free port and the frames they read."""

from __future__ import annotations

import argparse
import os
import platform
import socket

import torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame_args(ap: argparse.ArgumentParser) -> None:
    """--source, --void-id, --frames and -p: native training frames of a SegNet-layout folder."""
    ap.add_argument("--source", default="../shared/datasets/camvid", help="SegNet-layout folder with classes.json")
    ap.add_argument("--void-id", type=int, default=11)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("-p", "--params", action="append", help="params files (default: params.yaml)")


def print_table(params: list[str] | None, header: list[str], rows: list[str]) -> None:
    """The machine line, then a markdown table (for benchmarks/RESULTS.md)."""
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, params {params}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print("\n".join(rows))
