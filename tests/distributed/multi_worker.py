"""Trains a KD+MSDCRD Distiller as one worker of a two-worker cluster on 127.0.0.1.

Run from the repository root, one process per worker (the strategy must be
created before TensorFlow initializes), and once without `--worker` for the
single-process reference:

    python -m tests.distributed.multi_worker W0.npz --worker=0 --ports=PORT0,PORT1 &
    python -m tests.distributed.multi_worker W1.npz --worker=1 --ports=PORT0,PORT1
    python -m tests.distributed.multi_worker REF.npz

A worker sets `TF_CONFIG` for the cluster `127.0.0.1:PORT0, 127.0.0.1:PORT1`
and trains under `make_strategy("multi_worker")`; the reference trains the
same Distiller on one device. Every run starts from the same weights (built
from a fixed seed), uses the synthetic data, models (synchronized-BatchNorm
student) and hyper-parameters of `replica_equivalence.py`, and feeds the
global batch: a worker's share of it comes from sharding the dataset by data
(`AutoShardPolicy.DATA`: each worker reads the whole dataset and keeps its
slice of every global batch). The output holds the loss the last step logged
(a worker's: that of its share of the batch), the number of replicas, and
every initial (`i/`) and final (`w/`) weight, in `distiller.weights` order.
"""

import argparse
import itertools
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402

from kerasdistill.training import distribute  # noqa: E402
from tests.distributed import replica_equivalence  # noqa: E402

METHODS = ("kd", "msdcrd")
HOST = "127.0.0.1"


def cluster_config(worker, ports):
    """The `TF_CONFIG` value for worker `worker` of a cluster on `HOST:ports`."""
    return json.dumps({
        "cluster": {"worker": [f"{HOST}:{port}" for port in ports]},
        "task": {"type": "worker", "index": worker},
    })


def train(strategy, global_batch, steps):
    """Trains `steps` steps under `strategy`.

    The loop is `fit`'s: `strategy.run(distiller.train_step)` on the batches
    of `experimental_distribute_dataset`, in a `tf.function`. `fit` itself
    fails under `MultiWorkerMirroredStrategy` in Keras 3 (its symbolic build
    reduces a distributed batch across workers and it reduces the scalar logs
    with `strategy.reduce("MEAN", axis=0)`; keras-team/keras#20585), so the
    Distiller's metrics and optimizer are built first from one local batch,
    in the strategy's scope, as `fit` does before its first step.

    Returns:
        `(loss, initial, final)`: the loss logged by the last step and the
        initial and final weights.
    """
    import tensorflow as tf

    ds, labels = replica_equivalence._data(global_batch, with_index=False)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    ds = ds.with_options(options)
    initial = replica_equivalence._build(METHODS, labels, steps).get_weights()
    with strategy.scope():
        distiller = replica_equivalence._build(METHODS, labels, steps)
        distiller.set_weights(initial)
        distiller._symbolic_build(data_batch=next(iter(ds)))

    @tf.function
    def train_step(batch):
        return strategy.run(distiller.train_step, args=(batch,))

    for batch in itertools.islice(strategy.experimental_distribute_dataset(ds), steps):
        logs = train_step(batch)
    loss = strategy.experimental_local_results(logs["loss"])[0]
    return float(loss), initial, [np.asarray(w) for w in distiller.weights]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--worker", type=int, help="This worker's index; omit for the reference.")
    parser.add_argument("--ports", default="", help="Comma-separated ports of workers 0 and 1.")
    parser.add_argument("--global_batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    if args.worker is None:
        strategy = distribute.make_strategy("default")
    else:
        ports = [int(port) for port in args.ports.split(",")]
        if not 0 <= args.worker < len(ports):
            raise ValueError(f"--worker must index --ports {ports}; got {args.worker}.")
        os.environ["TF_CONFIG"] = cluster_config(args.worker, ports)
        strategy = distribute.make_strategy("multi_worker")
    loss, initial, final = train(strategy, args.global_batch, args.steps)
    np.savez(
        args.out,
        loss=loss,
        replicas=strategy.num_replicas_in_sync,
        **{f"i/{i:04d}": value for i, value in enumerate(initial)},
        **{f"w/{i:04d}": value for i, value in enumerate(final)},
    )


if __name__ == "__main__":
    main()
