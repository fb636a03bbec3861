"""RepDistiller's CIFAR ResNets and KD step in plain PyTorch: `step_time.py`'s `reference:` entries.

Written from the published definitions of RepDistiller (HobbitLong/RepDistiller,
`models/resnet.py`, `distiller_zoo/KD.py`, `train_student.py`); nothing is copied:

- `resnet8x4` / `resnet32x4`: CIFAR ResNet with basic blocks, depth 8 / 32
  (`(depth - 2) / 6` blocks per stage), channels `[32, 64, 128, 256]` (stem,
  stages 1-3; stride 2 at stages 2 and 3), 3x3 convolutions without bias, batch
  norm, a 1x1 convolution + batch norm shortcut where the shape changes, 8x8
  average pooling and a linear classifier. 1,233,540 and 7,433,860 parameters
  at 100 classes (`/work/shared/fixtures/repdistiller_models.json`).
- `DistillKL`: `KL(softmax(t / T) || softmax(s / T)) * T^2`, summed and divided by
  the batch size.
- A training step as `train_student.py` runs it for KD: teacher in eval mode
  under `torch.no_grad()`, `0.1 * CE + 0.9 * KD`, `torch.optim.SGD(momentum=0.9,
  weight_decay=5e-4)`, the loss and the batch's top-1 accuracy read on the host.
"""

import torch
import torch.nn.functional as F
from torch import nn

SPECS = {"resnet8x4": (8, (32, 64, 128, 256)), "resnet32x4": (32, (32, 64, 128, 256))}


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (projection when the shape changes)."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """CIFAR ResNet: stem, three stages of basic blocks, 8x8 average pooling, classifier."""

    def __init__(self, depth, filters, num_classes=100):
        super().__init__()
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, filters[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        layers, in_planes = [], filters[0]
        for stage in range(1, 4):
            stride = 1 if stage == 1 else 2
            stage_blocks = []
            for i in range(blocks):
                stage_blocks.append(BasicBlock(in_planes, filters[stage], stride if i == 0 else 1))
                in_planes = filters[stage]
            layers.append(nn.Sequential(*stage_blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(filters[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(name, num_classes=100):
    """`resnet8x4` or `resnet32x4` as a `CifarResNet`."""
    depth, filters = SPECS[name]
    return CifarResNet(depth, filters, num_classes)


def num_params(model):
    """Trainable parameters, as the fixture counts them."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def distill_kl(logits_s, logits_t, temperature):
    """Hinton's KD loss: `KL(p_t || p_s)` at temperature `T`, times `T^2`, per sample."""
    log_p_s = F.log_softmax(logits_s / temperature, dim=1)
    p_t = F.softmax(logits_t / temperature, dim=1)
    return F.kl_div(log_p_s, p_t, reduction="sum") * temperature**2 / logits_s.shape[0]


class ReferenceStep:
    """One plain-PyTorch training step of the student, with or without KD.

    Args:
        teacher: The teacher (`None`: the student alone, cross-entropy only).
        student: The student, trained.
        temperature, ce_weight, kd_weight: The KD loss (`0.1 * CE + 0.9 * KD`, T = 4).
    """

    def __init__(self, teacher, student, temperature=4.0, ce_weight=0.1, kd_weight=0.9):
        self.teacher, self.student = teacher, student
        self.temperature, self.ce_weight, self.kd_weight = temperature, ce_weight, kd_weight
        self.optimizer = torch.optim.SGD(
            student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4
        )
        if teacher is not None:
            teacher.eval()

    def __call__(self, images, labels):
        """Trains on one NCHW batch; returns `(loss, accuracy)` as Python floats."""
        self.student.train()
        logits_s = self.student(images)
        if self.teacher is None:
            loss = F.cross_entropy(logits_s, labels)
        else:
            with torch.no_grad():
                logits_t = self.teacher(images)
            loss = self.ce_weight * F.cross_entropy(logits_s, labels) + self.kd_weight * distill_kl(
                logits_s, logits_t, self.temperature
            )
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        accuracy = (logits_s.argmax(1) == labels).float().mean()
        return loss.item(), accuracy.item()

    def teacher_forward(self, images):
        """The teacher's logits under `torch.no_grad()`, in eval mode, read on the host."""
        with torch.no_grad():
            return self.teacher(images).numpy()
