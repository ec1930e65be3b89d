"""Images and labels for fine-tuning, with the encoder's own preprocessing plus augmentation."""

from __future__ import annotations

from ..sources.images import DecodeError, decode_image, read_bytes


def train_transform(pp, augment: bool):
    """Mild random resized crop (60-100% of the area), horizontal flip and colour jitter at the
    encoder's input size and normalisation. Pass augment=False for data that flips or crops change
    the meaning of (digits, text, medical laterality)."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T

    from ..encoders.config import build_transform

    if not augment:
        return build_transform(pp)
    interp = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[pp.interpolation]
    return T.Compose([
        T.RandomResizedCrop(pp.input_size, scale=(0.6, 1.0), interpolation=interp, antialias=True),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.2, 0.2, 0.2, 0.02),
        T.PILToTensor(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean=list(pp.mean), std=list(pp.std)),
    ])


class LabelledImages:
    """(uri, class index) pairs -> (tensor, index); a file that no longer decodes yields None."""

    def __init__(self, uris: list[str], targets: list[int], transform, exif_transpose: bool = True):
        self.uris, self.targets, self.transform, self.exif = uris, targets, transform, exif_transpose

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i: int):
        try:
            img = decode_image(read_bytes(self.uris[i]), self.exif)
        except DecodeError:
            return None
        return self.transform(img), self.targets[i]


def collate(samples):
    import torch

    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    return torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])


def make_loader(ds: LabelledImages, batch_size: int, shuffle: bool, workers: int, seed: int):
    import torch
    from torch.utils.data import DataLoader

    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate,
                      generator=g, persistent_workers=False, drop_last=False)
