"""Trains an ImageNet-1k teacher, a student alone, or distils a student (224 px).

    python experiments/imagenet.py --flagfile=experiments/flags/imagenet_ResNet34_ResNet18_dkd.cfg \
        --data_dir=/data/tfds --teacher_weights=resnet34-b627a593.pth

`--dataset=imagenet2012` reads tensorflow-datasets' `imagenet2012` prepared from your
own archives (`ILSVRC2012_img_train.tar` and `ILSVRC2012_img_val.tar` in
`<data_dir>/downloads/manual/`); a folder path reads the ILSVRC layout
(`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`). Teachers load from torchvision or
mdistiller `.pth` files. The run directory holds what the CIFAR script writes
(experiments/runner.py), with top-1 and top-5 in metrics.json and a SavedModel
taking 224x224 images in [0, 255]. Mistakes end with one line and exit status 2.
"""

from absl import flags

from experiments import cli, errors, run_flags

# The reference ImageNet protocol (RepDistiller / mdistiller): 100 epochs, batch 256,
# SGD 0.1 with momentum 0.9, LR / 10 at epochs 30, 60 and 90, weight decay 1e-4.
IMAGENET_DEFAULTS = {
    "teacher": "ResNet34",
    "student": "ResNet18",
    "dataset": "imagenet2012",
    "input_pipeline": "imagenet",
    "lr_schedule": "imagenet",
    "epochs": 100,
    "batch_size": 256,
    "lr": 0.1,
    "weight_decay": 1e-4,
    "output_dir": "runs/imagenet",
}

run_flags.define_flags(flags, defaults=IMAGENET_DEFAULTS)


def main():
    """The `kerasdistill-imagenet` command (`[project.scripts]` of pyproject.toml)."""
    errors.run_app(cli.main)


if __name__ == "__main__":
    main()
