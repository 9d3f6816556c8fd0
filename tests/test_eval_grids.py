"""Grids (Figs. 3-4): rows of tiles, large renders shrunk to fit."""

from PIL import Image

from cocoins.eval.grids import image_grid


def test_grid_layout_and_tile_size():
    small = [[Image.new("RGB", (32, 32), (255, 0, 0))] * 3, [Image.new("RGB", (32, 32), (0, 0, 255))] * 2]
    grid = image_grid(small, pad=2)
    assert grid.size == (3 * 34 + 2, 2 * 34 + 2)
    assert grid.getpixel((2, 2)) == (255, 0, 0) and grid.getpixel((2, 36)) == (0, 0, 255)
    assert grid.getpixel((2 + 2 * 34, 36)) == (255, 255, 255)      # row 2 has two images: the third is blank


def test_large_renders_become_256_px_tiles():
    big = [[Image.new("RGB", (1024, 1024), (0, 255, 0))] * 8] * 4
    grid = image_grid(big, pad=2)
    assert grid.size == (8 * 258 + 2, 4 * 258 + 2)
    assert grid.getpixel((100, 100)) == (0, 255, 0)
