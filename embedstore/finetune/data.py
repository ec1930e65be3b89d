"""Images (with the encoder's own preprocessing plus augmentation) or texts (tokenised by the
encoder's own tokenizer) and labels for fine-tuning."""

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


class Augmented:
    """Image file bytes -> a training tensor: PIL decodes, then the recipe's random transforms."""

    def __init__(self, transform, exif_transpose: bool = True):
        self.transform, self.exif = transform, exif_transpose

    def __call__(self, data: bytes):
        return self.transform(decode_image(data, self.exif))


class LabelledImages:
    """(uri, class index) pairs -> (tensor, index); a file that no longer decodes yields None.
    `load` turns a file's bytes into the tensor: `Augmented` for training, the embedding service's
    `pixels()` for validation and test (the decode and preprocessing its vectors are made with)."""

    def __init__(self, uris: list[str], targets: list[int], load):
        self.uris, self.targets, self.load = uris, targets, load

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i: int):
        try:
            return self.load(read_bytes(self.uris[i])), self.targets[i]
        except DecodeError:
            return None


def collate(samples):
    import torch

    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    return torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples])


def make_loader(ds, batch_size: int, shuffle: bool, workers: int, seed: int, collate_fn=None):
    import torch
    from torch.utils.data import DataLoader

    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=workers, collate_fn=collate_fn or collate,
                      generator=g, persistent_workers=False, drop_last=False)


def source_texts(uris) -> dict[str, str]:
    """uri -> text for a text store's items, read again from their source files (`file#L12`): for
    stores that do not keep their texts in the items table."""
    from ..errors import FinetuneError
    from ..sources import open_source

    files = sorted({str(u).rsplit("#", 1)[0] for u in uris})
    out: dict[str, str] = {}
    for f in files:
        try:
            src = open_source(f)
        except Exception as e:  # noqa: BLE001 - a moved or changed source is one user error
            raise FinetuneError(f"the store's texts come from {f}, which cannot be read again ({e}); fine-tuning a text "
                                "store needs its source file where the build found it") from None
        out.update({it.uri: it.text for it in src.items if it.text is not None})
    return out


class LabelledTexts:
    """(text, class index) pairs; batches are tokenised by `collate_texts`."""

    def __init__(self, texts: list[str], targets: list[int]):
        self.texts, self.targets = texts, targets

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int):
        return self.texts[i], self.targets[i]


class TokenBatch(dict):
    """A tokenised batch (input_ids, attention_mask ...) that moves to a device like a tensor."""

    def to(self, device, non_blocking: bool = False) -> "TokenBatch":
        return TokenBatch({k: (v.to(device, non_blocking=non_blocking) if hasattr(v, "to") else v) for k, v in self.items()})


def collate_texts(tokenize):
    """A collate function: [(text, y)] -> (TokenBatch, y tensor), tokenised with the encoder's tokenizer."""

    def collate_fn(samples):
        import torch

        texts, ys = zip(*samples)
        return TokenBatch(tokenize(list(texts))), torch.tensor(ys)

    return collate_fn
