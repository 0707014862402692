"""What the speed benchmarks share (bench/throughput.py, bench/abdomen_speed.py): the bare training
step of a network, and an ``sfda`` command timed in a fresh process."""

from __future__ import annotations

import subprocess
import sys
import time

import torch

from sfda.losses import cross_entropy
from sfda.nets import build_net

BATCH = 12


def bare_step(size: int, steps: int, net: str = "enet", net_args: dict | None = None, batch: int = BATCH) -> float:
    """Slices/s of forward + backward + Adam step on batches already in memory."""
    torch.manual_seed(0)
    net_args = net_args or {"in_channels": 1, "num_classes": 2}
    model = build_net(net, **net_args).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, net_args.get("num_classes", 2), (batch, size, size))
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss = cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def child_cli(args: list[str]) -> dict:
    """``sfda <args>`` in a fresh process: exit code, seconds, peak RSS (VmHWM: ru_maxrss would
    report this large parent's size, since it survives exec), and the error line if any."""
    code = ("import sys, time; from sfda.cli import main; t = time.perf_counter(); "
            f"rc = main({args!r}); s = time.perf_counter() - t; "
            "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]; "
            "print('RESULT', rc, s, hwm)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")]
    if not line:
        return {"failed": out.stderr.strip().splitlines()[-1:] or ["no output"]}
    _, rc, sec, kib = line[0].split()
    err = [x for x in out.stderr.splitlines() if x.strip()]
    return {"rc": int(rc), "seconds": float(sec), "peak_rss_mib": int(kib) / 1024,
            "error": err[-1] if int(rc) and err else ""}
