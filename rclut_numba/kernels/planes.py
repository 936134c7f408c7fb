"""Padding and copies: an image's channels into the first stage's edge-padded input maps."""

from .options import serial_jit


@serial_jit
def pad_planes(image, maps, pad):
    """maps[c, 0] = edge-padded channel c of ``image``.

    image: (H, W, C) uint8, any strides; maps: (C, M, H + 2*pad, W + 2*pad) uint8
    """
    height, width, n_planes = image.shape
    for row in range(n_planes * (height + 2 * pad)):
        c = row // (height + 2 * pad)
        yy = row - c * (height + 2 * pad)
        y = min(max(yy - pad, 0), height - 1)
        dst = maps[c, 0, yy]
        for x in range(width):
            dst[pad + x] = image[y, x, c]
        for x in range(pad):
            dst[x] = image[y, 0, c]
            dst[pad + width + x] = image[y, width - 1, c]
