import numpy as np
import tensorflow as tf

from kerasdistill import models
from kerasdistill.training import export_saved_model


def test_saved_model_gives_the_in_memory_logits(tmp_path):
    model = models.get("resnet8", num_classes=7)
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    export_saved_model(model, tmp_path / "sm", mean, std)
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    pixels = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    signature = loaded.signatures["serving_default"]
    served = list(signature(images=tf.constant(pixels)).values())[0].numpy()
    expected = model((pixels / 255.0 - np.array(mean)) / np.array(std), training=False).numpy()
    assert served.shape == (5, 7)
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
