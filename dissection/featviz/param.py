"""Images as Fourier coefficients with decorrelated colour (Lucid's `fft_image` and `to_valid_rgb`).

A gradient step on pixels favours high frequencies, so pixel-space optimization turns into noise. Spectrum
coefficients scaled by 1/frequency make a step change every frequency band about equally, as natural images
do. Colour is whitened the same way: the three parameter channels are uncorrelated over natural images, and
the square root of ImageNet's colour covariance maps them to RGB before a sigmoid bounds the image to (0, 1).
"""

from __future__ import annotations

import torch

COLOR_CORRELATION_SQRT = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)
"""U·√S of the SVD of ImageNet's 3 x 3 RGB covariance (Lucid's `color_correlation_svd_sqrt`)."""

SPATIAL_SCALE = 4.0
"""Lucid divides the inverse FFT by 4, which keeps the initial image near grey under the sigmoid."""


def colour_matrix(dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> torch.Tensor:
    """Decorrelated → RGB, columns scaled so that the largest has unit norm (as Lucid)."""
    sqrt = torch.tensor(COLOR_CORRELATION_SQRT, dtype=torch.float64)
    return (sqrt / sqrt.norm(dim=0).max()).to(dtype=dtype, device=device)


def frequency_scale(
    height: int,
    width: int,
    decay_power: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> torch.Tensor:
    """1/|f|^decay_power per coefficient of an rfft2 spectrum (height x width//2+1), |f| at least
    1/max(height, width) so that the DC term stays finite."""
    fy = torch.fft.fftfreq(height, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :]
    frequencies = (fy**2 + fx**2).sqrt().clamp(min=1.0 / max(height, width))
    return (1.0 / frequencies**decay_power).to(dtype=dtype, device=device)


def spectrum_shape(batch: int, height: int, width: int) -> tuple[int, int, int, int, int]:
    """Parameters of `batch` images: real and imaginary parts (last axis) of each channel's rfft2."""
    return (batch, 3, height, width // 2 + 1, 2)


def random_spectrum(
    batch: int, height: int, width: int, generator: torch.Generator, sd: float = 0.01
) -> torch.Tensor:
    """Lucid's initialisation: small normal coefficients, an image close to uniform grey."""
    return torch.randn(spectrum_shape(batch, height, width), generator=generator) * sd


def spectrum_to_image(
    spectrum: torch.Tensor, height: int, width: int, decay_power: float = 1.0
) -> torch.Tensor:
    """B x 3 x height x width RGB in (0, 1) from parameters of `spectrum_shape`.

    The orthonormal inverse FFT is Lucid's `irfft2d` times sqrt(height·width), so learning rates carry over.
    """
    scale = frequency_scale(height, width, decay_power, spectrum.dtype, spectrum.device)
    coefficients = torch.view_as_complex(spectrum.contiguous()) * scale
    decorrelated = torch.fft.irfft2(coefficients, s=(height, width), norm="ortho") / SPATIAL_SCALE
    colours = colour_matrix(spectrum.dtype, spectrum.device)
    return torch.sigmoid(torch.einsum("ij,bjhw->bihw", colours, decorrelated))


def image_to_spectrum(image: torch.Tensor, decay_power: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """The parameters whose `spectrum_to_image` is `image` (B x 3 x H x W in (0, 1), clamped to
    [eps, 1 - eps]): to start from a picture, and to test the parametrization."""
    height, width = image.shape[-2:]
    logits = torch.logit(image.clamp(eps, 1 - eps))
    inverse = torch.linalg.inv(colour_matrix(torch.float64)).to(image.dtype).to(image.device)
    decorrelated = torch.einsum("ij,bjhw->bihw", inverse, logits) * SPATIAL_SCALE
    scale = frequency_scale(height, width, decay_power, image.dtype, image.device)
    return torch.view_as_real(torch.fft.rfft2(decorrelated, norm="ortho") / scale).contiguous()
