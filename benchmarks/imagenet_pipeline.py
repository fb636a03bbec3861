"""Decoding-and-augmentation throughput of the ImageNet input pipelines, per CPU core.

    python benchmarks/imagenet_pipeline.py                    # the 1,000 shared photos
    python benchmarks/imagenet_pipeline.py --short_side=0,375 --parallel=1,2,4

Reads the real ImageNet photos of `--archive` (default: the shared
`imagenet-1k-samples.tar.gz`, one photo per class, short side at most 256 px)
as an ILSVRC folder and times full passes of the pipelines of `--pipelines`:

- `train`: `imagenet_train_pipeline` as it is now (random-resized crop to 224
  decoded from the window only, area resize, flip, normalization);
  `train_bilinear` the same with `resize="bilinear"` (antialiased, as PIL and
  torchvision), `train_uint8` with `normalize=False` (uint8 out, normalized by
  the model);
- `train_bilinear_uint8`: both options (not in the default list);
- `eval`: `imagenet_eval_pipeline` (decode, resize to 256, center crop 224,
  normalization).

The column "relative to train" divides images per CPU-second by that of
`train` (`eval` for `eval`) on the same photos and thread count. The
pipelines as they were before 2026-12-03, and how they compared, are in
docs/benchmarks.md.

Each entry runs on a private tf.data thread pool of `num_parallel_calls`
threads with no intra-op parallelism, so wall-clock images/s divided by that
count is the rate of one core when the machine is otherwise idle; images per
CPU-second of this process (all its threads) is the rate of one core that
depends much less on other jobs. `--short_side` lists the photo sizes: 0 is the
photos as stored, another value re-encodes them first with that short side
(upscaled or downscaled, antialiased, JPEG quality 90), closer to the full-size
ImageNet photos (most are 500 x 375).

Files are read from the page cache after the warm-up pass: the numbers are
decoding and augmentation, not disk. Entries are interleaved round-robin over
`--repeats` rounds and the median is reported; on a loaded machine the
wall-clock rates are a lower bound.
"""

import os
import pathlib
import platform
import statistics
import sys
import tarfile
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kerasdistill import data

SHARED = pathlib.Path(os.environ.get("KERASDISTILL_SHARED", REPO.parent / "shared"))

flags.DEFINE_string(
    "archive", str(SHARED / "data" / "imagenet-1k-samples.tar.gz"),
    "A .tar.gz of <wnid>/*.JPEG folders (the shared ImageNet samples).",
)
flags.DEFINE_list("parallel", ["1", "2"], "num_parallel_calls values (each also the thread count).")
flags.DEFINE_list(
    "pipelines",
    ["train", "train_bilinear", "train_uint8", "eval"],
    "Pipelines to time (see the module docstring).",
)
flags.DEFINE_integer("batch_size", 64, "Images per batch.")
flags.DEFINE_integer("repeats", 3, "Timed passes per entry, interleaved; the median is reported.")
flags.DEFINE_list(
    "short_side", ["0"], "Photo sizes, each a short side to re-encode the photos with first "
    "(0: as they are); one table each."
)
flags.DEFINE_float(
    "gpu_rate", 3000.0, "Training images/s of one GPU, for the cores-per-8-GPUs column."
)
flags.DEFINE_string("output", "", "Also write the table, as markdown, to this file.")
FLAGS = flags.FLAGS


def _train(**kwargs):
    return lambda dataset, n, batch: data.imagenet_train_pipeline(
        dataset, batch_size=batch, seed=0, num_parallel_calls=n, threads=n, **kwargs
    )


PIPELINES = {
    "train": _train(),
    "train_bilinear": _train(resize="bilinear"),
    "train_uint8": _train(normalize=False),
    "train_bilinear_uint8": _train(resize="bilinear", normalize=False),
    "eval": lambda dataset, n, batch: data.imagenet_eval_pipeline(
        dataset, batch_size=batch, num_parallel_calls=n, threads=n
    ),
}


def _photo_folder(archive, workdir):
    """Extracts `archive` and returns the folder holding its `<wnid>/` folders."""
    workdir.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    (root,) = {path.parent.parent for path in workdir.rglob("*.JPEG")}
    return root


def _reencode(source, target, short_side):
    """Copies every photo of `source` to `target`, resized to `short_side` (JPEG quality 90)."""
    for path in source.rglob("*.JPEG"):
        image = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        size = tf.cast(tf.round(shape * short_side / tf.reduce_min(shape)), tf.int32)
        image = tf.cast(tf.round(tf.image.resize(image, size, antialias=True)), tf.uint8)
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(out), tf.io.encode_jpeg(image, quality=90))
    return target


def _ilsvrc_folder(photos, workdir):
    """An ILSVRC-layout folder whose train/ and val/ both link to `photos`."""
    root = workdir / "ilsvrc"
    root.mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).symlink_to(photos, target_is_directory=True)
    return root


def _time_pass(pipeline):
    """One pass: (images per wall-clock second, images per CPU-second of this process)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    count = 0
    for images, _ in pipeline:
        count += int(images.shape[0])
    return count / (time.perf_counter() - start), count / (time.process_time() - start_cpu)


def _baseline(kind):
    """The entry a pipeline is compared with: the library's default of its kind."""
    return "train" if kind.startswith("train") else "eval"


def main(argv):
    del argv
    parallel = [int(n) for n in FLAGS.parallel]
    sizes = [int(side) for side in FLAGS.short_side]
    unknown = sorted(set(FLAGS.pipelines) - set(PIPELINES))
    if unknown or min(parallel) < 1 or min(sizes) < 0:
        raise ValueError(
            f"--pipelines takes {sorted(PIPELINES)} (got {unknown}); --parallel takes "
            f"positive integers (got {FLAGS.parallel}); --short_side non-negative ones "
            f"(got {FLAGS.short_side})."
        )
    entries = [(side, kind, n) for side in sizes for kind in FLAGS.pipelines for n in parallel]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        photos = _photo_folder(FLAGS.archive, workdir / "stored")
        datasets = {}
        for side in sizes:
            folder = photos
            if side:
                folder = _reencode(photos, workdir / f"short_side_{side}", side)
            datasets[side] = data.load_imagenet_folder(_ilsvrc_folder(folder, workdir / f"{side}"))
        # Drops the last partial batch in training: images counted are those batched.
        pipelines = {
            (side, kind, n): PIPELINES[kind](datasets[side], n, FLAGS.batch_size)
            for side, kind, n in entries
        }
        for entry in entries:  # warm-up: tracing and the page cache
            _time_pass(pipelines[entry])
        rates = {entry: [] for entry in entries}
        for _ in range(FLAGS.repeats):
            for entry in entries:
                rates[entry].append(_time_pass(pipelines[entry]))

    median = {
        entry: tuple(statistics.median(r[i] for r in rates[entry]) for i in range(2))
        for entry in entries
    }
    lines = [
        (f"Batch {FLAGS.batch_size}, {FLAGS.repeats} timed passes per entry (median), all "
         "entries interleaved."),
        (f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), load average "
         f"{os.getloadavg()[0]:.1f} at the end; Python {platform.python_version()}, "
         f"TensorFlow {tf.__version__}."),
    ]
    for side in sizes:
        lines += [
            "",
            (f"{datasets[side].num_train} ImageNet photos"
             f"{f' re-encoded with short side {side}' if side else ' as stored'}:"),
            "",
            ("| pipeline | num_parallel_calls (threads) | images/s (wall) "
             "| images/s per core (wall) | images per CPU-second | relative to train (CPU) "
             f"| cores for 8 GPUs at {FLAGS.gpu_rate:.0f} img/s each (from CPU-seconds) |"),
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for _, kind, n in (entry for entry in entries if entry[0] == side):
            wall, cpu = median[(side, kind, n)]
            base = median.get((side, _baseline(kind), n))
            relative = f"{cpu / base[1]:.2f}x" if base else "-"
            lines.append(
                f"| {kind} | {n} | {wall:.0f} | {wall / n:.0f} | {cpu:.0f} | {relative} "
                f"| {8 * FLAGS.gpu_rate / cpu:.0f} |"
            )
    table = "\n".join(lines)
    print(table)
    if FLAGS.output:
        pathlib.Path(FLAGS.output).write_text(table + "\n")


if __name__ == "__main__":
    app.run(main)
