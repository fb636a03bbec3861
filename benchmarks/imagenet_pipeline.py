"""Decoding-and-augmentation throughput of the ImageNet input pipelines, per CPU core.

    python benchmarks/imagenet_pipeline.py                    # the 1,000 shared photos
    python benchmarks/imagenet_pipeline.py --short_side=375 --parallel=1,2,4

Reads the real ImageNet photos of `--archive` (default: the shared
`imagenet-1k-samples.tar.gz`, one photo per class, short side at most 256 px)
as an ILSVRC folder and times full passes of `imagenet_train_pipeline`
(random-resized crop to 224 decoded from the window only, flip, normalization)
and `imagenet_eval_pipeline` (decode, resize to 256, center crop 224,
normalization). Each entry runs on a private tf.data thread pool of
`num_parallel_calls` threads with no intra-op parallelism, so wall-clock
images/s divided by that count is the rate of one core when the machine is
otherwise idle; images per CPU-second of this process (all its threads) is
the rate of one core that depends much less on other jobs. `--short_side` first re-encodes the
photos with that short side (JPEG quality 90), closer to the full-size ImageNet
photos (most are 500 x 375).

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

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kerasdistill import data  # noqa: E402

SHARED = pathlib.Path(os.environ.get("KERASDISTILL_SHARED", REPO.parent / "shared"))

flags.DEFINE_string(
    "archive", str(SHARED / "data" / "imagenet-1k-samples.tar.gz"),
    "A .tar.gz of <wnid>/*.JPEG folders (the shared ImageNet samples).",
)
flags.DEFINE_list("parallel", ["1", "2"], "num_parallel_calls values (each also the thread count).")
flags.DEFINE_list("pipelines", ["train", "eval"], "Pipelines to time: train, eval.")
flags.DEFINE_integer("batch_size", 64, "Images per batch.")
flags.DEFINE_integer("repeats", 3, "Timed passes per entry, interleaved; the median is reported.")
flags.DEFINE_integer(
    "short_side", 0, "Re-encode the photos with this short side first (0: as they are)."
)
flags.DEFINE_float(
    "gpu_rate", 3000.0, "Training images/s of one GPU, for the cores-per-8-GPUs column."
)
flags.DEFINE_string("output", "", "Also write the table, as markdown, to this file.")
FLAGS = flags.FLAGS

PIPELINES = {
    "train": lambda dataset, n, batch: data.imagenet_train_pipeline(
        dataset, batch_size=batch, seed=0, num_parallel_calls=n, threads=n
    ),
    "eval": lambda dataset, n, batch: data.imagenet_eval_pipeline(
        dataset, batch_size=batch, num_parallel_calls=n, threads=n
    ),
}


def _photo_folder(archive, workdir):
    """Extracts `archive` and returns the folder holding its `<wnid>/` folders."""
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
    root.mkdir()
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


def main(argv):
    del argv
    parallel = [int(n) for n in FLAGS.parallel]
    unknown = sorted(set(FLAGS.pipelines) - set(PIPELINES))
    if unknown or min(parallel) < 1:
        raise ValueError(
            f"--pipelines takes {sorted(PIPELINES)} (got {unknown}); --parallel takes "
            f"positive integers (got {FLAGS.parallel})."
        )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(tmp)
        photos = _photo_folder(FLAGS.archive, workdir)
        if FLAGS.short_side:
            photos = _reencode(photos, workdir / "reencoded", FLAGS.short_side)
        dataset = data.load_imagenet_folder(_ilsvrc_folder(photos, workdir))
        # Drops the last partial batch in training: images counted are those batched.
        entries = [(kind, n) for kind in FLAGS.pipelines for n in parallel]
        pipelines = {e: PIPELINES[e[0]](dataset, e[1], FLAGS.batch_size) for e in entries}
        for entry in entries:  # warm-up: tracing and the page cache
            _time_pass(pipelines[entry])
        rates = {entry: [] for entry in entries}
        for _ in range(FLAGS.repeats):
            for entry in entries:
                rates[entry].append(_time_pass(pipelines[entry]))

    lines = [
        f"{dataset.num_train} ImageNet photos"
        f"{f' re-encoded with short side {FLAGS.short_side}' if FLAGS.short_side else ' as stored'}"
        f", batch {FLAGS.batch_size}, {FLAGS.repeats} timed passes per entry (median).",
        f"Machine: {os.cpu_count()} CPUs ({platform.machine()}), load average "
        f"{os.getloadavg()[0]:.1f} at the end; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}.",
        "",
        "| pipeline | num_parallel_calls (threads) | images/s (wall) | images/s per core (wall) "
        "| images per CPU-second | cores for 8 GPUs at "
        f"{FLAGS.gpu_rate:.0f} img/s each (from CPU-seconds) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, n in entries:
        wall = statistics.median(rate for rate, _ in rates[(kind, n)])
        cpu = statistics.median(rate for _, rate in rates[(kind, n)])
        lines.append(
            f"| {kind} | {n} | {wall:.0f} | {wall / n:.0f} | {cpu:.0f} "
            f"| {8 * FLAGS.gpu_rate / cpu:.0f} |"
        )
    table = "\n".join(lines)
    print(table)
    if FLAGS.output:
        pathlib.Path(FLAGS.output).write_text(table + "\n")


if __name__ == "__main__":
    app.run(main)
