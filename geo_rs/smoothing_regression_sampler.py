"""Monte Carlo outputs of a regression model under Gaussian noise: the fast batched sampler and its reference.

Both return the outputs ``f(x_i + ε_ij)`` (B, n, m) of a model f: (k, ...) → (k, m) on n noisy copies of
every input i (ε ~ N(0, σ²I)), for randomized smoothing of regression outputs
(:class:`geo_rs.MedianSmooth`).

Noise streams follow :mod:`geo_rs.smoothing_sampler` exactly: input i has its own ``torch.Generator`` on
the model's device, seeded by ``seeds[i]`` (see :func:`regression_stream_seeds`), drawn in blocks of
``min(batch_size, remaining)`` samples, in order, as ``randn(block) * σ + x_i``.
:func:`sample_outputs_naive` is the obvious one-input-at-a-time loop; :func:`sample_outputs` draws the
very same blocks but forwards them in batches that may mix inputs (the chunk plan of
:mod:`geo_rs.smoothing_sampler`), keeps the outputs on the device and copies nothing to the host.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import check_memory
from .errors import UserError
from .smoothing_sampler import _full_block_chunks, model_placement, pack_partial_blocks
from .smoothing_stats import SeedLike, stream_seeds

__all__ = ["regression_stream_seeds", "sample_outputs", "sample_outputs_naive"]


def regression_stream_seeds(
    generator: SeedLike, num_inputs: int, input_ids: Sequence[int] | None = None
) -> list[int]:
    """Seeds of the per-input noise streams.

    Args:
        generator: int seed, ``torch.Generator`` (advanced by this call) or None (torch's global RNG).
        num_inputs: B.
        input_ids: optional (B,) non-negative ints naming the inputs (e.g. dataset indices). With ids,
            input i's stream depends only on ``(base seed, input_ids[i])`` — not on its position in the
            batch nor on which other inputs share the call — so a dataset certified in any partition
            (resumed runs, workers) sees the same noise. The base seed is the int seed itself, or one
            value drawn from the generator / global RNG. Without ids, seeds are drawn in order as in
            :class:`geo_rs.Smooth` (they then depend on the position in the batch).

    Returns:
        ``num_inputs`` non-negative ints < 2⁶².
    """
    if input_ids is None:
        return stream_seeds(generator, num_inputs)
    ids = [int(i) for i in np.asarray(input_ids).reshape(-1)]
    if len(ids) != num_inputs:
        raise UserError(f"input_ids must have one id per input ({num_inputs}), got {len(ids)}")
    if any(i < 0 for i in ids):
        raise UserError(f"input_ids must be non-negative integers, got min {min(ids)}")
    if isinstance(generator, int | np.integer) and not isinstance(generator, bool):
        base = int(generator) % 2**64
    else:
        base = stream_seeds(generator, 1)[0]
    seeds = []
    for i in ids:  # SeedSequence mixes (base, id) into well-separated streams
        words = np.random.SeedSequence([base, i]).generate_state(2, dtype=np.uint32)
        seeds.append((int(words[0]) << 30) ^ int(words[1]))
    return seeds


def check_outputs(outputs: object, batch: int, num_outputs: int | None) -> int:
    """Raise a UserError unless ``outputs`` is a float tensor (batch, m); returns m."""
    if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2 or len(outputs) != batch:
        got = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
        raise UserError(f"model must return outputs of shape (batch, m) with batch = {batch}, got {got}")
    if not outputs.is_floating_point():
        raise UserError(f"model must return floating-point outputs, got dtype {outputs.dtype}")
    if num_outputs is not None and outputs.shape[1] != num_outputs:
        raise UserError(f"model returned {outputs.shape[1]} outputs per input, earlier {num_outputs}")
    return int(outputs.shape[1])


def _allocate(num_rows: int, num_outputs: int, like: torch.Tensor) -> torch.Tensor:
    check_memory(
        num_rows * num_outputs * like.element_size(), f"{num_rows:,} samples × {num_outputs} outputs"
    )
    return torch.empty((num_rows, num_outputs), dtype=like.dtype, device=like.device)


def _mixed_indices(
    chunks: list[list[tuple[int, int]]], n: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """For every chunk that mixes inputs: per sample, its input index and its output row (input s's last,
    partial block sits at rows ``s·n + n − size … s·n + n − 1``). Built on the host and copied to the
    device in one transfer, so a mixed chunk costs one gather and one scatter kernel."""
    if not chunks:
        return []
    inputs = np.concatenate([np.full(size, s) for chunk in chunks for s, size in chunk])
    rows = np.concatenate([np.arange(s * n + n - size, s * n + n) for chunk in chunks for s, size in chunk])
    lengths = [sum(size for _, size in chunk) for chunk in chunks]
    both = torch.from_numpy(np.stack([inputs, rows]).astype(np.int64)).to(device)
    return list(zip(*(part.split(lengths) for part in both), strict=True))


@torch.inference_mode()
def sample_outputs(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    n: int,
    sigma: float,
    batch_size: int,
    seeds: Sequence[int],
    progress: bool | None = None,
    desc: str = "smoothing",
) -> torch.Tensor:
    """Outputs of ``model`` on ``n`` noisy copies of every input, batched across inputs.

    Args:
        model: maps (k, ...) to outputs (k, m).
        x: (B, ...) float inputs (validated by the caller); cast to the model's device and float dtype.
        n: samples per input.
        sigma: noise standard deviation.
        batch_size: largest forward batch.
        seeds: (B,) stream seeds (:func:`regression_stream_seeds`).
        progress: tqdm bar; None shows it for ≥ 20 batches when stderr is a terminal.
        desc: label of the progress bar.

    Returns:
        (B, n, m) tensor on the model's device, in the dtype of its outputs; row (i, j) is the output on
        the j-th sample of input i's stream.
    """
    device, dtype = model_placement(model, x)
    x = x.to(device, dtype)
    num_inputs = len(x)
    if num_inputs == 0 or n == 0:
        return torch.zeros((num_inputs, n, 0), dtype=dtype, device=device)
    sizes = [n] * num_inputs
    packed = pack_partial_blocks(sizes, batch_size)
    mixed = _mixed_indices([c for c in packed if len(c) > 1], n, device)
    num_full = num_inputs * (n // batch_size)
    chunks = itertools.chain(_full_block_chunks(sizes, batch_size), packed)
    largest = batch_size if num_full else max(sum(size for _, size in chunk) for chunk in packed)
    buffer = torch.empty((largest, *x.shape[1:]), dtype=x.dtype, device=device)
    generators: dict[int, torch.Generator] = {}
    next_row = [s * n for s in range(num_inputs)]
    out: torch.Tensor | None = None
    num_outputs: int | None = None
    mixed_index = 0
    show = progress if progress is not None else (num_full + len(packed) >= 20 and sys.stderr.isatty())
    with tqdm(total=n * num_inputs, desc=desc, unit="sample", unit_scale=True, disable=not show) as bar:
        for chunk in chunks:
            start = 0
            for stream, size in chunk:  # one generator call per block: the reference's draw order
                gen = generators.get(stream)
                if gen is None:
                    gen = generators[stream] = torch.Generator(device=device).manual_seed(int(seeds[stream]))
                buffer[start : start + size].normal_(generator=gen)
                start += size
            batch = buffer[:start]
            batch.mul_(sigma)  # randn, ×σ, +x: the reference's float operations in the same order
            if len(chunk) == 1:
                batch.add_(x[chunk[0][0]])
            else:
                batch.add_(x.index_select(0, mixed[mixed_index][0]))
            y = model(batch)
            if num_outputs is None:  # shape is host metadata: no device sync
                num_outputs = check_outputs(y, start, None)
                out = _allocate(num_inputs * n, num_outputs, y)
            elif y.shape != (start, num_outputs):
                check_outputs(y, start, num_outputs)
            if len(chunk) == 1:
                stream = chunk[0][0]
                out[next_row[stream] : next_row[stream] + start] = y
                next_row[stream] += start
            else:
                out.index_copy_(0, mixed[mixed_index][1], y.to(out.dtype))
                mixed_index += 1
            bar.update(start)
    return out.view(num_inputs, n, num_outputs)


@torch.inference_mode()
def sample_outputs_naive(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    n: int,
    sigma: float,
    batch_size: int,
    seeds: Sequence[int],
) -> torch.Tensor:
    """Reference for :func:`sample_outputs`: one input at a time, blocks in order; same result."""
    device, dtype = model_placement(model, x)
    rows: list[torch.Tensor] = []
    num_outputs: int | None = None
    for i in range(len(x)):
        x_i = x[i].to(device, dtype)
        gen = torch.Generator(device=device).manual_seed(int(seeds[i]))
        outputs = []
        remaining = n
        while remaining > 0:
            this_batch = min(batch_size, remaining)
            remaining -= this_batch
            batch = x_i.unsqueeze(0).repeat((this_batch,) + (1,) * x_i.ndim)
            noise = torch.randn(batch.shape, generator=gen, device=device, dtype=x_i.dtype) * sigma
            y = model(batch + noise)
            num_outputs = check_outputs(y, this_batch, num_outputs)
            outputs.append(y)
        rows.append(torch.cat(outputs) if outputs else torch.zeros((0, 0), dtype=dtype, device=device))
    if not rows or n == 0:
        return torch.zeros((len(x), n, 0), dtype=dtype, device=device)
    return torch.stack(rows)
