"""Fig. 8 interpolation and Fig. 9 neighbour ordering on hand-made vectors."""

import math

import pytest
import torch
from PIL import Image

from cocoins.method.latent_space import (cosine_similarities, image_strip, interpolate_codes, lerp,
                                         neighbor_order, slerp)

A = torch.randn(256, generator=torch.Generator().manual_seed(0))
B = torch.randn(256, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("mode", ["slerp", "lerp"])
def test_endpoints_equal_the_two_codes_exactly(mode):
    codes, ts = interpolate_codes(A, B, 5, mode)
    assert ts == [0.0, 0.25, 0.5, 0.75, 1.0] and codes.shape == (5, 256)
    assert torch.equal(codes[0], A) and torch.equal(codes[-1], B)


def test_slerp_by_hand_on_orthogonal_unit_vectors():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(slerp(a, b, 0.5), torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    torch.testing.assert_close(slerp(a, b, 1 / 3), torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))
    torch.testing.assert_close(lerp(a, b, 0.5), torch.tensor([0.5, 0.5]))


def test_slerp_stays_on_the_shell_where_lerp_cuts_inside():
    codes, _ = interpolate_codes(A, B, 9, "slerp")
    norms = codes.norm(dim=1)
    lo, hi = sorted([A.norm().item(), B.norm().item()])
    assert (norms >= lo - 1e-4).all() and (norms <= hi + 1e-4).all()
    mid = interpolate_codes(A, B, 3, "lerp")[0][1].norm().item()
    assert mid < 0.8 * lo                      # the lerp midpoint of independent codes: about |z| / sqrt(2)


def test_slerp_of_parallel_codes_falls_back_to_lerp():
    torch.testing.assert_close(slerp(A, 2 * A, 0.5), 1.5 * A)


def test_bad_interpolations():
    with pytest.raises(ValueError, match="at least 2 frames"):
        interpolate_codes(A, B, 1)
    with pytest.raises(ValueError, match="slerp or lerp"):
        interpolate_codes(A, B, 3, "cubic")
    with pytest.raises(ValueError, match="differ in shape"):
        interpolate_codes(A, B[:10], 3)


def test_neighbors_are_ordered_by_descending_cosine_with_the_query_first():
    words = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [3.0, 0.1]])
    order, sims = neighbor_order(words, query=0)
    # cosines to [1, 0]: 0, 0.707, -1, 0.9994 (word 4 is long but nearly parallel: cosine ignores length)
    assert order == [0, 4, 2, 1, 3]
    torch.testing.assert_close(sims, torch.tensor([1.0, 0.0, math.sqrt(0.5), -1.0, 3 / math.sqrt(9.01)],
                                                  dtype=torch.float64))
    assert [sims[i].item() for i in order[1:]] == sorted((sims[i].item() for i in order[1:]), reverse=True)
    assert neighbor_order(words, query=3)[0] == [3, 1, 2, 4, 0]   # cosines to [-1, 0]: -1, 0, -0.71, 1, -0.9994
    with pytest.raises(ValueError, match="outside the 5 sampled codes"):
        neighbor_order(words, query=5)


def test_cosine_ties_keep_index_order():
    words = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, -1.0]])
    assert neighbor_order(words, 0)[0] == [0, 1, 2, 3]
    assert cosine_similarities(words[1], words)[2].item() == pytest.approx(1.0)


def test_image_strip_places_images_left_to_right():
    red, blue = Image.new("RGB", (4, 3), (255, 0, 0)), Image.new("RGB", (2, 3), (0, 0, 255))
    strip = image_strip([red, blue], gap=1)
    assert strip.size == (7, 3)
    assert strip.getpixel((0, 0)) == (255, 0, 0) and strip.getpixel((4, 1)) == (255, 255, 255)
    assert strip.getpixel((5, 2)) == (0, 0, 255)
