"""Throughput by precision, batch size, torch.compile and channels_last (docs/experiments/gpu.md).

    python scripts/gpu_throughput.py [--batches 128 512 1024] [--precisions 32-true bf16-mixed 16-mixed]
                                     [--peak-tflops 989] [--out DIR] [--smoke]

Times, on the one device this process sees (CUDA if present, else CPU):
* stage 1: a VQ-VAE training step (forward, reconstruction + VQ losses, backward, AdamW);
* stage 2: a training step of the main job's UNet on latents (loss, backward, AdamW, EMA);
* sampling: guided DDIM-20 (2x batch through the UNet), including the fp32 decode;
for every precision x batch x compile x channels_last combination, with the autocast dtype of
Lightning's precision setting (``16-mixed`` also scales the loss with a ``GradScaler``, as
Lightning does). Stage-2 rows also give model FLOPs per image (counted with
``torch.utils.flop_counter``, forward + backward) and the fraction of the card's bf16 dense peak
those FLOPs reach, so the headroom is visible. ``--smoke`` runs a tiny grid on CPU for the tests.

Writes ``throughput.md`` and ``throughput.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from benchmark import compose_train, median_seconds  # scripts/benchmark.py
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from tinyldm.diffusion import ClassifierFreeGuidance, DDIMSolver
from tinyldm.training.stage2 import module_from_config
from tinyldm.utils.files import write_json, write_text
from tinyldm.utils.instantiate import build

REPO = Path(__file__).resolve().parents[1]
AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
PEAK_BF16_TFLOPS = {
    "H100": 989.0,
    "H200": 989.0,
    "A100": 312.0,
    "L4": 121.0,
    "A10": 125.0,
}  # dense, SXM where it varies


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(
    fn: Callable[[], None], device: torch.device, repeats: int, warmup: int = 2
) -> tuple[float, float]:
    """(median seconds per call after warm-up, seconds of the first call: compilation included)."""
    start = time.perf_counter()
    fn()
    synchronize(device)
    first = time.perf_counter() - start
    return median_seconds(fn, repeats, warmup=warmup - 1), first


def autocast(device: torch.device, precision: str):
    dtype = AUTOCAST[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def training_step(
    loss_fn: Callable[[], torch.Tensor], parameters, device: torch.device, precision: str
) -> Callable[[], None]:
    """One optimizer step as Lightning's precision plugin runs it (GradScaler for 16-mixed)."""
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None

    def step() -> None:
        with autocast(device, precision):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    return step


def stage2_flops_per_image(module, latents: torch.Tensor, labels: torch.Tensor) -> float:
    """Forward + backward FLOPs of one stage-2 training loss, per image (fp32, eager)."""
    with FlopCounterMode(display=False) as counter:
        module.loss(module.denoiser, module.noise_schedule, latents, labels).backward()
    module.denoiser.zero_grad(set_to_none=True)
    return counter.get_total_flops() / latents.shape[0]


def measure(
    device: torch.device,
    precision: str,
    batch: int,
    compiled: bool,
    channels_last: bool,
    repeats: int,
    sample_steps: int,
) -> dict:
    cfg = compose_train(["model=vqvae", "+experiment=mnist_cond", f"diffusion.channels_last={channels_last}"])
    row = {"precision": precision, "batch": batch, "compile": compiled, "channels_last": channels_last}

    network = build(OmegaConf.to_container(cfg.model.net, resolve=True)).to(device)  # the main job's VQ-VAE
    images = torch.rand(batch, 1, 32, 32, device=device) * 2 - 1  # (B, 1, H, W)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if compiled:
        network.compile()

    def stage1_loss() -> torch.Tensor:
        out = network(images)
        return F.mse_loss(out.reconstruction.float(), images) + sum(out.losses.values())

    seconds, first = seconds_per_call(
        training_step(stage1_loss, network.parameters(), device, precision), device, repeats
    )
    row.update(stage1_img_s=batch / seconds, stage1_first_s=first)

    module = module_from_config(cfg, (4, 8, 8)).to(device)
    latents = torch.randn(batch, 4, 8, 8, device=device)  # (B, C, h, w) scaled latents
    labels = torch.randint(0, 10, (batch,), device=device)
    flops = stage2_flops_per_image(module, latents[:8], labels[:8])
    if compiled:
        module.denoiser.unet.compile()
    step = training_step(
        lambda: module.loss(module.denoiser, module.noise_schedule, latents, labels),
        module.denoiser.parameters(),
        device,
        precision,
    )

    def stage2_step() -> None:
        step()
        module.ema.update_parameters(module.denoiser)

    seconds, first = seconds_per_call(stage2_step, device, repeats)
    row.update(stage2_img_s=batch / seconds, stage2_first_s=first, stage2_flops_per_image=flops)

    solver, guidance = DDIMSolver(steps=sample_steps), ClassifierFreeGuidance(scale=2.0)
    sample_labels = torch.arange(batch, device=device) % 10

    def sample() -> None:
        with autocast(device, precision):
            module.sample(sample_labels, solver=solver, guidance=guidance, generator=torch.Generator().manual_seed(0))

    seconds, _ = seconds_per_call(sample, device, max(1, repeats // 3), warmup=1)
    row["sample_img_s"] = batch / seconds
    return row


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def table(rows: list[dict], device_name: str, peak: float | None, sample_steps: int) -> str:
    lines = [
        f"Throughput on {device_name} (torch {torch.__version__}); stage-2 FLOPs per image: "
        f"{rows[0]['stage2_flops_per_image'] / 1e6:.1f} MFLOP (forward + backward)"
        + (f"; bf16 dense peak {peak:g} TFLOPS" if peak else ""),
        "",
        f"| precision | batch | compile | channels_last | stage 1 img/s | stage 2 img/s | % of peak | "
        f"DDIM-{sample_steps} img/s | first stage-2 step s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        share = f"{100 * r['stage2_img_s'] * r['stage2_flops_per_image'] / (peak * 1e12):.2f} %" if peak else "-"
        lines.append(
            f"| {r['precision']} | {r['batch']} | {'yes' if r['compile'] else 'no'} | "
            f"{'yes' if r['channels_last'] else 'no'} "
            f"| {r['stage1_img_s']:.0f} | {r['stage2_img_s']:.0f} | {share} | {r['sample_img_s']:.0f} | "
            f"{r['stage2_first_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 512, 1024])
    parser.add_argument("--precisions", nargs="+", default=list(AUTOCAST), choices=list(AUTOCAST))
    parser.add_argument("--compile", nargs="+", default=["no", "yes"], choices=["no", "yes"])
    parser.add_argument("--channels-last", nargs="+", default=["no", "yes"], choices=["no", "yes"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the card's bf16 dense peak (guessed from its name)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gpu_throughput")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny CPU grid (fp32 and bf16, batch 8, eager): for the tests"
    )
    args = parser.parse_args()
    if args.smoke:
        args.batches, args.precisions, args.compile, args.channels_last = (
            [8],
            ["32-true", "bf16-mixed"],
            ["no"],
            ["no", "yes"],
        )
        args.repeats, args.sample_steps = 2, 2
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 rows use TF32 tensor cores, as Lightning users usually do
        torch.backends.cudnn.allow_tf32 = True

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    rows = []
    for precision, batch, compiled, channels_last in itertools.product(
        args.precisions, args.batches, args.compile, args.channels_last
    ):
        torch.manual_seed(0)
        rows.append(
            measure(
                device, precision, batch, compiled == "yes", channels_last == "yes", args.repeats, args.sample_steps
            )
        )
        print(rows[-1], flush=True)
        # written after every row: a run cut short by its deadline keeps the rows it measured
        markdown = table(rows, name, peak_tflops(device, args.peak_tflops), args.sample_steps)
        write_json(args.out / "throughput.json", {"device": name, "rows": rows})
        write_text(args.out / "throughput.md", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
