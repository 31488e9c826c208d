"""The Wav2Lip generator (Prajwal et al., 2020), written so the official checkpoints load as-is.

A U-Net: a face encoder takes the 6x96x96 face (lower half masked, then the unmasked reference,
BGR in [0, 1]) down to 512x1x1, an audio encoder takes the 1x80x16 mel window to 512x1x1, and a
decoder grows the audio embedding back to 96x96, concatenating the face features of the same
scale at each step. Parameter names and shapes match the official `wav2lip.pth` /
`wav2lip_gan.pth` (352 tensors, 36.3 M parameters) once their `module.` prefix is removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class ConvBlock(nn.Module):
    """conv + batch norm (+ the input, if residual) + ReLU; `conv_block` holds the weights."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int | tuple[int, int],
                 padding: int, residual: bool = False, transpose: bool = False,
                 output_padding: int = 0) -> None:
        super().__init__()
        conv: nn.Module
        if transpose:
            conv = nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding)
        else:
            conv = nn.Conv2d(cin, cout, kernel, stride, padding)
        self.conv_block = nn.Sequential(conv, nn.BatchNorm2d(cout))
        self.residual = residual
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


def _res(channels: int) -> ConvBlock:
    return ConvBlock(channels, channels, 3, 1, 1, residual=True)


def _up(cin: int, cout: int, stride: int = 2) -> ConvBlock:
    if stride == 1:
        return ConvBlock(cin, cout, 3, 1, 0, transpose=True)
    return ConvBlock(cin, cout, 3, 2, 1, transpose=True, output_padding=1)


class Wav2Lip(nn.Module):
    """forward(mel (B,1,80,16), face (B,6,96,96)) -> (B,3,96,96) BGR in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(6, 16, 7, 1, 3)),  # 96
            nn.Sequential(ConvBlock(16, 32, 3, 2, 1), _res(32), _res(32)),  # 48
            nn.Sequential(ConvBlock(32, 64, 3, 2, 1), _res(64), _res(64), _res(64)),  # 24
            nn.Sequential(ConvBlock(64, 128, 3, 2, 1), _res(128), _res(128)),  # 12
            nn.Sequential(ConvBlock(128, 256, 3, 2, 1), _res(256), _res(256)),  # 6
            nn.Sequential(ConvBlock(256, 512, 3, 2, 1), _res(512)),  # 3
            nn.Sequential(ConvBlock(512, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0)),  # 1
        ])
        self.audio_encoder = nn.Sequential(
            ConvBlock(1, 32, 3, 1, 1), _res(32), _res(32),  # 80x16
            ConvBlock(32, 64, 3, (3, 1), 1), _res(64), _res(64),  # 27x16
            ConvBlock(64, 128, 3, 3, 1), _res(128), _res(128),  # 9x6
            ConvBlock(128, 256, 3, (3, 2), 1), _res(256),  # 3x3
            ConvBlock(256, 512, 3, 1, 0), ConvBlock(512, 512, 1, 1, 0),  # 1x1
        )
        self.face_decoder_blocks = nn.ModuleList([
            nn.Sequential(ConvBlock(512, 512, 1, 1, 0)),  # 1
            nn.Sequential(_up(1024, 512, stride=1), _res(512)),  # 3
            nn.Sequential(_up(1024, 512), _res(512), _res(512)),  # 6
            nn.Sequential(_up(768, 384), _res(384), _res(384)),  # 12
            nn.Sequential(_up(512, 256), _res(256), _res(256)),  # 24
            nn.Sequential(_up(320, 128), _res(128), _res(128)),  # 48
            nn.Sequential(_up(160, 64), _res(64), _res(64)),  # 96
        ])
        self.output_block = nn.Sequential(ConvBlock(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0),
                                          nn.Sigmoid())

    def forward(self, mel: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        return self.decode(mel, self.encode_face(face))

    def encode_face(self, face: torch.Tensor) -> list[torch.Tensor]:
        """The face encoder's features at every scale (96 down to 1), the decoder's skips.

        A still portrait gives the same features for every frame: compute them once, with
        batch 1, and let `decode` broadcast them over the audio batch.
        """
        skips = []
        x = face
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        return skips

    def decode(self, mel: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.audio_encoder(mel)
        for block, skip in zip(self.face_decoder_blocks, reversed(skips), strict=True):
            x = block(x)
            if skip.shape[0] != x.shape[0]:
                skip = skip.expand(x.shape[0], -1, -1, -1)
            x = torch.cat((x, skip), dim=1)
        return self.output_block(x)


def strip_prefix(state: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """The official checkpoints were saved from nn.DataParallel: drop its `module.` prefix."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def fuse_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the conv before it (same outputs, ~25% less work)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in model.modules():
        if isinstance(module, ConvBlock):
            conv, bn = module.conv_block[0], module.conv_block[1]
            fused = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
            module.conv_block = nn.Sequential(fused)
    return model
