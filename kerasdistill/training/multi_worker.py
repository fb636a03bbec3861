"""Training and evaluation across workers, where Keras 3's own `fit` and `evaluate` fail.

Under `tf.distribute.MultiWorkerMirroredStrategy`, Keras 3.15's `fit` and
`evaluate` fail (keras-team/keras#20585): their symbolic build reduces a
distributed batch across workers, and they average scalar logs with
`strategy.reduce("MEAN", axis=0)`. `multi_worker_fit` is a drop-in `fit` loop
without either; `evaluate_locally` scores a classifier in one process.
"""


def multi_worker_fit(model, strategy):
    """A `fit` for `model` under `MultiWorkerMirroredStrategy`, where Keras's own fails.

    Keras 3's `fit` and `evaluate` fail across workers (keras-team/keras#20585):
    their symbolic build reduces a distributed batch across workers, and they
    average the scalar logs with `strategy.reduce("MEAN", axis=0)`. This loop
    is `fit`'s without either: the model, optimizer and metrics are built from
    the batches' shapes in the strategy's scope, then `strategy.run(model.train_step)`
    runs in a `tf.function` on the batches of `experimental_distribute_dataset`,
    with the logs averaged over all replicas and the same callback calls as
    `fit`. Each worker reads every batch and keeps its share of it
    (`AutoShardPolicy.DATA`), so a step trains on the global batch one device
    would see. Validation scores the classifier (a Distiller's student) on the
    whole split in every worker, without collectives (`evaluate_locally`).

    Args:
        model: The compiled model, created in `strategy`'s scope.
        strategy: A `tf.distribute.MultiWorkerMirroredStrategy`.

    Returns:
        `fit(x, initial_epoch, epochs, validation_data=None, callbacks=(), verbose=0,
        shuffle=False)`: trains on the `tf.data.Dataset` of batches `x` as
        `model.fit` does (`shuffle` is ignored: `x` is already in order).
    """
    import keras
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    classifier = getattr(model, "student", model)

    @tf.function(jit_compile=model.jit_compile)
    def train_step(batch):
        logs = strategy.run(model.train_step, args=(batch,))
        return {name: strategy.reduce("MEAN", value, axis=None) for name, value in logs.items()}

    def fit(x, initial_epoch, epochs, validation_data=None, callbacks=(), verbose=0, shuffle=False):
        del shuffle
        x = x.with_options(options)
        # Keras's own build, from the batches' shapes: reading a batch would start
        # an iteration and so reshuffle the one trained on. It does nothing once built.
        with strategy.scope():
            model._symbolic_build(data_batch=x.element_spec)
        steps = int(x.cardinality())
        callback_list = keras.callbacks.CallbackList(
            callbacks, add_progbar=verbose != 0, verbose=verbose, epochs=epochs,
            steps=steps if steps >= 0 else None, model=model,
        )
        model.stop_training = False
        callback_list.on_train_begin()
        logs = epoch_logs = {}
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for step, batch in enumerate(strategy.experimental_distribute_dataset(x)):
                callback_list.on_train_batch_begin(step)
                logs = {name: float(value) for name, value in train_step(batch).items()}
                callback_list.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            epoch_logs = dict(logs)
            if validation_data is not None:
                scores = evaluate_locally(classifier, validation_data)
                epoch_logs.update({f"val_{name}": value for name, value in scores.items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break
        callback_list.on_train_end(epoch_logs)

    return fit


def evaluate_locally(model, batches, top5=False):
    """Scores a classifier on all of `batches` in this process, without collectives.

    Every worker of a multi-worker run holds the same weights and so gets the
    same scores; Keras's `evaluate` fails across workers (see `multi_worker_fit`).

    Args:
        model: A classifier (images -> logits).
        batches: A `tf.data.Dataset` of `(images, labels)` batches.
        top5: Also score top-5 accuracy.

    Returns:
        Dict with `loss` (mean cross-entropy from the logits), `accuracy`
        (top-1, the arg-max as Keras's accuracy) and, with `top5`, `top5`.
    """
    import tensorflow as tf

    @tf.function
    def sums(images, labels):
        logits = tf.cast(model(images, training=False), "float32")
        labels = tf.cast(tf.reshape(labels, [-1]), "int32")
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        top1 = tf.equal(tf.argmax(logits, axis=-1, output_type="int32"), labels)
        top_k = tf.math.in_top_k(labels, logits, k=5) if top5 else top1
        return [tf.reduce_sum(cross_entropy)] + [
            tf.reduce_sum(tf.cast(hits, "float64")) for hits in (top1, top_k)
        ]

    totals, count = [0.0, 0.0, 0.0], 0
    for images, labels in batches:
        totals = [total + float(value) for total, value in zip(totals, sums(images, labels))]
        count += int(tf.size(labels))
    scores = {"loss": totals[0] / count, "accuracy": totals[1] / count}
    if top5:
        scores["top5"] = totals[2] / count
    return scores
