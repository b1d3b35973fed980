"""Monte Carlo vote counting for randomized smoothing: the fast batched sampler and its reference.

Both return the votes (B, P, C) of a base classifier on noisy copies x_i + ε (ε ~ N(0, σ²I)) of every
input i, for P "phases" of given sizes (CERTIFY: selection n0 and estimation n; PREDICT: one phase).

Noise streams: stream s = i·P + p (input i, phase p) has its own ``torch.Generator`` on the model's
device, seeded by :func:`geo_rs.smoothing_stats.stream_seeds`, and is drawn in blocks of
``min(batch_size, remaining)`` samples, in order, as ``randn(block) * σ + x_i``.
:func:`sample_counts_naive` is the obvious one-input-at-a-time loop of Cohen et al.'s code;
:func:`sample_counts` draws the very same blocks but forwards them in batches that may mix inputs
and phases (:func:`plan_chunks`), keeps the votes on the device and syncs once at the end.
"""
from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import UserError
from .smoothing_stats import SeedLike, stream_seeds

__all__ = ["model_placement", "pack_partial_blocks", "plan_chunks", "sample_counts", "sample_counts_naive"]

Chunk = list[tuple[int, int]]  # [(stream index, number of samples), ...], one forward batch


def plan_chunks(stream_sizes: Sequence[int], batch_size: int) -> list[Chunk]:
    """Group the sample blocks of all noise streams into forward batches of at most ``batch_size``.

    A stream of size m is drawn in blocks of ``batch_size`` samples plus one partial block of
    ``m % batch_size``. Each full block is a batch of its own (listed first, in stream order); the
    partial blocks (the n0 selection samples, the tails) are packed together by
    :func:`pack_partial_blocks`. Every stream's blocks stay in order, which is all the per-stream
    generators need.

    Returns:
        A list of chunks; a chunk is a list of ``(stream, block_size)`` pairs.
    """
    return list(_full_block_chunks(stream_sizes, batch_size)) + pack_partial_blocks(stream_sizes, batch_size)


def _full_block_chunks(stream_sizes: Sequence[int], batch_size: int) -> Iterator[Chunk]:
    # lazy: a large run (10⁴ inputs × 10⁵ samples) has 10⁶ of these
    for stream, size in enumerate(stream_sizes):
        for _ in range(int(size) // batch_size):
            yield [(stream, batch_size)]


def pack_partial_blocks(stream_sizes: Sequence[int], batch_size: int) -> list[Chunk]:
    """Pack the partial blocks ``size % batch_size`` of all streams into few batches of ≤ ``batch_size``.

    First-fit decreasing over the last 16 open batches (linear time; optimal for equal sizes).
    """
    partial = [(stream, int(size) % batch_size) for stream, size in enumerate(stream_sizes)]
    packed: list[Chunk] = []
    loads: list[int] = []
    for stream, size in sorted((item for item in partial if item[1]), key=lambda item: -item[1]):
        for b in range(max(0, len(packed) - 16), len(packed)):
            if loads[b] + size <= batch_size:
                packed[b].append((stream, size))
                loads[b] += size
                break
        else:
            packed.append([(stream, size)])
            loads.append(size)
    return packed


def _mixed_chunk_indices(
    chunks: list[Chunk], num_phases: int, num_classes: int, device: torch.device
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:  # keyed by position in ``chunks``
    """For each chunk that mixes streams: per sample, its input index and ``stream·C`` (flat count offset).

    Built on the host and copied to the device in one transfer, so the sampling loop adds the inputs
    and counts the votes of a mixed chunk with one kernel each instead of one per block.
    """
    mixed = [i for i, chunk in enumerate(chunks) if len(chunk) > 1]
    if not mixed:
        return {}
    streams = torch.tensor([s for i in mixed for s, _ in chunks[i]], dtype=torch.int64)
    sizes = torch.tensor([size for i in mixed for _, size in chunks[i]], dtype=torch.int64)
    per_sample = torch.repeat_interleave(streams, sizes)
    both = torch.stack([per_sample // num_phases, per_sample * num_classes]).to(device)
    lengths = [sum(size for _, size in chunks[i]) for i in mixed]
    return dict(zip(mixed, zip(*(part.split(lengths, dim=0) for part in both), strict=True), strict=True))


def model_placement(model: Callable, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Device and float dtype to sample on: those of the model's first floating parameter (or buffer),
    else ``x``'s (parameter-free models)."""
    if isinstance(model, nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.is_floating_point():
                return tensor.device, tensor.dtype
    return x.device, x.dtype


def check_logits(logits: object, batch: int, num_classes: int) -> None:
    """Raise a UserError unless ``logits`` is a tensor of shape (batch, num_classes)."""
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (batch, num_classes):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserError(
            "base_classifier must return logits of shape (batch, num_classes) = "
            f"({batch}, {num_classes}), got {got}"
        )


@torch.inference_mode()
def sample_counts(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    phase_sizes: Sequence[int],
    sigma: float,
    num_classes: int,
    batch_size: int,
    generator: SeedLike = None,
    progress: bool | None = None,
    desc: str = "smoothing",
) -> np.ndarray:
    """Votes of ``model`` on noisy copies of every input, batched across inputs and phases.

    Args:
        model: maps (k, ...) to logits (k, num_classes).
        x: (B, ...) float inputs (validated by the caller); noise is drawn on the device and in the
            float dtype of the model's parameters (see :func:`model_placement`), x is cast to them.
        phase_sizes: samples per phase, e.g. ``[n0, n]``.
        sigma: noise standard deviation.
        num_classes: C.
        batch_size: largest forward batch.
        generator: int seed, ``torch.Generator`` or None (see :func:`stream_seeds`).
        progress: tqdm bar; None shows it for ≥ 20 batches when stderr is a terminal.
        desc: label of the progress bar.

    Returns:
        int64 array (B, P, C) of votes; row (i, p) sums to ``phase_sizes[p]``.
    """
    phase_sizes = [int(size) for size in phase_sizes]
    num_phases = len(phase_sizes)
    num_streams = len(x) * num_phases
    device, dtype = model_placement(model, x)
    x = x.to(device, dtype)
    seeds = stream_seeds(generator, num_streams)
    if num_streams == 0:
        return np.zeros((len(x), num_phases, num_classes), dtype=np.int64)
    stream_sizes = phase_sizes * len(x)
    packed = pack_partial_blocks(stream_sizes, batch_size)
    mixed = _mixed_chunk_indices(packed, num_phases, num_classes, device)
    num_full = sum(size // batch_size for size in stream_sizes)
    chunks = itertools.chain(_full_block_chunks(stream_sizes, batch_size), packed)
    # Votes stay on the device (index_add_ needs no host sync, unlike bincount on CUDA).
    counts = torch.zeros((num_streams, num_classes), dtype=torch.int64, device=device)
    ones = torch.ones(batch_size, dtype=torch.int64, device=device)
    largest = batch_size if num_full else max(sum(size for _, size in chunk) for chunk in packed)
    buffer = torch.empty((largest, *x.shape[1:]), dtype=x.dtype, device=device)
    generators: dict[int, torch.Generator] = {}
    show = progress if progress is not None else (num_full + len(packed) >= 20 and sys.stderr.isatty())
    checked = False
    total = sum(phase_sizes) * len(x)
    with tqdm(total=total, desc=desc, unit="sample", unit_scale=True, disable=not show) as bar:
        for index, chunk in enumerate(chunks):
            start = 0
            for stream, size in chunk:  # one generator call per block: the reference's draw order
                gen = generators.get(stream)
                if gen is None:
                    gen = generators[stream] = torch.Generator(device=device).manual_seed(seeds[stream])
                buffer[start : start + size].normal_(generator=gen)
                start += size
            batch = buffer[:start]
            # randn, then ×σ, then +x: the reference's float operations in the same order (bitwise equal).
            batch.mul_(sigma)
            if len(chunk) == 1:
                batch.add_(x[chunk[0][0] // num_phases])
            else:
                batch.add_(x.index_select(0, mixed[index - num_full][0]))
            logits = model(batch)
            if not checked:  # shape is host metadata: checking costs no device sync
                check_logits(logits, start, num_classes)
                checked = True
            votes = logits.argmax(dim=1)
            if len(chunk) == 1:
                counts[chunk[0][0]].index_add_(0, votes, ones[:start])
            else:
                counts.view(-1).index_add_(0, mixed[index - num_full][1] + votes, ones[:start])
            bar.update(start)
    return counts.view(len(x), num_phases, num_classes).cpu().numpy()


@torch.inference_mode()
def sample_counts_naive(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    phase_sizes: Sequence[int],
    sigma: float,
    num_classes: int,
    batch_size: int,
    generator: SeedLike = None,
) -> np.ndarray:
    """Reference for :func:`sample_counts`: one input and one phase at a time, Cohen et al.'s loop.

    Same arguments and result; slow (a host sync per batch, no batching across inputs).
    """
    device, dtype = model_placement(model, x)
    seeds = stream_seeds(generator, len(x) * len(phase_sizes))
    counts = np.zeros((len(x), len(phase_sizes), num_classes), dtype=np.int64)
    for i in range(len(x)):
        x_i = x[i].to(device, dtype)
        for p, num in enumerate(phase_sizes):
            gen = torch.Generator(device=device).manual_seed(seeds[i * len(phase_sizes) + p])
            remaining = num
            while remaining > 0:
                this_batch = min(batch_size, remaining)
                remaining -= this_batch
                batch = x_i.unsqueeze(0).repeat((this_batch,) + (1,) * x_i.ndim)
                noise = torch.randn(batch.shape, generator=gen, device=device, dtype=x_i.dtype) * sigma
                logits = model(batch + noise)
                check_logits(logits, this_batch, num_classes)
                counts[i, p] += np.bincount(logits.argmax(dim=1).cpu().numpy(), minlength=num_classes)
    return counts
