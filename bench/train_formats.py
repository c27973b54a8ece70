"""Training-step throughput by memory format and precision on this machine's CPU (or GPU):
what picked channels-last for training (model.training.loop.CHANNELS_LAST).

    python -m bench.train_formats --arch mobilenetv4_conv_small resnet18 --size 112 144 --threads 2
"""
from __future__ import annotations

import argparse
import sys
import time


def step_throughput(arch: str, size_hw: tuple[int, int], channels_last: bool, bf16: bool,
                    batch: int = 64, steps: int = 4, device: str = "cpu") -> float:
    """Images/s of forward + backward + AdamW steps on random data (two untimed warm-up steps)."""
    import torch

    from model.nets import tv_compat  # noqa: F401  (before timm)
    import timm

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = timm.create_model(arch, num_classes=7).to(device, memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, *size_hw, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 7, (batch,), device=device)

    def step():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(), step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.train_formats", description=__doc__.split("\n")[0])
    ap.add_argument("--arch", nargs="+", default=["mobilenetv4_conv_small"])
    ap.add_argument("--size", type=int, nargs=2, default=(112, 144), metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"| arch | memory format | precision | images/s ({args.device}, {torch.get_num_threads()} threads, "
          f"batch {args.batch}, {args.size[0]}x{args.size[1]}) |\n|---|---|---|---:|")
    for arch in args.arch:
        for bf16 in (False, True):
            for cl in (False, True):
                ips = step_throughput(arch, tuple(args.size), cl, bf16, args.batch, args.steps, args.device)
                print(f"| {arch} | {'channels-last' if cl else 'contiguous'} | {'bf16 autocast' if bf16 else 'fp32'} "
                      f"| {ips:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
