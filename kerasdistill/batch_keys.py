"""Keys of a batch's input dict, shared by the input pipelines and the Distiller.

A batch is `(x, y)` with `x` either the images or a dict holding them under
`IMAGE_KEY` and, for methods that need dataset indices (CRD's memory bank), the
indices under `INDEX_KEY`. This module depends on nothing, so the input layer
(`kerasdistill.data`) and the training layer (`kerasdistill.distiller`) both
import it without importing each other.
"""

IMAGE_KEY = "image"
INDEX_KEY = "index"
