"""Batches per second of `TrainBatches`, to set beside the train step's steps per second.

Usage:
  python experiments/bench_input_pipeline.py                  # 650 random videos, 64-96 frames
  python experiments/bench_input_pipeline.py --dataset synthetic_faces --data_dir ~/tfds

For each benchmark configuration (video_batch = image_batch = 8, 16, 32; T = 16; stride 2) it
times `batch(step)` called in a loop on one thread, and the prefetching `iterate()` with 1 and 2
worker threads drained as fast as possible. It prints one JSON line per measurement, then a table. A trainer whose step
takes longer than 1 / (iterate batches/s) never waits for data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vice_gan import labels  # noqa: E402
from vice_gan.datasets import input_pipeline  # noqa: E402

BATCH_SIZES = (8, 16, 32)


def random_table(num_videos: int, min_frames: int, max_frames: int, seed: int = 0):
    """A VideoTable of random pixels; 50 subjects, like the usable MUG set."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_frames, max_frames + 1, num_videos)
    # One buffer filled in one call; the table keeps views of it (no copy).
    pixels = rng.integers(0, 256, (int(lengths.sum()), 64, 64, 3), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return input_pipeline.VideoTable(
        frames=[pixels[offsets[i] : offsets[i + 1]] for i in range(num_videos)],
        subject=np.arange(num_videos) % 50,
        emotion=rng.integers(0, labels.NUM_EMOTIONS, num_videos),
        take=np.zeros(num_videos),
        num_frames=lengths,
        subject_names=[f"{s:03d}" for s in range(50)],
    )


def time_batches(fn, min_seconds: float, min_batches: int = 5) -> tuple[float, int]:
    """Calls fn(i) for i = 0, 1, ... until both limits pass; returns (batches/s, count)."""
    start, count = time.perf_counter(), 0
    while count < min_batches or time.perf_counter() - start < min_seconds:
        fn(count)
        count += 1
    return count / (time.perf_counter() - start), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="registry name; default: random in-memory videos")
    parser.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
    parser.add_argument("--manual_dir", default=None)
    parser.add_argument("--num_videos", type=int, default=650)
    parser.add_argument("--video_length", type=int, default=16)
    parser.add_argument("--frame_stride", type=int, default=2)
    parser.add_argument(
        "--threads", default="1,2", help="comma-separated iterate() worker thread counts"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()

    span = input_pipeline.clip_span(args.video_length, args.frame_stride)
    start = time.perf_counter()
    if args.dataset:
        from vice_gan.datasets import registry  # noqa: PLC0415 (TFDS only when asked)

        table = registry.load_videos(args.dataset, args.data_dir, args.manual_dir, min_frames=span)
        source = args.dataset
    else:
        table = random_table(args.num_videos, 64, 96)
        source = f"random {args.num_videos} videos x 64-96 frames"
    print(
        f"# {source}: {len(table)} videos, {len(table.pixels)} frames "
        f"({table.pixels.nbytes / 2**20:.0f} MiB) in {time.perf_counter() - start:.1f} s; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    indices = np.flatnonzero(table.emotion < labels.NUM_EMOTIONS)
    rows = []
    for size in BATCH_SIZES:
        batches = input_pipeline.TrainBatches(
            table, indices, size, size, args.video_length, args.frame_stride, seed=0
        )
        batches.batch(0)  # warm up allocator and page cache
        nbytes = sum(v.nbytes for v in batches.batch(0).values())
        rates = {"batch": time_batches(batches.batch, args.seconds)[0]}
        for threads in (int(t) for t in args.threads.split(",")):
            stream = batches.iterate(num_threads=threads)
            next(stream)
            rates[f"iterate_{threads}thread"] = time_batches(
                lambda _, s=stream: next(s), args.seconds
            )[0]
            stream.close()
        for mode, rate in rates.items():
            row = {
                "source": source,
                "video_batch": size,
                "image_batch": size,
                "video_length": args.video_length,
                "frame_stride": args.frame_stride,
                "mode": mode,
                "batches_per_s": round(rate, 1),
                "ms_per_batch": round(1000 / rate, 2),
                "MiB_per_s": round(rate * nbytes / 2**20),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{'batch':>5}  {'mode':<18} {'batches/s':>10} {'ms/batch':>9} {'MiB/s':>7}")
    for row in rows:
        print(
            f"{row['video_batch']:>5}  {row['mode']:<18} {row['batches_per_s']:>10.1f} "
            f"{row['ms_per_batch']:>9.2f} {row['MiB_per_s']:>7}"
        )


if __name__ == "__main__":
    main()
