"""Architectures built the way their PyTorch users build them, in plain ``torch.nn`` (torchvision from the
registry does not work with the CPU torch wheel here), with BatchNorm statistics measured on data.

- ``resnet``: torchvision's ResNet layout (stem, BasicBlocks with a projection shortcut, global pool, fc)
- ``mobilenet_v3``: torchvision's MobileNetV3 blocks (expand, depthwise, squeeze-excite with hard-sigmoid,
  hard-swish, project, residual), trained for a few seconds on sklearn's digits (64x64 RGB, 96 % held-out)
- ``mobilenet_v3_small``: torchvision's ``mobilenet_v3_small`` layout in full (the paper's table: 11 blocks,
  ReLU in the first three, squeeze-excite sized to a multiple of 8, 576 channels, a 1024-wide hard-swish
  classifier), 10 classes, trained on the digits like the others; the benchmarks' row for what its users
  export (the small ``mobilenet_v3`` above keeps the tests fast)
- ``mobilenet_v2``: torchvision's MobileNetV2 blocks (expand, depthwise, ReLU6, linear bottleneck, residual),
  trained on the digits the same way
- ``yolo``: an Ultralytics-style detector whose head concatenates boxes (pixels, 0-640) and class scores
  (sigmoid, 0-1) into [N, anchors, 4 + classes]
- ``encoder``: a BERT-style encoder as transformers builds it (int64 ids and attention mask, embeddings +
  LayerNorm, additive mask, GELU feed-forward, a classifier on the first token)

Random initialisation makes a deep net's outputs vanish; ``measure_batchnorm`` runs data through the model
in training mode with a cumulative average, so every BatchNorm holds that data's statistics. That is not
enough for MobileNetV3: random, its logits hardly vary between images (std 0.03 across images, of the order of
quantization noise: int8 weights alone measured 25 dB SQNR, every int8 engine 8-9 dB), so a test could not tell
a good int8 artifact from a broken one; trained, the same int8 engines read 13-26 dB and agree on every decision.
"""

from __future__ import annotations

import functools

import numpy as np

IMAGE = 64
TOKENS, VOCAB, CLASSES = 16, 500, 7
NAMES = ("resnet", "mobilenet_v3", "yolo", "encoder")
# the families of issue 29's table (benchmarks/families.py); NAMES is what every test converts to every target
FAMILIES = ("resnet", "mobilenet_v2", "mobilenet_v3", "yolo", "encoder")
TRAINED_ON_DIGITS = ("mobilenet_v2", "mobilenet_v3", "mobilenet_v3_small")


def images(count: int, seed: int = 0) -> np.ndarray:
    """Rendered document pages, NCHW float32 in 0-1 (what a torchvision-style model takes)."""
    import zoo

    return np.ascontiguousarray(zoo.images(count, seed).transpose(0, 3, 1, 2) / 255.0, dtype=np.float32)


def digit_images(count: int, seed: int = 0, *, train: bool = False) -> np.ndarray:
    """sklearn's 8x8 digits as a torchvision-style model takes them: NCHW float32 RGB, 64x64, in 0-1. Held-out
    digits unless ``train``; ``seed`` picks which."""
    images, _ = _digits(train)
    return images[np.random.default_rng(seed).choice(len(images), count)]


@functools.cache
def _digits(train: bool) -> tuple[np.ndarray, np.ndarray]:
    import digits

    x_train, y_train, x_test, y_test = digits.load_split()
    images, labels = (x_train, y_train) if train else (x_test, y_test)
    gray = digits._upscaled(images, IMAGE).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(np.repeat(gray, 3, axis=1), dtype=np.float32), labels


def inputs_for(name: str, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    if name in TRAINED_ON_DIGITS:
        return {"images": digit_images(count, seed)}
    if name == "encoder":
        import zoo

        batch = zoo.token_batches(count, seed)
        return {"input_ids": batch["ids"], "attention_mask": batch["mask"]}
    return {"images": images(count, seed)}


def _modules():
    import torch
    from torch import nn

    def conv_bn(cin, cout, kernel=3, stride=1, groups=1, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, act=None))
            self.shortcut = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return torch.relu(self.body(x) + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(3, 32, 3, 2), nn.MaxPool2d(3, 2, 1))
            self.layers = nn.Sequential(BasicBlock(32, 32, 1), BasicBlock(32, 64, 2), BasicBlock(64, 128, 2))
            self.fc = nn.Linear(128, 10)

        def forward(self, images):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(images)), 1), 1))

    class SqueezeExcite(nn.Module):
        def __init__(self, channels, squeeze=None):
            super().__init__()
            squeeze = squeeze or channels // 4
            self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)

        def forward(self, x):
            scale = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(scale))))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, expand, cout, kernel, stride, se):
            super().__init__()
            self.residual = stride == 1 and cin == cout
            self.block = nn.Sequential(
                conv_bn(cin, expand, 1, act=nn.Hardswish),
                conv_bn(expand, expand, kernel, stride, expand, nn.Hardswish),
                SqueezeExcite(expand) if se else nn.Identity(), conv_bn(expand, cout, 1, act=None))

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    class MobileNetV3(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                conv_bn(3, 16, 3, 2, act=nn.Hardswish), InvertedResidual(16, 16, 16, 3, 2, True),
                InvertedResidual(16, 72, 24, 3, 2, False), InvertedResidual(24, 88, 24, 3, 1, False),
                InvertedResidual(24, 96, 40, 5, 2, True), InvertedResidual(40, 240, 40, 5, 1, True),
                conv_bn(40, 240, 1, act=nn.Hardswish))
            self.classifier = nn.Sequential(nn.Linear(240, 256), nn.Hardswish(), nn.Linear(256, 10))

        def forward(self, images):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(images), 1), 1))

    def multiple_of_8(channels):  # torchvision's _make_divisible: nearest multiple, never 10 % below
        rounded = max(8, int(channels + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * channels else rounded

    class SmallBlock(nn.Module):
        """torchvision's MobileNetV3 InvertedResidual: no expansion conv when it would not widen."""

        def __init__(self, cin, kernel, expand, cout, se, act, stride):
            super().__init__()
            self.residual = stride == 1 and cin == cout
            layers = [conv_bn(cin, expand, 1, act=act)] if expand != cin else []
            layers.append(conv_bn(expand, expand, kernel, stride, expand, act))
            if se:
                layers.append(SqueezeExcite(expand, multiple_of_8(expand // 4)))
            self.block = nn.Sequential(*layers, conv_bn(expand, cout, 1, act=None))

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    class MobileNetV3Small(nn.Module):
        # (kernel, expanded, out, squeeze-excite, activation, stride): the paper's Table 2, as torchvision has it
        SETTINGS = ((3, 16, 16, True, nn.ReLU, 2), (3, 72, 24, False, nn.ReLU, 2), (3, 88, 24, False, nn.ReLU, 1),
                    (5, 96, 40, True, nn.Hardswish, 2), (5, 240, 40, True, nn.Hardswish, 1),
                    (5, 240, 40, True, nn.Hardswish, 1), (5, 120, 48, True, nn.Hardswish, 1),
                    (5, 144, 48, True, nn.Hardswish, 1), (5, 288, 96, True, nn.Hardswish, 2),
                    (5, 576, 96, True, nn.Hardswish, 1), (5, 576, 96, True, nn.Hardswish, 1))

        def __init__(self, classes=10):
            super().__init__()
            blocks, cin = [conv_bn(3, 16, 3, 2, act=nn.Hardswish)], 16
            for kernel, expand, cout, se, act, stride in self.SETTINGS:
                blocks.append(SmallBlock(cin, kernel, expand, cout, se, act, stride))
                cin = cout
            self.features = nn.Sequential(*blocks, conv_bn(cin, 576, 1, act=nn.Hardswish))
            self.classifier = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Dropout(0.2),
                                            nn.Linear(1024, classes))

        def forward(self, images):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(images), 1), 1))

    class LinearBottleneck(nn.Module):
        def __init__(self, cin, expand, cout, stride):
            super().__init__()
            self.residual = stride == 1 and cin == cout
            self.block = nn.Sequential(conv_bn(cin, expand, 1, act=nn.ReLU6),
                                       conv_bn(expand, expand, 3, stride, expand, nn.ReLU6),
                                       conv_bn(expand, cout, 1, act=None))

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                conv_bn(3, 32, 3, 2, act=nn.ReLU6), conv_bn(32, 32, 3, 1, 32, nn.ReLU6), conv_bn(32, 16, 1, act=None),
                LinearBottleneck(16, 96, 24, 2), LinearBottleneck(24, 144, 24, 1), LinearBottleneck(24, 144, 32, 2),
                LinearBottleneck(32, 192, 32, 1), LinearBottleneck(32, 192, 64, 2), LinearBottleneck(64, 384, 64, 1),
                conv_bn(64, 320, 1, act=nn.ReLU6))
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(320, 10))

        def forward(self, images):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(images), 1), 1))

    class Yolo(nn.Module):
        def __init__(self, classes=3):
            super().__init__()
            act = nn.SiLU
            self.backbone = nn.Sequential(conv_bn(3, 16, 3, 2, act=act), conv_bn(16, 32, 3, 2, act=act),
                                          conv_bn(32, 64, 3, 2, act=act), conv_bn(64, 64, 3, 1, act=act))
            self.box, self.cls = nn.Conv2d(64, 4, 1), nn.Conv2d(64, classes, 1)

        def forward(self, images):
            features = self.backbone(images)
            boxes = torch.sigmoid(self.box(features)) * 640.0  # pixels: 0-640
            scores = torch.sigmoid(self.cls(features))  # 0-1
            return torch.cat([boxes, scores], 1).flatten(2).transpose(1, 2)  # [N, anchors, 4 + classes]

    class Encoder(nn.Module):
        def __init__(self, width=64, heads=4, layers=2):
            super().__init__()
            self.heads = heads
            self.embed, self.position = nn.Embedding(VOCAB, width), nn.Embedding(TOKENS, width)
            self.norm = nn.LayerNorm(width)
            self.blocks = nn.ModuleList(nn.ModuleDict({
                "qkv": nn.Linear(width, 3 * width), "out": nn.Linear(width, width), "norm1": nn.LayerNorm(width),
                "ff": nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)),
                "norm2": nn.LayerNorm(width)}) for _ in range(layers))
            self.classifier = nn.Linear(width, CLASSES)

        def forward(self, input_ids, attention_mask):
            batch, length = input_ids.shape
            x = self.norm(self.embed(input_ids) + self.position(torch.arange(length)))
            bias = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0  # transformers' additive mask
            for block in self.blocks:
                q, k, v = block["qkv"](x).view(batch, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
                attention = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + bias, -1)
                x = block["norm1"](x + block["out"]((attention @ v).transpose(1, 2).reshape(batch, length, -1)))
                x = block["norm2"](x + block["ff"](x))
            return self.classifier(x[:, 0])

    return {"resnet": ResNet, "mobilenet_v2": MobileNetV2, "mobilenet_v3": MobileNetV3, "yolo": Yolo,
            "encoder": Encoder, "mobilenet_v3_small": MobileNetV3Small}


def measure_batchnorm(model, data: dict[str, np.ndarray]) -> None:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over what passes through
    model.train()
    with torch.no_grad():
        model(**{k: torch.from_numpy(v) for k, v in data.items()})
    model.eval()


@functools.cache
def _trained_on_digits(name: str, seed: int) -> dict:
    """Weights after 4 epochs of Adam on the digits' training split (~4 s on 2 cores), cached per process."""
    import torch

    torch.manual_seed(seed)
    model = _modules()[name]()
    images, labels = (torch.from_numpy(a) for a in _digits(train=True))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    for _ in range(4):
        for batch in torch.randperm(len(images)).split(64):
            loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def build(name: str, seed: int = 0):
    """The model in eval mode and one example input batch (a dict by forward()'s parameter names)."""
    import torch

    torch.manual_seed(seed)
    model = _modules()[name]()
    if name in TRAINED_ON_DIGITS:
        model.load_state_dict(_trained_on_digits(name, seed))
        measure_batchnorm(model, {"images": digit_images(256, seed + 1, train=True)})
    else:
        measure_batchnorm(model, inputs_for(name, 32, seed=seed + 1))
    example = {k: torch.from_numpy(v) for k, v in inputs_for(name, 1, seed=seed + 2).items()}
    return model, example


def predict(model, data: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in data.items()}).numpy()
